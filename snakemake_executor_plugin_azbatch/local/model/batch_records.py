"""The records of the local Batch account (pools, nodes, jobs, tasks) and the transitions each owns.

A record keeps its REST dict (`rest`, shaped like the Batch REST API) plus what the service needs beside it. All
records are guarded by `Records.lock`; nothing here takes it, callers hold it.

Beside the records, indexes kept up to date by the transitions themselves, so that nothing done per task or per
request scans every task or node (a pool of thousands of nodes, a job of 20,000 tasks): each pool's nodes by
free slots (`FreeSlotIndex`, for placement), and each job's `TaskBook` (tasks and slots per state and result, tasks
holding a node, active tasks queued by requiredSlots and submission order).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from sortedcontainers import SortedDict, SortedKeyList

from ..nodes.node_layout import NodeLayout
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
    """A pool's nodes by free slots, then node index: the placement walks in O(log n) to the first candidate.

    It holds every node of the pool, whatever its state; whether a node may take tasks now (`NodeRecord.schedulable`,
    a job's exclusions) changes in many places, so placement checks it on the nodes it walks instead of the index
    tracking it."""

    def __init__(self) -> None:
        self._by_free: SortedDict = SortedDict()  # free slots → nodes sorted by index

    def add(self, node: NodeRecord, free: int) -> None:
        self._by_free.setdefault(free, SortedKeyList(key=_node_index)).add(node)

    def discard(self, node: NodeRecord, free: int) -> None:
        bucket = self._by_free.get(free)
        if bucket is not None and node in bucket:
            bucket.remove(node)
            if not bucket:
                del self._by_free[free]

    def move(self, node: NodeRecord, old_free: int, new_free: int) -> None:
        self.discard(node, old_free)
        self.add(node, new_free)

    def max_free(self) -> int:
        return self._by_free.peekitem(-1)[0] if self._by_free else 0

    def spreading(self, required: int) -> Iterator[NodeRecord]:
        """Nodes that fit `required`, most free slots first (the lowest index among equals)."""
        for free in self._by_free.irange(minimum=required, reverse=True):
            yield from self._by_free[free]

    def packing(self, required: int) -> Iterator[NodeRecord]:
        """Nodes that fit `required`, fullest first (the lowest index among equals)."""
        for free in self._by_free.irange(minimum=required):
            yield from self._by_free[free]


def _node_index(node: NodeRecord) -> int:
    return node.index


@dataclass(eq=False)
class NodeRecord:
    layout: NodeLayout
    index: int
    slots: int
    allocation_time: str
    state_transition_time: str
    ready: bool = False  # the backend reported the node up (its start task, if any, runs from then on)
    start_task: dict[str, Any] | None = None  # the pool's startTask
    start_task_info: dict[str, Any] | None = None  # BatchStartTaskInfo, once the start task was started
    start_task_run: int = 0  # numbers the start task's runs, so a late report about an earlier run is ignored
    dedicated: bool = True  # False: a Spot (low-priority) node
    leaving: str | None = None  # the pool shrinks: the nodeDeallocationOption this node leaves with
    preempted_at: float | None = None  # monotonic time a Spot node was preempted; it comes back later
    unusable: list[dict[str, Any]] | None = None  # marked unusable (POST /_local/.../state): its BatchNodeErrors
    used_slots: int = 0
    running_tasks: set = field(default_factory=set)  # {(job_key, task_key)}
    total_tasks_run: int = 0
    total_tasks_succeeded: int = 0
    slot_index: FreeSlotIndex | None = None  # the index of the pool the node belongs to

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

    def _use(self, slots: int) -> None:
        before = self.free_slots
        self.used_slots += slots
        if self.slot_index is not None:
            self.slot_index.move(self, before, self.free_slots)

    @property
    def waits_for_start_task(self) -> bool:
        return bool(self.start_task) and bool(self.start_task.get("waitForSuccess", True))

    @property
    def state(self) -> str:
        """BatchNodeState: starting → (waitingforstarttask → ) idle/running, or starttaskfailed; a Spot node may be
        preempted, and a node leaving a shrinking pool is leavingpool once its tasks are done."""
        if self.preempted_at is not None:
            return "preempted"
        if self.unusable is not None:
            return "unusable"
        if self.leaving is not None and not self.running_tasks:
            return "leavingpool"
        if not self.ready:
            return "starting"
        if self.waits_for_start_task:
            info = self.start_task_info or {}
            if info.get("state") != "completed":
                return "waitingforstarttask"
            if info.get("result") != "success":
                return "starttaskfailed"
        return "running" if self.running_tasks else "idle"

    @property
    def schedulable(self) -> bool:
        """Tasks may be placed here: not leaving the pool, not preempted, and (Batch keeps tasks off nodes whose
        start task, with waitForSuccess, has not succeeded) idle or running."""
        return self.leaving is None and self.preempted_at is None and self.state in ("idle", "running")

    def state_changed(self) -> None:
        self.state_transition_time = iso_now()

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
    """A pool: its creation body (`spec`), targets, allocation state, autoscale settings and its nodes."""

    id: str
    slots: int
    target_nodes: int  # targetDedicatedNodes
    creation_time: str
    etag: str
    nodes: list[NodeRecord] = field(default_factory=list)
    node_fill_type: str = "spread"
    vm_size: str | None = None  # None: the default of pool_views
    container_configuration: dict[str, Any] | None = None  # set for container-enabled pools
    start_task: dict[str, Any] | None = None
    system_vm: dict | None = None  # a --pool/pool-file pool: what its nodes are (node_system), else None
    target_low_priority: int = 0
    spec: dict[str, Any] = field(default_factory=dict)  # the Pools_AddPool body (vmSize, startTask, ...)
    state: str = "active"  # active | deleting
    state_transition_time: str = ""
    allocation_state: str = "steady"  # steady | resizing | stopping
    allocation_state_transition_time: str = ""
    last_modified: str = ""
    deallocation_option: str = "requeue"  # how nodes leave while shrinking
    resize_timeout: str = "PT15M"
    resize_errors: list[dict[str, Any]] = field(default_factory=list)
    autoscale_formula: str | None = None  # set while autoscale is enabled
    autoscale_interval: str = "PT15M"
    autoscale_run: dict[str, Any] | None = None
    next_evaluation: float = 0.0  # monotonic
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # autoscale samples (epoch, value)
    last_sample: float = 0.0  # monotonic
    next_node_index: int = 0
    nodes_by_id: dict[str, NodeRecord] = field(default_factory=dict)  # lower-cased node id → node
    free_index: FreeSlotIndex = field(default_factory=FreeSlotIndex)

    def __post_init__(self) -> None:
        self.state_transition_time = self.state_transition_time or self.creation_time
        self.allocation_state_transition_time = self.allocation_state_transition_time or self.creation_time
        self.last_modified = self.last_modified or self.creation_time

    def touch(self) -> None:
        self.etag = new_etag()
        self.last_modified = iso_now()

    def set_allocation_state(self, state: str) -> None:
        if self.allocation_state != state:
            self.allocation_state = state
            self.allocation_state_transition_time = iso_now()

    def add_node(self, node: NodeRecord) -> None:
        node.slot_index = self.free_index
        self.nodes.append(node)
        self.nodes_by_id[node.id.lower()] = node
        self.free_index.add(node, node.free_slots)

    def remove_node(self, node: NodeRecord) -> None:
        self.nodes.remove(node)
        self.nodes_by_id.pop(node.id.lower(), None)
        self.free_index.discard(node, node.free_slots)
        node.slot_index = None

    def place(self, required_slots: int, accepts: Callable[[NodeRecord], bool]) -> NodeRecord | None:
        """The node a task needing `required_slots` goes to (spread or pack) among those `accepts` takes, None when
        none fits. The index holds every node of the pool; nodes that cannot take tasks now (starting, start task
        pending or failed, leaving, preempted, excluded for the job) are skipped as the walk meets them."""
        candidates = self.free_index.packing(required_slots) if self.node_fill_type == "pack" \
            else self.free_index.spreading(required_slots)
        return next((node for node in candidates if node.schedulable and accepts(node)), None)


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
