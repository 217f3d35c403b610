"""The records of the local Batch account (pools, nodes, jobs, tasks) and the transitions each owns.

A record keeps its REST dict (`rest`, shaped like the Batch REST API) plus what the service needs beside it. All
records are guarded by `Records.lock`; nothing here takes it, callers hold it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
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
    used_slots: int = 0
    running_tasks: set = field(default_factory=set)  # {(job_key, task_key)}
    total_tasks_run: int = 0
    total_tasks_succeeded: int = 0

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

    @property
    def waits_for_start_task(self) -> bool:
        return bool(self.start_task) and bool(self.start_task.get("waitForSuccess", True))

    @property
    def state(self) -> str:
        """BatchNodeState: starting → (waitingforstarttask → ) idle/running, or starttaskfailed; a Spot node may be
        preempted, and a node leaving a shrinking pool is leavingpool once its tasks are done."""
        if self.preempted_at is not None:
            return "preempted"
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
        self.used_slots += slots
        self.total_tasks_run += 1

    def free_slots_of(self, ref: tuple[str, str], slots: int, succeeded: bool | None) -> None:
        if ref not in self.running_tasks:
            return
        self.running_tasks.discard(ref)
        self.used_slots -= slots
        if succeeded:
            self.total_tasks_succeeded += 1
        if not self.running_tasks:
            self.state_transition_time = iso_now()


@dataclass
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


@dataclass
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
        move_state(self.rest, state)

    def free_node(self, succeeded: bool | None = None) -> None:
        if self.node is not None:
            self.node.free_slots_of(self.ref, self.required_slots, succeeded)


@dataclass
class PrepRecord:
    """Job preparation/release execution on one node (BatchJobPreparationAndReleaseTaskStatus)."""

    prep: dict[str, Any] = field(default_factory=dict)  # BatchJobPreparationTaskExecutionInfo
    release: dict[str, Any] | None = None  # BatchJobReleaseTaskExecutionInfo
    done: bool = False
    succeeded: bool = False
    running: str | None = None  # "preparation" | "release" while one runs on the backend
    run: int = 0  # numbers the runs, so a late report about an earlier run is ignored


@dataclass
class JobRecord:
    key: str
    rest: dict[str, Any]
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    prep_by_node: dict[str, PrepRecord] = field(default_factory=dict)  # node id → record
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

    def has_running_tasks(self) -> bool:
        return any(task.holds_node for task in self.tasks.values())

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
        for node in pool.nodes if pool else []:
            if node.id.lower() == node_id.lower():
                return node
        return None

    def live_task(self, job_key: str, task_key: str) -> TaskRecord | None:
        job = self.jobs.get(job_key)
        return job.tasks.get(task_key) if job is not None else None
