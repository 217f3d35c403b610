"""Placement of active tasks on nodes, and the job clock, on one thread woken by every change of the records.

Choices where Batch is not documented: tasks are placed by job priority, then FIFO by submission order over all
jobs of a pool, skipping tasks that do not fit in the free slots (backfill); a job's maxParallelTasks is honoured.
`spread` places a task on the ready node with the most free slots, `pack` on the fullest ready node that fits.
A node takes tasks once it is `idle` or `running` (not while starting, waiting for its start task or after the
start task failed) and never a job's tasks after that job's preparation task failed there (Batch's rules).
A job's constraints.maxWallClockTime (from creation) terminates it with reason MaxWallClockTimeExpiry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .lifecycle import TaskLifecycle
from .records import JobRecord, PoolRecord, Records, TaskRecord
from .timestamps import duration_seconds

TICK_SECONDS = 0.5  # the longest a change can wait to be acted on if nobody signals it


class Scheduler:
    def __init__(self, records: Records, lifecycle: TaskLifecycle,
                 before_placing: Callable[[], None] | None = None) -> None:
        self.records = records
        self.lifecycle = lifecycle
        self.before_placing = before_placing  # pools move toward their targets (pool_management.PoolManager.tick)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="azbatch-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self.records.lock:
            self.records.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        with self.records.changed:
            while not self._stopping.is_set():
                self.tick()
                self.records.changed.wait(timeout=TICK_SECONDS)

    def tick(self) -> None:
        """Under the lock: expire jobs, move finishing jobs on, place what fits."""
        now = time.monotonic()
        for job in list(self.records.jobs.values()):
            limit = duration_seconds((job.rest.get("constraints") or {}).get("maxWallClockTime"))
            if job.state == "active" and limit is not None and now - job.created_monotonic > limit:
                self.lifecycle.begin_terminate(job, "MaxWallClockTimeExpiry")
            self.lifecycle.advance_finishing(job)
        if self.before_placing is not None:
            self.before_placing()
        for pool in self.records.pools.values():
            self._place(pool)

    def _place(self, pool: PoolRecord) -> None:
        candidates: list[tuple[int, int, JobRecord, TaskRecord]] = []
        running_per_job: dict[str, int] = {}
        for job in self.records.jobs.values():
            if job.deleted or job.state != "active" or job.pool_key != pool.id.lower():
                continue
            running_per_job[job.key] = sum(1 for t in job.tasks.values() if t.state in ("running", "preparing"))
            for task in job.tasks.values():
                if task.state == "active" and not task.deleted:
                    candidates.append((-int(job.rest.get("priority") or 0), task.seq, job, task))
        candidates.sort(key=lambda c: c[:2])
        for _, _, job, task in candidates:
            limit = job.rest.get("maxParallelTasks", -1)
            if limit is not None and limit >= 0 and running_per_job[job.key] >= limit:
                continue
            fitting = [
                n for n in pool.nodes
                if n.schedulable and n.free_slots >= task.required_slots and not job.excludes_node(n.id)
            ]  # fmt: skip
            if not fitting:
                continue
            if pool.node_fill_type == "pack":
                node = min(fitting, key=lambda n: (n.free_slots, n.index))
            else:
                node = max(fitting, key=lambda n: (n.free_slots, -n.index))
            self.lifecycle.assign(job, task, node)
            running_per_job[job.key] += 1
