"""The records of the local Batch account (pools, nodes, jobs, tasks) and the transitions each owns.

A record keeps its REST dict (`rest`, shaped like the Batch REST API) plus what the service needs beside it. All
records are guarded by `Records.lock`; nothing here takes it, callers hold it.

Beside the records, indexes kept up to date by the transitions themselves, so that nothing done per task or per
request scans every task or node (a pool of thousands of nodes, a job of 20,000 tasks): each pool's ready nodes by
free slots (`FreeSlotIndex`, for placement), and each job's `TaskBook` (tasks and slots per state and result, tasks
holding a node, active tasks queued by requiredSlots and submission order).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections import Counter
from typing import Any

from sortedcontainers import SortedDict, SortedList

from .node_layout import NodeLayout
from .timestamps import iso_now, new_etag

def touch(rest: dict[str, Any]) -> None:
    """A change: new eTag and lastModified."""
    rest["eTag"] = new_etag()
    rest["lastModified"] = iso_now()


def move_state(rest: dict[str, Any], state: str) -> None:
    """Move a job or task to `state`, keeping previousState and transition times as Batch reports them."""
    if rest["state"] == state:
        return
    rest["previousState"] = rest["state"]
    rest["previousStateTransitionTime"] = rest["stateTransitionTime"]
    rest["state"] = state
    rest["stateTransitionTime"] = iso_now()
    touch(rest)


class FreeSlotIndex:
    """A pool's ready nodes by free slots, then node index: the placement choices in O(log n)."""

    def __init__(self) -> None:
        self._by_free: SortedDict = SortedDict()  # free slots → SortedList of node indexes

    def add(self, index: int, free: int) -> None:
        self._by_free.setdefault(free, SortedList()).add(index)

    def move(self, index: int, old_free: int, new_free: int) -> None:
        bucket = self._by_free[old_free]
        bucket.remove(index)
        if not bucket:
            del self._by_free[old_free]
        self.add(index, new_free)

    def max_free(self) -> int:
        return self._by_free.peekitem(-1)[0] if self._by_free else 0

    def spread(self, required: int) -> int | None:
        """The node with the most free slots (the lowest index among equals), if it fits `required`."""
        if not self._by_free:
            return None
        free, bucket = self._by_free.peekitem(-1)
        return bucket[0] if free >= required else None

    def pack(self, required: int) -> int | None:
        """The fullest node that still fits `required` (the lowest index among equals)."""
        position = self._by_free.bisect_left(required)
        if position == len(self._by_free):
            return None
        return self._by_free.peekitem(position)[1][0]


@dataclass(eq=False)
class NodeRecord:
    layout: NodeLayout
    index: int
    slots: int
    allocation_time: str
    state_transition_time: str
    ready: bool = False  # the backend reported the node started (start task done, when there is one)
    used_slots: int = 0
    running_tasks: set = field(default_factory=set)  # {(job_key, task_key)}
    total_tasks_run: int = 0
    total_tasks_succeeded: int = 0
    slot_index: FreeSlotIndex | None = None  # the pool's index, which holds the node once it is ready

    @property
    def id(self) -> str:
        return self.layout.node_id

    @property
    def pool_id(self) -> str:
        return self.layout.pool_id

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def free_slots(self) -> int:
        return self.slots - self.used_slots

    def mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            if self.slot_index is not None:
                self.slot_index.add(self.index, self.free_slots)

    def _use(self, slots: int) -> None:
        before = self.free_slots
        self.used_slots += slots
        if self.ready and self.slot_index is not None:
            self.slot_index.move(self.index, before, self.free_slots)

    def take_slots(self, ref: tuple[str, str], slots: int) -> None:
        if not self.running_tasks:
            self.state_transition_time = iso_now()
        self.running_tasks.add(ref)
        self._use(slots)
        self.total_tasks_run += 1

    def free_slots_of(self, ref: tuple[str, str], slots: int, succeeded: bool | None) -> bool:
        """Free the slots `ref` holds; False when it held none."""
        if ref not in self.running_tasks:
            return False
        self.running_tasks.discard(ref)
        self._use(-slots)
        if succeeded:
            self.total_tasks_succeeded += 1
        if not self.running_tasks:
            self.state_transition_time = iso_now()
        return True


@dataclass(eq=False)
class PoolRecord:
    id: str
    slots: int
    target_nodes: int
    creation_time: str
    etag: str
    nodes: list[NodeRecord] = field(default_factory=list)  # nodes[i].index == i
    node_fill_type: str = "spread"
    nodes_by_id: dict[str, NodeRecord] = field(default_factory=dict)  # lower-cased node id → node
    free_index: FreeSlotIndex = field(default_factory=FreeSlotIndex)

    def add_node(self, node: NodeRecord) -> None:
        node.slot_index = self.free_index
        self.nodes.append(node)
        self.nodes_by_id[node.id.lower()] = node

    def place(self, required_slots: int) -> NodeRecord | None:
        """The ready node a task needing `required_slots` goes to (spread or pack), None when none fits."""
        if self.node_fill_type == "pack":
            index = self.free_index.pack(required_slots)
        else:
            index = self.free_index.spread(required_slots)
        return None if index is None else self.nodes[index]


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
