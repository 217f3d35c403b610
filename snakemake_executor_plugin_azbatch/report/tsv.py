"""tasks.tsv: one row per task attempt, for spreadsheets, pandas or `column -t`."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .records import TaskAttempt

COLUMNS = [
    "rule", "jobid", "attempt", "task_id", "batch_job", "pool", "node", "node_type", "slots",
    "submitted", "started", "ended", "queue_wait_s", "run_time_s", "exit_code", "result", "failure",
    "retries", "requeues", "adopted", "saved_s",
    # What the task asked for and used (efficiency.py): CPU from Batch's task statistics or the node (cpu_from),
    # peak resident memory of the rule's processes and with the node's Snakemake, measured on the node.
    "threads", "mem_mb", "runtime_s", "user_cpu_s", "kernel_cpu_s", "cpu_from", "peak_rss_mib", "peak_rss_with_snakemake_mib",
]


def timestamp(value: datetime | None) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2025-06-01T12:00:03.250Z."""
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def row(a: TaskAttempt) -> dict[str, str]:
    return {
        "rule": a.rule, "jobid": a.jobid, "attempt": str(a.attempt), "task_id": a.task_id,
        "batch_job": a.batch_job, "pool": a.pool, "node": a.node or "", "node_type": a.node_type,
        "slots": str(a.slots), "submitted": timestamp(a.submitted), "started": timestamp(a.started),
        "ended": timestamp(a.ended), "queue_wait_s": seconds(a.queue_wait), "run_time_s": seconds(a.run_time),
        "exit_code": "" if a.exit_code is None else str(a.exit_code), "result": a.result, "failure": a.failure,
        "retries": str(a.retries), "requeues": str(a.requeues), "adopted": a.adopted,
        "saved_s": seconds(a.saved_seconds) if a.adopted else "",
        "threads": str(a.threads), "mem_mb": number(a.mem_mb, 0), "runtime_s": number(a.runtime_limit, 0),
        "user_cpu_s": seconds(a.user_cpu), "kernel_cpu_s": seconds(a.kernel_cpu), "cpu_from": a.cpu_from,
        "peak_rss_mib": number(a.peak_rss_mib, 1), "peak_rss_with_snakemake_mib": number(a.peak_tree_mib, 1),
    }


def write_tsv(attempts: Iterable[TaskAttempt], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for a in attempts:
            writer.writerow(row(a))
    return path
