"""The run report's own cost at scale (issue 23): the requests it adds (the one listing of the nodes' usage blobs
per 5,000 tasks, a node list per pool only for tasks whose node never told its kind) and the time and bytes of
writing it again in process from the run's tasks.tsv (the figure's pool panel without samples)."""

from __future__ import annotations

import csv
import json
import resource
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from service_process import Traffic

from snakemake_executor_plugin_azbatch.report import RunInfo, TaskAttempt, write_report

FILES = ("tasks.tsv", "summary.json", "timeline.png", "timeline.svg", "report.html")


def _time(text: str) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _number(text: str) -> float | None:
    return float(text) if text else None


def attempts_from_tsv(path: Path) -> list[TaskAttempt]:
    rows = list(csv.DictReader(path.open(encoding="utf-8"), delimiter="\t"))
    return [TaskAttempt(
        task_id=r["task_id"], batch_job=r["batch_job"], rule=r["rule"], jobid=r["jobid"], attempt=int(r["attempt"]),
        pool=r["pool"], slots=int(r["slots"]), submitted=_time(r["submitted"]), node=r["node"] or None,
        node_type=r["node_type"], started=_time(r["started"]), ended=_time(r["ended"]),
        exit_code=int(r["exit_code"]) if r["exit_code"] else None, result=r["result"], failure=r["failure"],
        retries=int(r["retries"]), requeues=int(r["requeues"]), threads=int(r["threads"]),
        mem_mb=_number(r["mem_mb"]), user_cpu=_number(r["user_cpu_s"]), kernel_cpu=_number(r["kernel_cpu_s"]),
        cpu_from=r["cpu_from"], peak_rss_mib=_number(r["peak_rss_mib"]),
    ) for r in rows]


def report_rows(workdir: Path, traffic: Traffic, tasks: int) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    (report_dir,) = sorted((workdir / ".snakemake" / "azbatch" / "reports").iterdir())
    sizes = {name: (report_dir / name).stat().st_size for name in FILES}
    summary = json.loads((report_dir / "summary.json").read_text())
    # The plugin's List Blobs: the usage/ pages (the report's) and, when a run stages inputs, the content store's
    # one (none in this workflow): an upper bound of the report's.
    usage_listings = traffic.count("storagePlugin", "ListBlobs")
    # Node lists: the report's (pools with a task whose node never told its kind: all of them on simulated nodes,
    # which measure nothing) and node health's while tasks wait.
    node_lists = traffic.count("operations", "Nodes_ListNodes")
    own = {"usage_listings": usage_listings, "node_lists_report_and_node_health": node_lists}
    attempts = attempts_from_tsv(report_dir / "tasks.tsv")
    run = RunInfo(summary["run"], str(workdir), summary["outcome"], {}, {a.pool: 4 for a in attempts})
    cpu, wall = time.process_time(), time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        write_report(attempts, run, Path(scratch))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = usage_listings + len({a.pool for a in attempts if a.node and a.node_type in ("", "unknown")})
    rows = [
        ("scale: run report: requests of its own per task (usage listings, node lists at the end)",
         f"{extra / tasks:.4f}", f"requests ({extra} in all)"),
        ("scale: run report: written again in process (CPU / wall)", f"{cpu:.1f} / {wall:.1f}", "s"),
        ("scale: run report: tasks.tsv / summary.json / timeline.svg / report.html",
         " / ".join(f"{sizes[n] / 1e6:.2f}" for n in ("tasks.tsv", "summary.json", "timeline.svg", "report.html")),
         "MB"),
    ]
    return rows, {"requests": own, "extra_requests": extra, "write_cpu_s": cpu, "write_wall_s": wall,
                  "bench_process_peak_rss_mib": peak, "bytes": sizes}
