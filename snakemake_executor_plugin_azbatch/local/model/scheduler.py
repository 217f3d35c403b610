"""Placement of active tasks on nodes, and the job clock, on one thread woken by every change of the records.

Choices where Batch is not documented: tasks are placed by job priority, then FIFO by submission order over all
jobs of a pool, skipping tasks that do not fit in the free slots (backfill); a job's maxParallelTasks is honoured.
`spread` places a task on the ready node with the most free slots, `pack` on the fullest ready node that fits.
A node takes tasks once it is `idle` or `running` (not while starting, waiting for its start task or after the
start task failed) and never a job's tasks after that job's preparation task failed there (Batch's rules).
A job's constraints.maxWallClockTime (from creation) terminates it with reason MaxWallClockTimeExpiry; completed
tasks' directories go when their retentionTime is up (retention.py).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

from .batch_records import JobRecord, Records
from .lifecycle import TaskLifecycle
from .pool_records import PoolRecord
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
        self.lifecycle.retention.expire(now)
        if self.before_placing is not None:
            self.before_placing()
        for pool in self.records.pools.values():
            self._place(pool)

    def _place(self, pool: PoolRecord) -> None:
        """Place active tasks in (job priority, submission order), skipping those that do not fit (backfill).

        Each job keeps its active tasks queued per requiredSlots value (`TaskBook.queues`), so the next candidate
        is the best head of a few queues (a heap) and the node comes from the pool's free-slot index: the cost
        is the number of tasks placed, not the number waiting. Free slots only shrink during a round, so a queue
        whose head finds no node is done for this round, as is a job at its maxParallelTasks."""
        if pool.free_index.max_free() <= 0:
            return
        heads: list[tuple[int, int, int, str]] = []  # (-job priority, seq of the queue's head, slots, job key)
        jobs: dict[str, JobRecord] = {}
        running: dict[str, int] = {}
        for job in self.records.jobs.values():
            if job.deleted or job.state != "active" or job.pool_key != pool.id.lower():
                continue
            jobs[job.key] = job
            running[job.key] = job.book.tasks["running"] + job.book.tasks["preparing"]
            for slots, queue in job.book.queues.items():
                if queue:
                    heads.append((-int(job.rest.get("priority") or 0), queue.peekitem(0)[0], slots, job.key))
        heapq.heapify(heads)
        while heads:
            neg_priority, seq, slots, job_key = heapq.heappop(heads)
            job = jobs[job_key]
            limit = job.rest.get("maxParallelTasks", -1)
            if job.state != "active" or limit is not None and 0 <= limit <= running[job_key]:
                continue
            node = pool.place(slots, lambda n: not job.excludes_node(n.id))
            if node is None:
                continue
            queue = job.book.queues[slots]
            task = queue.get(seq)
            if task is not None:
                self.lifecycle.assign(job, task, node)  # the task leaves the active queue
                running[job_key] += 1
            if queue and queue.peekitem(0)[0] != seq:
                heapq.heappush(heads, (neg_priority, queue.peekitem(0)[0], slots, job_key))
