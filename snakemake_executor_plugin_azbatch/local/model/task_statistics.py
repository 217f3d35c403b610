"""Batch's task statistics (`stats`, BatchTaskStatistics) from what the task's processes used.

Batch sums a task's statistics over its retries; so does this: each attempt's CPU times and block I/O (the rusage
the backend reports) and its wall clock, from the attempt's start to its exit, are added when the attempt exits.
A task that has not run an attempt to its exit has no `stats` (stricter than Batch, whose statistics of a running
task may be partial): clients must cope with their absence. Simulated nodes run nothing: CPU and I/O are zero, the
wall clock is the simulated run. A container task's processes belong to podman, not the node agent: its CPU is
reported as zero (documented in docs/local-service.md). The API layer hands `stats` out only when asked
(`$expand=stats`, or `stats` in `$select`), as Batch does."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..backends.execution import ProcessUsage
from .timestamps import duration_seconds, iso_time, parse_iso

GIB = 1024**3


def duration(seconds: float) -> str:
    """ISO-8601 seconds with millisecond precision, as Batch writes its durations (PT12.345S)."""
    return f"PT{max(0.0, seconds):.3f}S"


def add_attempt(rest: dict[str, Any], usage: ProcessUsage | None) -> None:
    """Fold one exited attempt into the task's `stats` (created at the first)."""
    now = datetime.now(timezone.utc)
    info = rest.get("executionInfo") or {}
    started = parse_iso(info.get("startTime") or "") or now
    created = parse_iso(rest.get("creationTime") or "") or started
    before = rest.get("stats") or {}

    def seconds(name: str) -> float:
        return duration_seconds(before.get(name)) or 0.0

    usage = usage or ProcessUsage(0.0, 0.0)
    rest["stats"] = {
        "url": rest.get("url", ""),
        "startTime": iso_time(created),
        "lastUpdateTime": iso_time(now),
        "userCPUTime": duration(seconds("userCPUTime") + usage.user_seconds),
        "kernelCPUTime": duration(seconds("kernelCPUTime") + usage.kernel_seconds),
        "wallClockTime": duration(seconds("wallClockTime") + (now - started).total_seconds()),
        "readIOps": str(int(before.get("readIOps", 0)) + usage.read_ops),
        "writeIOps": str(int(before.get("writeIOps", 0)) + usage.write_ops),
        "readIOGiB": float(before.get("readIOGiB", 0.0)) + usage.read_bytes / GIB,
        "writeIOGiB": float(before.get("writeIOGiB", 0.0)) + usage.write_bytes / GIB,
        "waitTime": duration((started - created).total_seconds()),  # to the most recent execution, as Batch
    }
