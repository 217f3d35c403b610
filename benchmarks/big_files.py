"""One big file through every transfer of a run: throughput and peak memory (issue 11, point 3).

The file (default 4 GiB) is sparse, so it costs no disk until Azurite stores it. Four transfers, each measured
alone:

1. plugin upload: the plugin's staging hashes the file and uploads it (a worker process, so its peak RSS is the
   plugin code's alone; `os.wait4` reports it);
2. node download: a Batch task with the blob as its resource file (the local node's transfer code, inside the
   service process, whose RSS is sampled);
3. node upload: a Batch task writes a file of the same size (sparse, instantly) and uploads it as an output file;
4. plugin download: the plugin's staging downloads that blob (temporary name, size check, hash, rename).

Everything is deleted afterwards (the Batch job, the downloaded file; the blobs go with the service's root).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from azure.batch import models as batch_models

from measure import run_measured
from service_process import ServiceProcess

CONTAINER = "bench-big"
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------ worker (plugin side)

def _staging() -> Any:
    """The plugin's staging, configured from the environment as the plugin configures it for a run."""
    from snakemake_executor_plugin_azbatch.config import resolve
    from snakemake_executor_plugin_azbatch.staging import Staging

    # One run token for every worker process: the same run container (outputs) in each phase.
    stage = Staging(resolve(None), lambda: None, Path(os.environ["BENCH_RECORD_DIR"]), logging.getLogger("bench"),
                    run_token="bench-big")
    stage.preflight()
    return stage


def _worker(phase: str, args: list[str]) -> dict[str, Any]:
    from snakemake_executor_plugin_azbatch.staging.node_helper import digest_token, verify
    from snakemake_executor_plugin_azbatch.staging.record import FileState, sha256_file

    stage = _staging()
    result: dict[str, Any] = {}
    if phase == "upload":
        path = os.path.abspath(args[0])
        start = time.perf_counter()
        digest = sha256_file(path)
        hashed = time.perf_counter()
        stage.record.remember_hash(path, FileState.of(path), digest)  # so staging does not hash it again
        stage.create_run_container()
        blob = stage.stage_files([path])[path]
        uploaded = time.perf_counter()
        verify(stage.layout.cas_prefix, [f"{path}={digest_token(digest)}"])  # what a task's node does before its command
        result = {"hash_s": hashed - start, "upload_s": uploaded - hashed, "check_s": time.perf_counter() - uploaded,
                  "read_url": stage.read_url(blob), "output_url": stage.output_container_url()}
    elif phase == "download":
        start = time.perf_counter()
        paths = stage.downloads.download_prefix(args[0], args[1])
        result = {"download_s": time.perf_counter() - start, "paths": paths}
    stage.close()
    return result


# ------------------------------------------------------------------------------------------ benchmark (parent)

