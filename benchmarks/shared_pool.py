"""The "shared pool" section: two people's runs at once on one pool and one staging container.

Both runs work in the same directory (the second with `--nolock`, as a colleague's run of the same checkout would
look to the plugin: same host, same path) on the same inputs, so they share content-addressed blobs, the pool's
slots and the workflow key; each asks for its own targets. The section reports whether both completed with exact
outputs and whether either run's Batch job was ended by the other, and times the node-side input check (sha256 of
every input before the command runs) on files of the sizes tasks read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import workloads
from measure import Measured
from service_process import ServiceProcess

SNAKEFILE = """
N = {n}
rule all_a:
    input: expand("out/a/{{i}}.txt", i=range(N))
rule all_b:
    input: expand("out/b/{{i}}.txt", i=range(N))
rule digest_a:
    input: "data/{{i}}.in"
    output: "out/a/{{i}}.txt"
    shell: "sleep 1; sha256sum < {{input}} | cut -c1-64 > {{output}}"
rule digest_b:
    input: "data/{{i}}.in"
    output: "out/b/{{i}}.txt"
    shell: "sleep 1; wc -c < {{input}} > {{output}}"
"""
POOL = "local:2:4"
# What tasks read: many small inputs, and one large one.
CHECK_SIZES = ((64 * 1024, 200), (256 * 1024**2, 1))

Row = tuple[str, str, str]


def _expected(workdir: Path, n: int) -> dict[str, str]:
    expected = {}
    for i in range(n):
        data = (workdir / "data" / f"{i}.in").read_bytes()
        expected[f"out/a/{i}.txt"] = hashlib.sha256(data).hexdigest() + "\n"
        expected[f"out/b/{i}.txt"] = f"{len(data)}\n"
    return expected


def _wrong_outputs(workdir: Path, expected: dict[str, str]) -> list[str]:
    wrong = []
    for rel, text in expected.items():
        path = workdir / rel
        if not path.exists() or path.read_text().strip() != text.strip():
            wrong.append(rel)
    return wrong


def _in_thread(target, *args) -> tuple[threading.Thread, list[Measured]]:
    result: list[Measured] = []
    thread = threading.Thread(target=lambda: result.append(target(*args)), daemon=True)
    thread.start()
    return thread, result


def node_check_cost() -> list[Row]:
    """Seconds the node-side check spends per input, on files of the sizes tasks read (this machine's disk and
    CPU, page cache warm as on a node that has just downloaded the file)."""
    from snakemake_executor_plugin_azbatch.staging.node_helper import digest_token, verify

    rows = []
    with tempfile.TemporaryDirectory(prefix="azbatch-check-") as tmp:
        for size, count in CHECK_SIZES:
            pairs = []
            for i in range(count):
                path = Path(tmp) / f"{size}-{i}"
                data = os.urandom(size)
                path.write_bytes(data)
                pairs.append(f"{path}={digest_token(hashlib.sha256(data).hexdigest())}")
            start = time.perf_counter()
            verify("cas/sha256/", pairs)  # what a task runs before its command (exits on a mismatch)
            elapsed = time.perf_counter() - start
            label = f"{size // 1024} KiB" if size < 1024**2 else f"{size // 1024**2} MiB"
            rows.append((f"shared pool: node-side input check, {count} x {label}",
                         f"{elapsed / count * 1000:.2f}", "ms per input"))
            rows.append((f"shared pool: node-side input check throughput ({label} files)",
                         f"{count * size / elapsed / 1024**2:.0f}", "MiB/s"))
    return rows


def bench_shared_pool(work: Path, n: int) -> tuple[list[Row], dict[str, Any]]:
    workdir = work / "workflow"
    (workdir / "data").mkdir(parents=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(n=n)))
    for i in range(n):
        (workdir / "data" / f"{i}.in").write_bytes(os.urandom(64 * 1024))
    expected = _expected(workdir, n)
    with ServiceProcess(work / "service", [POOL]) as service:
        env = workloads.plugin_env(service.env, "shared", 2.0)
        first, first_result = _in_thread(
            workloads.snakemake, workdir, "azbatch", n, env, work / "first.log", 1800, ["all_a"])
        # The second run starts once the first has its Batch job, so its earlier-run check meets a live run.
        client = service.batch_client()
        deadline = time.monotonic() + 120
        while not any(True for _ in client.list_jobs(select=["id"])) and time.monotonic() < deadline:
            time.sleep(0.5)
        second, second_result = _in_thread(
            workloads.snakemake, workdir, "azbatch", n, env, work / "second.log", 1800, ["--nolock", "all_b"])
        first.join()
        second.join()
    runs = {"first": first_result[0], "second": second_result[0]}
    for name, run in runs.items():
        workloads.require_success(run, f"the {name} of two concurrent runs on one pool")
    logs = {name: Path(run.log).read_text(errors="replace") for name, run in runs.items()}
    ended = sum(text.count("Task Was Ended by User Request") + text.count("ended by run") for text in logs.values())
    named_live = logs["second"].count("belongs to a live run of this workflow")
    wrong = _wrong_outputs(workdir, expected)
    rows: list[Row] = [
        (f"shared pool: two concurrent runs of {n} tasks each, both completed", "yes", ""),
        ("shared pool: outputs not exact", str(len(wrong)), f"of {len(expected)}"),
        ("shared pool: tasks or jobs ended by the other run", str(ended), ""),
        ("shared pool: the first run's job named live and left alone by the second", str(named_live), "lines"),
        ("shared pool: wall time, first / second run", f"{runs['first'].wall_s:.1f} / {runs['second'].wall_s:.1f}",
         "s"),
    ]
    rows += node_check_cost()
    figures = {"tasks_per_run": n, "pool": POOL, "wrong_outputs": wrong, "ended_by_other_run": ended,
               "named_live": named_live,
               "first": runs["first"].as_dict(), "second": runs["second"].as_dict()}
    return rows, figures
