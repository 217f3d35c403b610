"""The records of the local Batch account's jobs and tasks (pools and nodes: `pool_records.py`) and the transitions each
owns; `Records`, the container of all of them.

A record keeps its REST dict (`rest`, shaped like the Batch REST API) plus what the service needs beside it. All
records are guarded by `Records.lock`; nothing here takes it, callers hold it.

Beside the records, indexes kept up to date by the transitions themselves, so that nothing done per task or per
request scans every task or node (a pool of thousands of nodes, a job of 20,000 tasks): each pool's nodes by
free slots (`pool_records.FreeSlotIndex`, for placement), and each job's `TaskBook` (tasks and slots per state and result, tasks
holding a node, active tasks queued by requiredSlots and submission order).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedDict

from .pool_records import NodeRecord, PoolRecord, move_state


class TaskBook:
    """One job's tasks in numbers kept as they change: tasks and slots per state and per result of completed ones
    (the task counts), how many hold a node's slots, and the active ones queued for placement, per requiredSlots
    value, by submission order."""

    def __init__(self) -> None:
        self.tasks: Counter[str] = Counter()  # state, "succeeded", "failed" → tasks
        self.slots: Counter[str] = Counter()  # the same → slots
        self.holding = 0
        self.queues: dict[int, SortedDict] = {}  # requiredSlots → {seq: active TaskRecord}

    def add(self, task: TaskRecord) -> None:
        self._count(task, task.state, 1)

    def remove(self, task: TaskRecord) -> None:
        if task.holds_node:
            self.holding -= 1
        self._count(task, task.state, -1)

    def moved(self, task: TaskRecord, old: str, new: str) -> None:
        self._count(task, old, -1)
        self._count(task, new, 1)

    def _count(self, task: TaskRecord, state: str, sign: int) -> None:
        slots = task.required_slots
        self.tasks[state] += sign
        self.slots[state] += sign * slots
        if state == "completed":  # final: its result never changes afterwards
            result = "succeeded" if task.rest["executionInfo"].get("result") == "success" else "failed"
            self.tasks[result] += sign
            self.slots[result] += sign * slots
        elif state == "active":
            queue = self.queues.setdefault(slots, SortedDict())
            if sign > 0:
                queue[task.seq] = task
            else:
                queue.pop(task.seq, None)


@dataclass(eq=False)
class TaskRecord:
    job_key: str
    key: str
    seq: int
    rest: dict[str, Any]  # the REST dict, runtime fields included
    node: NodeRecord | None = None
    attempt: int = 0  # numbers the attempts, so a late report about an earlier attempt is ignored
    launched: bool = False  # the current attempt was handed to the execution backend
    kill_reason: str | None = None  # "terminated" | "preempted" | "deleted"
    preempt_planned: bool = False
    deleted: bool = False
    book: TaskBook | None = None  # its job's, while the task belongs to the job
    files_cleaned: bool = False  # its directory was removed after constraints.retentionTime (retention.py)


    @property
    def state(self) -> str:
        return self.rest["state"]

    @property
    def ref(self) -> tuple[str, str]:
        return (self.job_key, self.key)

    @property
    def required_slots(self) -> int:
        return int(self.rest.get("requiredSlots", 1))

    @property
    def holds_node(self) -> bool:
        return self.node is not None and self.ref in self.node.running_tasks

    def set_state(self, state: str) -> None:
        old = self.rest["state"]
        move_state(self.rest, state)
        if self.book is not None and old != state:
            self.book.moved(self, old, state)

    def take_node(self, node: NodeRecord) -> None:
        node.take_slots(self.ref, self.required_slots)
        self.node = node
        if self.book is not None:
            self.book.holding += 1

    def free_node(self, succeeded: bool | None = None) -> None:
        if self.node is not None and self.node.free_slots_of(self.ref, self.required_slots, succeeded):
            if self.book is not None:
                self.book.holding -= 1


@dataclass
class PrepRecord:
    """Job preparation/release execution on one node (BatchJobPreparationAndReleaseTaskStatus)."""

    prep: dict[str, Any] = field(default_factory=dict)  # BatchJobPreparationTaskExecutionInfo
    release: dict[str, Any] | None = None  # BatchJobReleaseTaskExecutionInfo
    done: bool = False
    succeeded: bool = False
    running: str | None = None  # "preparation" | "release" while one runs on the backend
    run: int = 0  # numbers the runs, so a late report about an earlier run is ignored


@dataclass(eq=False)
class JobRecord:
    key: str
    rest: dict[str, Any]
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    prep_by_node: dict[str, PrepRecord] = field(default_factory=dict)  # node id → record
    waiting_for_prep: dict[str, dict[str, TaskRecord]] = field(default_factory=dict)  # node id → tasks preparing
    book: TaskBook = field(default_factory=TaskBook)
    deleted: bool = False
    releasing: bool = False  # release tasks were started (terminating or deleting)
    created_monotonic: float = field(default_factory=time.monotonic)  # for the job's maxWallClockTime

    @property
    def id(self) -> str:
        return self.rest["id"]

    @property
    def state(self) -> str:
        return self.rest["state"]

    @property
    def pool_key(self) -> str:
        return self.rest["poolInfo"]["poolId"].lower()

    def set_state(self, state: str) -> None:
        move_state(self.rest, state)

    def add_task(self, task: TaskRecord) -> None:
        self.tasks[task.key] = task
        task.book = self.book
        self.book.add(task)

    def remove_task(self, task: TaskRecord) -> None:
        """The task leaves the job (deleted); an attempt still ending frees its node without counting here."""
        del self.tasks[task.key]
        self.book.remove(task)
        task.book = None

    def has_running_tasks(self) -> bool:
        return self.book.holding > 0

    def all_tasks_completed(self) -> bool:
        return self.book.tasks["completed"] == len(self.tasks)

    def excludes_node(self, node_id: str) -> bool:
        """Batch: once the job preparation task (waitForSuccess) has failed on a node, that node runs none of the
        job's tasks (until reimaged, which local nodes never are); the tasks go to other nodes."""
        prep = self.rest.get("jobPreparationTask")
        rec = self.prep_by_node.get(node_id)
        return bool(prep and prep.get("waitForSuccess", True) and rec and rec.done and not rec.succeeded)


class Records:
    """Every record of the account, the lock guarding them and the condition signalled on every change."""

    def __init__(self, account_url: str) -> None:
        self.account_url = account_url
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.pools: dict[str, PoolRecord] = {}
        self.jobs: dict[str, JobRecord] = {}

    def node_url(self, node: NodeRecord) -> str:
        return f"{self.account_url}/pools/{node.pool_id}/nodes/{node.id}"

    def find_node(self, pool_key: str, node_id: str) -> NodeRecord | None:
        pool = self.pools.get(pool_key.lower())
        return pool.nodes_by_id.get(node_id.lower()) if pool else None

    def live_task(self, job_key: str, task_key: str) -> TaskRecord | None:
        job = self.jobs.get(job_key)
        return job.tasks.get(task_key) if job is not None else None