class RssSampler:
    """Peak RSS of one process (the local service: its nodes' transfers run on its threads), sampled."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run_worker(service: ServiceProcess, work: Path, phase: str, *args: str) -> tuple[dict[str, Any], float]:
    env = {**os.environ, **service.env, "SNAKEMAKE_AZBATCH_STORAGE_CONTAINER": CONTAINER,
           "BENCH_RECORD_DIR": str(work / "record")}
    out = work / f"worker-{phase}.json"
    env["BENCH_WORKER_OUT"] = str(out)
    run = run_measured([sys.executable, __file__, "worker", phase, *args], work, env, work / f"worker-{phase}.log",
                       timeout_s=3600)
    if run.returncode != 0:
        sys.exit(f"benchmarks: big-file {phase} failed; log {run.log}:\n{run.tail()}")
    return json.loads(out.read_text()), run.peak_rss_mib


def _run_task(service: ServiceProcess, job_id: str, body: dict[str, Any]) -> tuple[float, float]:
    """Run one task; (seconds from add to completed, peak RSS of the service process in MiB)."""
    client = service.batch_client()
    assert service.process is not None
    with RssSampler(service.process.pid) as rss:
        start = time.perf_counter()
        client.create_task(job_id, batch_models.BatchTaskCreateOptions(body))
        while (task := client.get_task(job_id, body["id"])).state != "completed":
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
    if task.execution_info.exit_code != 0 or task.execution_info.failure_info:
        sys.exit(f"benchmarks: big-file task {body['id']} failed: {task.execution_info.as_dict()}")
    return elapsed, rss.peak / MIB


def bench_big_file(service: ServiceProcess, work: Path, size: int) -> tuple[list[tuple[str, str, str]], dict]:
    work.mkdir(parents=True, exist_ok=True)
    big = work / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(size)  # sparse: zeros that take no disk
    gib = f"{size / 1024**3:g} GiB"
    try:
        baseline_rss = _run_worker(service, work, "baseline")[1]
        up, up_rss = _run_worker(service, work, "upload", str(big))
        big.unlink()
        client = service.batch_client()
        job_id = f"bench-big-{uuid.uuid4().hex[:6]}"
        client.create_job(batch_models.BatchJobCreateOptions(
            id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id=service.pool_id)))
        service_base = psutil.Process(service.process.pid).memory_info().rss / MIB if service.process else 0.0
        down_s, down_rss = _run_task(service, job_id, {
            "id": "download", "commandLine": "/bin/true",
            "resourceFiles": [{"httpUrl": up["read_url"], "filePath": "big.bin"}],
        })
        client.delete_task(job_id, "download")
        out_s, out_rss = _run_task(service, job_id, {
            "id": "upload", "commandLine": f"/bin/sh -c 'truncate -s {size} made.bin'",
            "outputFiles": [{
                "filePattern": "made.bin",
                "destination": {"container": {"containerUrl": up["output_url"], "path": "bench/made.bin"}},
                "uploadOptions": {"uploadCondition": "tasksuccess"},
            }],
        })
        client.begin_delete_job(job_id).result()
        down, down_plugin_rss = _run_worker(service, work, "download", "bench/", str(work / "back"))
        for path in down["paths"]:
            os.unlink(path)
    finally:
        big.unlink(missing_ok=True)

    def rate(seconds: float) -> str:
        return f"{size / MIB / seconds:.0f}"

    rows = [
        (f"big file: plugin hashes the {gib} input (sha256)", rate(up["hash_s"]), "MiB/s"),
        ("big file: plugin uploads it (parallel blocks)", rate(up["upload_s"]), "MiB/s"),
        ("big file: node downloads it as a resource file", rate(down_s), "MiB/s"),
        ("big file: node checks it against its sha256 (node_helper verify)", rate(up["check_s"]), "MiB/s"),
        (f"big file: node uploads a {gib} output file", rate(out_s), "MiB/s"),
        ("big file: plugin downloads it (+ size check, sha256, rename)", rate(down["download_s"]), "MiB/s"),
        ("big file: plugin peak RSS, staging only (no transfer)", f"{baseline_rss:.0f}", "MiB"),
        ("big file: plugin peak RSS while uploading", f"{up_rss:.0f}", "MiB"),
        ("big file: plugin peak RSS while downloading", f"{down_plugin_rss:.0f}", "MiB"),
        ("big file: service process RSS before the node transfers", f"{service_base:.0f}", "MiB"),
        ("big file: service process peak RSS, node download / upload", f"{down_rss:.0f} / {out_rss:.0f}", "MiB"),
    ]
    figures = {
        "bytes": size,
        "plugin_hash_s": up["hash_s"], "plugin_upload_s": up["upload_s"], "node_download_s": down_s, "node_check_s": up["check_s"],
        "node_upload_s": out_s, "plugin_download_s": down["download_s"],
        "plugin_peak_rss_mib": {"baseline": baseline_rss, "upload": up_rss, "download": down_plugin_rss},
        "service_rss_mib": {"before": service_base, "node_download_peak": down_rss, "node_upload_peak": out_rss},
    }
    return rows, figures


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    outcome = _worker(sys.argv[2], sys.argv[3:])
    Path(os.environ["BENCH_WORKER_OUT"]).write_text(json.dumps(outcome))
