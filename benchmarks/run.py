"""Benchmarks: the local Batch service and the azbatch executor on it, printed as a table.

Run with `make bench` (or `python benchmarks/run.py [--quick]`). Everything runs on loopback against a private
local service under a temporary root. Times are wall-clock on this machine; counts come from the service's metrics.
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.core.credentials import AzureNamedKeyCredential

from snakemake_executor_plugin_azbatch.local.config import PoolSpec, ServiceConfig
from snakemake_executor_plugin_azbatch.local.service import LocalService

Row = tuple[str, str, str]


def metrics(service: LocalService) -> dict:
    with urllib.request.urlopen(service.metrics_url, timeout=10) as response:
        return json.load(response)


def op_count(snapshot: dict, section: str, name: str, field: str = "count") -> int:
    return int(snapshot.get(section, {}).get(name, {}).get(field, 0))


def section_total(snapshot: dict, section: str, field: str = "count") -> int:
    return sum(int(op.get(field, 0)) for op in snapshot.get(section, {}).values())


def batch_client(service: LocalService) -> BatchClient:
    cfg = service.config
    return BatchClient(service.account_url, AzureNamedKeyCredential(cfg.account_name, cfg.account_key))


def bench_service_tasks(service: LocalService, n_tasks: int) -> list[Row]:
    """Submit n trivial tasks in collections of 100, wait until all completed, then time paged listing."""
    client = batch_client(service)
    pool = service.config.pools[0].id
    job_id = f"bench-{int(time.time())}"
    client.create_job(batch_models.BatchJobCreateOptions(id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id=pool)))
    tasks = [batch_models.BatchTaskCreateOptions(id=f"t{i:05d}", command_line="/bin/true") for i in range(n_tasks)]
    before = metrics(service)
    start = time.perf_counter()
    for i in range(0, n_tasks, 100):
        client.create_task_collection(job_id, batch_models.BatchTaskGroup(task_values=tasks[i : i + 100]))
    submitted = time.perf_counter() - start
    while True:
        counts = client.get_job_task_counts(job_id).task_counts
        if counts.completed == n_tasks:
            break
        time.sleep(0.2)
    finished = time.perf_counter() - start
    after = metrics(service)
    list_start = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        listed = sum(1 for _ in client.list_tasks(job_id, filter="state eq 'completed'", select=["id", "state"]))
    list_time = (time.perf_counter() - list_start) / rounds
    client.begin_delete_job(job_id).result()
    client.close()
    return [
        (f"service: submit {n_tasks} tasks (addtaskcollection)", f"{submitted:.2f}", "s"),
        ("service: addtaskcollection requests", str(op_count(after, "operations", "Tasks_CreateTaskCollection")
                                                 - op_count(before, "operations", "Tasks_CreateTaskCollection")), "requests"),
        (f"service: {n_tasks} tasks run to completion", f"{finished:.2f}", "s"),
        ("service: task throughput", f"{n_tasks / finished:.0f}", "tasks/s"),
        (f"service: list {listed} completed tasks ($filter/$select, paged)", f"{list_time * 1000:.0f}", "ms"),
    ]


SNAKEFILE = """
N = {n}
rule all:
    input: expand("out/{{i}}.txt", i=range(N))
rule make:
    input: "data/{{i}}.in"
    output: "out/{{i}}.txt"
    shell: "wc -c < {{input}} > {{output}}"
"""


def run_snakemake(service: LocalService, workdir: Path, container: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, **service.env(), "SNAKEMAKE_AZBATCH_STORAGE_CONTAINER": container,
           "SNAKEMAKE_AZBATCH_STATUS_INTERVAL": "0.5"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--executor", "azbatch", "--jobs", "100", "--latency-wait", "2"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )
    return time.perf_counter() - start, result


def bench_executor(service: LocalService, work: Path, n_jobs: int, input_kib: int) -> list[Row]:
    """A fan-out workflow of n jobs, each with its own input; then an unchanged re-run with nothing to do."""
    workdir = work / "workflow"
    (workdir / "data").mkdir(parents=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(n=n_jobs)))
    for i in range(n_jobs):
        (workdir / "data" / f"{i}.in").write_bytes(os.urandom(input_kib * 1024))
    before = metrics(service)
    elapsed, result = run_snakemake(service, workdir, "bench")
    if result.returncode != 0:
        sys.exit(f"benchmark workflow failed:\n{result.stderr[-4000:]}")
    after = metrics(service)
    rerun_elapsed, rerun = run_snakemake(service, workdir, "bench")
    after_rerun = metrics(service)

    def delta(a: dict, b: dict, section: str, field: str = "count") -> int:
        return section_total(b, section, field) - section_total(a, section, field)

    uploaded = sum(op_count(after, "storage", op, "requestBytes") - op_count(before, "storage", op, "requestBytes")
                   for op in ("PutBlob", "PutBlock"))
    return [
        (f"executor: {n_jobs} jobs ({input_kib} KiB input each), first run", f"{elapsed:.1f}", "s"),
        ("executor: Batch API requests, first run", str(delta(before, after, "operations")), "requests"),
        ("executor: storage requests, first run", str(delta(before, after, "storage")), "requests"),
        ("executor: bytes uploaded, first run", str(uploaded), "bytes"),
        ("executor: unchanged re-run", f"{rerun_elapsed:.1f}", "s"),
        ("executor: Batch API requests, unchanged re-run", str(delta(after, after_rerun, "operations")), "requests"),
        ("executor: storage requests, unchanged re-run", str(delta(after, after_rerun, "storage")), "requests"),
    ]


def print_table(rows: list[Row]) -> None:
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"{'benchmark':<{width}}  {'value':>{value_width}}  unit")
    print(f"{'-' * width}  {'-' * value_width}  ----")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    n_tasks, n_jobs = (200, 10) if args.quick else (1000, 60)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="azbatch-bench-") as tmp:
        cores = os.cpu_count() or 1
        config = ServiceConfig(root=Path(tmp) / "service", pools=[PoolSpec("local", 2, max(2, cores * 4))])
        with LocalService(config) as service:
            rows += bench_service_tasks(service, n_tasks)
            rows += bench_executor(service, Path(tmp), n_jobs, input_kib=64)
    print_table(rows)


if __name__ == "__main__":
    main()
