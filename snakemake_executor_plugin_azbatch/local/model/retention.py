"""Task retention: Batch keeps a completed task's directory on its node for at least `constraints.retentionTime`
(default 7 days) and may delete it afterwards; the task's record stays, and its file operations then answer 409
TaskFilesCleanedup. The local service deletes the directory as soon as the time is up (Batch's "may" taken
strictly, so a client that relies on files beyond the retention time fails here first).

One heap of due times, fed when a task completes and drained by the scheduler's tick, so nothing scans tasks.
A deleted task, or every task of a deleted job, loses its directory at once, retention time or not, as on Batch.
The directories are removed on a thread of their own, outside the records' lock."""

from __future__ import annotations

import heapq
import itertools
import shutil
import threading
import time
from pathlib import Path

from .batch_records import Records, TaskRecord
from .timestamps import duration_seconds

DEFAULT_RETENTION = "P7D"


class TaskRetention:
    def __init__(self, records: Records) -> None:
        self.records = records
        self._due: list[tuple[float, int, TaskRecord, int]] = []  # (monotonic due time, tie-break, task, attempt)
        self._order = itertools.count()

    def completed(self, task: TaskRecord) -> None:
        """Under the lock, when `task` completes (its directory, if any, is on task.node)."""
        seconds = duration_seconds((task.rest.get("constraints") or {}).get("retentionTime") or DEFAULT_RETENTION)
        if seconds is None or task.node is None:
            return
        heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), task, task.attempt))

    def expire(self, now: float | None = None) -> int:
        """Under the lock: every task whose retention time is up loses its directory (removed in the background);
        returns how many. A task that is gone, or ran again since, is skipped."""
        now = time.monotonic() if now is None else now
        doomed: list[Path] = []
        while self._due and self._due[0][0] <= now:
            _, _, task, attempt = heapq.heappop(self._due)
            job = self.records.jobs.get(task.job_key)
            if job is None or task.deleted or task.state != "completed" or task.attempt != attempt:
                continue
            if task.node is None or task.files_cleaned:
                continue
            task.files_cleaned = True
            doomed.append(task.node.layout.task_dir(job.id, task.rest["id"]))
        if doomed:
            _remove_in_background(doomed)
        return len(doomed)


    def remove_now(self, job_id: str, task: TaskRecord) -> None:
        """Under the lock, when `task` is deleted: Batch deletes a deleted task's directory on its node whatever
        its retention time. A running task's directory goes once its process has ended (lifecycle)."""
        if task.node is None or task.files_cleaned:
            return
        task.files_cleaned = True
        _remove_in_background([task.node.layout.task_dir(job_id, task.rest["id"])])


    def job_deleted(self, job_id: str, layouts: list) -> None:
        """Batch: deleting a job deletes its tasks' directories on the nodes, overriding their retention time (the
        preparation and release tasks' too). `layouts`: the NodeLayout of every node of the job's pool."""
        _remove_in_background([layout.job_dir(job_id) for layout in layouts])


def _remove_in_background(paths: list[Path]) -> None:
    """Outside the records' lock: a large directory takes a while to remove."""
    threading.Thread(target=_remove, args=(paths,), name="azbatch-retention", daemon=True).start()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
