"""Pool and node records and the transitions each owns (node states from its start task and slots, slots taken and
freed, nodes joining and leaving), with the index placement walks: `FreeSlotIndex` (a pool's ready nodes by free
slots). `touch` / `move_state`: the eTag, lastModified and state transition times every record keeps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
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
    evict_at: float | None = None  # monotonic time a Spot node given an eviction notice is preempted
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
    allocation_due: float | None = None  # monotonic time the current resize's nodes come (node_allocation)
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
