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
    "retries", "requeues",
]


def timestamp(value: datetime | None) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2025-06-01T12:00:03.250Z."""
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def row(a: TaskAttempt) -> dict[str, str]:
    return {
        "rule": a.rule, "jobid": a.jobid, "attempt": str(a.attempt), "task_id": a.task_id,
        "batch_job": a.batch_job, "pool": a.pool, "node": a.node or "", "node_type": a.node_type,
        "slots": str(a.slots), "submitted": timestamp(a.submitted), "started": timestamp(a.started),
        "ended": timestamp(a.ended), "queue_wait_s": seconds(a.queue_wait), "run_time_s": seconds(a.run_time),
        "exit_code": "" if a.exit_code is None else str(a.exit_code), "result": a.result, "failure": a.failure,
        "retries": str(a.retries), "requeues": str(a.requeues),
    }


def write_tsv(attempts: Iterable[TaskAttempt], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for a in attempts:
            writer.writerow(row(a))
    return path
