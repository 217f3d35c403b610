"""`BatchState`: pools, nodes, applications, jobs and tasks of the local Batch service, as REST-shaped dicts.

The wire (`wire.py`) calls only the public methods of `BatchState`; they take and return JSON dicts shaped like the
Batch REST API (2025-06-01.21.0) and raise `BatchError` with Batch's documented error codes. Execution on the
simulated nodes lives in `node_runner.NodeRunner`, which works on the records here under `BatchState.lock`.

Choices where Batch's behaviour is not documented (or would make a local service useless):
- Creating a job whose `poolInfo.poolId` does not exist is refused with 404 `PoolNotFound` (real Batch accepts the
  job and leaves its tasks waiting forever; an immediate error is more useful offline).
- `usesTaskDependencies: true` is refused with 400 `InvalidPropertyValue` (dependencies are not simulated), so a
  task `dependsOn` gets Batch's `TaskDependenciesNotSpecifiedOnJob`.
- `jobManagerTask`, `multiInstanceSettings` and `autoPoolSpecification` are refused with 400
  `InvalidPropertyValue` (not simulated) rather than silently ignored; `affinityInfo` is accepted and ignored.
- More than 100 tasks in one add-collection request: 413 `RequestBodyTooLarge`, nothing is added.
- A task whose `requiredSlots` exceeds the pool's `taskSlotsPerNode` is accepted and stays `active`, as Batch treats
  a lack of free slots as a temporary scheduling failure.
- A job's constraints.maxWallClockTime (from creation) terminates it with reason MaxWallClockTimeExpiry.
- Terminating a job completes its running tasks (failureInfo `TaskEnded`); tasks that never started stay `active`
  and are never scheduled, as on Batch.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import ServiceConfig

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TASKS_PER_COLLECTION = 100
VM_SIZE = "standard_d2s_v3"
NODE_AGENT_SKU = "batch.node.ubuntu 22.04"
IMAGE_REFERENCE = {
    "publisher": "canonical",
    "offer": "0001-com-ubuntu-server-jammy",
    "sku": "22_04-lts",
    "version": "latest",
}
TERMINAL_JOB_STATES = ("terminating", "completed", "deleting")


class BatchError(Exception):
    """An error the wire renders as a Batch error body; `values` become `[{key, value}]` details."""

    def __init__(self, status: int, code: str, message: str, values: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.values = values or {}

    def to_body(self) -> dict[str, Any]:
        """The BatchError JSON shape (without odata.metadata, which the wire adds)."""
        body: dict[str, Any] = {"code": self.code, "message": {"lang": "en-US", "value": self.message}}
        if self.values:
            body["values"] = [{"key": k, "value": str(v)} for k, v in self.values.items()]
        return body


def iso_now() -> str:
    """ISO-8601 UTC with 'Z', microsecond precision (Batch uses 7 digits; clients accept any)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_etag_counter = itertools.count(0x8DC000000000000)
_etag_lock = threading.Lock()


def new_etag() -> str:
    with _etag_lock:
        return f"0x{next(_etag_counter):X}"


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BatchError(400, "MissingRequiredProperty", f"The {what} id is required.", {"PropertyName": "id"})
    if not ID_PATTERN.match(value):
        raise BatchError(
            400,
            "InvalidPropertyValue",
            f"The {what} id may contain only letters, digits, hyphens and underscores and at most 64 characters.",
            {"PropertyName": "id", "PropertyValue": value[:100], "Reason": "invalid characters or too long"},
        )
    return value


# ---------------------------------------------------------------------------------------------------- records


@dataclass
class PrepRecord:
    """Job preparation/release execution on one node (BatchJobPreparationAndReleaseTaskStatus)."""

    prep: dict[str, Any] = field(default_factory=dict)  # BatchJobPreparationTaskExecutionInfo
    release: dict[str, Any] | None = None  # BatchJobReleaseTaskExecutionInfo
    done: threading.Event = field(default_factory=threading.Event)
    succeeded: bool = False
    run_lock: threading.Lock = field(default_factory=threading.Lock)
    process: Any = None  # the prep/release process while it runs, so terminate/delete can kill it


@dataclass
class NodeRecord:
    pool_id: str
    id: str
    index: int
    root: Path
    slots: int
    allocation_time: str
    state_transition_time: str
    used_slots: int = 0
    running_tasks: set = field(default_factory=set)  # {(job_key, task_key)}
    total_tasks_run: int = 0
    total_tasks_succeeded: int = 0
    installed_apps: dict[str, Path] = field(default_factory=dict)
    app_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def free_slots(self) -> int:
        return self.slots - self.used_slots


@dataclass
class PoolRecord:
    id: str
    slots: int
    target_nodes: int
    creation_time: str
    etag: str
    nodes: list[NodeRecord] = field(default_factory=list)
    node_fill_type: str = "spread"


@dataclass
class TaskRecord:
    job_key: str
    key: str
    seq: int
    rest: dict[str, Any]  # the REST dict without runtime fields the runner owns
    node: NodeRecord | None = None
    process: Any = None  # subprocess.Popen of the current attempt
    kill_reason: str | None = None  # "terminated" | "timeout" | "preempted" | "deleted"
    preempt_planned: bool = False
    deleted: bool = False

    @property
    def state(self) -> str:
        return self.rest["state"]


@dataclass
class JobRecord:
    key: str
    rest: dict[str, Any]
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    prep_by_node: dict[str, PrepRecord] = field(default_factory=dict)  # node id → record
    deleted: bool = False
    created_monotonic: float = field(default_factory=time.monotonic)  # for the job's maxWallClockTime

    @property
    def id(self) -> str:
        return self.rest["id"]

    @property
    def state(self) -> str:
        return self.rest["state"]


# ---------------------------------------------------------------------------------------------------- state


class BatchState:
    """Thread-safe state of the local Batch account. All records are guarded by `self.lock`."""

    def __init__(self, config: ServiceConfig) -> None:
        from .node_runner import NodeRunner  # runner imports this module's records

        self.config = config
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.pools: dict[str, PoolRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self._task_seq = itertools.count(1)
        now = iso_now()
        for spec in config.pools:
            pool = PoolRecord(spec.id, spec.slots, spec.nodes, now, new_etag())
            for n in range(spec.nodes):
                node_id = f"tvmps_{_stable_hex(spec.id, n)}_{n}"
                pool.nodes.append(
                    NodeRecord(spec.id, node_id, n, self.nodes_root / spec.id / node_id, spec.slots, now, now)
                )
            self.pools[spec.id.lower()] = pool
        self.runner = NodeRunner(self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def nodes_root(self) -> Path:
        return Path(self.config.root) / "nodes"

    @property
    def account_url(self) -> str:
        return (self.config.account_url or f"http://{self.config.host}:{self.config.port}").rstrip("/")

    def start(self) -> None:
        for pool in self.pools.values():
            for node in pool.nodes:
                for sub in ("shared", "startup", "applications", "workitems", "fsmounts", "certs"):
                    (node.root / sub).mkdir(parents=True, exist_ok=True)
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()

    def notify(self) -> None:
        with self.lock:
            self.changed.notify_all()

    # ------------------------------------------------------------------ pools and nodes

    def _pool(self, pool_id: str) -> PoolRecord:
        pool = self.pools.get(str(pool_id).lower())
        if pool is None:
            raise BatchError(404, "PoolNotFound", "The specified pool does not exist.")
        return pool

    def _pool_dict(self, pool: PoolRecord) -> dict[str, Any]:
        return {
            "id": pool.id,
            "url": f"{self.account_url}/pools/{pool.id}",
            "eTag": pool.etag,
            "lastModified": pool.creation_time,
            "creationTime": pool.creation_time,
            "state": "active",
            "stateTransitionTime": pool.creation_time,
            "allocationState": "steady",
            "allocationStateTransitionTime": pool.creation_time,
            "vmSize": VM_SIZE,
            "resizeTimeout": "PT15M",
            "currentDedicatedNodes": len(pool.nodes),
            "currentLowPriorityNodes": 0,
            "targetDedicatedNodes": pool.target_nodes,
            "targetLowPriorityNodes": 0,
            "enableAutoScale": False,
            "enableInterNodeCommunication": False,
            "taskSlotsPerNode": pool.slots,
            "taskSchedulingPolicy": {"nodeFillType": pool.node_fill_type},
            "virtualMachineConfiguration": {
                "imageReference": dict(IMAGE_REFERENCE),
                "nodeAgentSKUId": NODE_AGENT_SKU,
            },
            "targetNodeCommunicationMode": "default",
            "currentNodeCommunicationMode": "simplified",
        }

    def list_pools(self) -> list[dict]:
        with self.lock:
            return [self._pool_dict(p) for p in self.pools.values()]

    def get_pool(self, pool_id: str) -> dict:
        with self.lock:
            return self._pool_dict(self._pool(pool_id))

    def _node(self, pool_id: str, node_id: str) -> NodeRecord:
        pool = self._pool(pool_id)
        for node in pool.nodes:
            if node.id.lower() == str(node_id).lower():
                return node
        raise BatchError(404, "NodeNotFound", "The specified node does not exist.")

    def node_url(self, node: NodeRecord) -> str:
        return f"{self.account_url}/pools/{node.pool_id}/nodes/{node.id}"

    def _node_dict(self, node: NodeRecord) -> dict[str, Any]:
        recent = []
        for job_key, task_key in sorted(node.running_tasks):
            job = self.jobs.get(job_key)
            task = job.tasks.get(task_key) if job else None
            if task is None:
                continue
            recent.append(
                {
                    "taskUrl": task.rest["url"],
                    "jobId": job.id,
                    "taskId": task.rest["id"],
                    "taskState": task.state,
                    "executionInfo": copy.deepcopy(task.rest["executionInfo"]),
                }
            )
        body: dict[str, Any] = {
            "id": node.id,
            "url": self.node_url(node),
            "state": "running" if node.running_tasks else "idle",
            "schedulingState": "enabled",
            "stateTransitionTime": node.state_transition_time,
            "lastBootTime": node.allocation_time,
            "allocationTime": node.allocation_time,
            "ipAddress": "127.0.0.1",
            "affinityId": f"TVM:{node.id}",
            "vmSize": VM_SIZE,
            "totalTasksRun": node.total_tasks_run,
            "runningTasksCount": len(node.running_tasks),
            "runningTaskSlotsCount": node.used_slots,
            "totalTasksSucceeded": node.total_tasks_succeeded,
            "isDedicated": True,
            "nodeAgentInfo": {"version": "1.11.0", "lastUpdateTime": node.allocation_time},
            "virtualMachineInfo": {"imageReference": dict(IMAGE_REFERENCE)},
        }
        if recent:
            body["recentTasks"] = recent
        return body

    def list_nodes(self, pool_id: str) -> list[dict]:
        with self.lock:
            return [self._node_dict(n) for n in self._pool(pool_id).nodes]

    def get_node(self, pool_id: str, node_id: str) -> dict:
        with self.lock:
            return self._node_dict(self._node(pool_id, node_id))

    def node_dir(self, pool_id: str, node_id: str) -> Path:
        with self.lock:
            return self._node(pool_id, node_id).root

    # ------------------------------------------------------------------ applications

    def _applications(self) -> dict[str, dict[str, Any]]:
        apps: dict[str, dict[str, Any]] = {}
        for spec in self.config.app_packages:
            app = apps.setdefault(spec.name.lower(), {"id": spec.name, "displayName": spec.name, "versions": []})
            if spec.version not in app["versions"]:
                app["versions"].append(spec.version)
        return apps

    def list_applications(self) -> list[dict]:
        return list(self._applications().values())

    def get_application(self, app_id: str) -> dict:
        app = self._applications().get(str(app_id).lower())
        if app is None:
            raise BatchError(404, "ApplicationNotFound", "The specified application does not exist.")
        return app

    # ------------------------------------------------------------------ jobs

    def _job(self, job_id: str) -> JobRecord:
        job = self.jobs.get(str(job_id).lower())
        if job is None or job.deleted:
            raise BatchError(404, "JobNotFound", "The specified job does not exist.")
        return job

    def _touch(self, rest: dict[str, Any]) -> None:
        rest["eTag"] = new_etag()
        rest["lastModified"] = iso_now()

    def set_job_state(self, job: JobRecord, state: str) -> None:
        """Move a job to `state`, keeping previousState and transition times as Batch reports them."""
        now = iso_now()
        rest = job.rest
        if rest["state"] == state:
            return
        rest["previousState"] = rest["state"]
        rest["previousStateTransitionTime"] = rest["stateTransitionTime"]
        rest["state"] = state
        rest["stateTransitionTime"] = now
        self._touch(rest)

    def create_job(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise BatchError(400, "InvalidRequestBody", "The request body must be a JSON object describing a job.")
        job_id = check_id(body.get("id"), "job")
        pool_info = body.get("poolInfo")
        if not isinstance(pool_info, dict):
            raise BatchError(
                400, "MissingRequiredProperty", "A job requires poolInfo.", {"PropertyName": "poolInfo"}
            )
        if "autoPoolSpecification" in pool_info or not pool_info.get("poolId"):
            raise BatchError(
                400,
                "InvalidPropertyValue",
                "The local service supports only poolInfo.poolId (no auto pools).",
                {"PropertyName": "poolInfo.poolId"},
            )
        if body.get("usesTaskDependencies"):
            raise BatchError(
                400,
                "InvalidPropertyValue",
                "usesTaskDependencies is not supported by the local Batch service.",
                {"PropertyName": "usesTaskDependencies", "PropertyValue": "true"},
            )
        if body.get("jobManagerTask"):
            raise BatchError(
                400,
                "InvalidPropertyValue",
                "jobManagerTask is not supported by the local Batch service.",
                {"PropertyName": "jobManagerTask"},
            )
        for prop in ("onAllTasksComplete", "onTaskFailure"):
            allowed = {
                "onAllTasksComplete": ("noaction", "terminatejob"),
                "onTaskFailure": ("noaction", "performexitoptionsjobaction"),
            }[prop]
            value = body.get(prop)
            if value is not None and str(value).lower() not in allowed:
                raise BatchError(
                    400, "InvalidPropertyValue", f"{prop} must be one of {', '.join(allowed)}.",
                    {"PropertyName": prop, "PropertyValue": str(value)},
                )
        for prop in ("jobPreparationTask", "jobReleaseTask"):
            sub = body.get(prop)
            if sub is not None and (not isinstance(sub, dict) or not sub.get("commandLine")):
                raise BatchError(
                    400, "MissingRequiredProperty", f"{prop}.commandLine is required.",
                    {"PropertyName": f"{prop}.commandLine"},
                )
        if body.get("jobReleaseTask") and not body.get("jobPreparationTask"):
            raise BatchError(
                400, "InvalidPropertyValue", "A job release task requires a job preparation task.",
                {"PropertyName": "jobReleaseTask"},
            )
        with self.lock:
            pool = self._pool_for_job(pool_info["poolId"])
            existing = self.jobs.get(job_id.lower())
            if existing is not None:
                raise BatchError(409, "JobExists", "The specified job already exists.")
            now = iso_now()
            rest: dict[str, Any] = {
                k: copy.deepcopy(v)
                for k, v in body.items()
                if k not in ("url", "eTag", "lastModified", "creationTime", "state", "executionInfo", "stats")
            }
            rest.update(
                {
                    "url": f"{self.account_url}/jobs/{job_id}",
                    "creationTime": now,
                    "state": "active",
                    "stateTransitionTime": now,
                    "priority": body.get("priority", 0),
                    "allowTaskPreemption": body.get("allowTaskPreemption", False),
                    "maxParallelTasks": body.get("maxParallelTasks", -1),
                    "usesTaskDependencies": False,
                    "onAllTasksComplete": str(body.get("onAllTasksComplete", "noaction")).lower(),
                    "onTaskFailure": str(body.get("onTaskFailure", "noaction")).lower(),
                    "constraints": body.get("constraints")
                    or {"maxWallClockTime": "P10675199DT2H48M5.4775807S", "maxTaskRetryCount": 0},
                    "poolInfo": {"poolId": pool.id},
                    "executionInfo": {"startTime": now, "poolId": pool.id},
                }
            )
            if "jobPreparationTask" in rest:
                prep = rest["jobPreparationTask"]
                prep.setdefault("id", "jobpreparation")
                prep.setdefault("waitForSuccess", True)
                prep.setdefault("rerunOnNodeRebootAfterSuccess", True)
            if "jobReleaseTask" in rest:
                rest["jobReleaseTask"].setdefault("id", "jobrelease")
            self._touch(rest)
            job = JobRecord(job_id.lower(), rest)
            self.jobs[job.key] = job
            self._maybe_complete_job(job)
            return copy.deepcopy(rest)

    def _pool_for_job(self, pool_id: str) -> PoolRecord:
        try:
            return self._pool(pool_id)
        except BatchError:
            raise BatchError(
                404,
                "PoolNotFound",
                f"The pool {pool_id!r} named in poolInfo.poolId does not exist on this account.",
                {"PropertyName": "poolInfo.poolId", "PropertyValue": str(pool_id)},
            ) from None

    def get_job(self, job_id: str) -> dict:
        with self.lock:
            return copy.deepcopy(self._job(job_id).rest)

    def list_jobs(self) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(j.rest) for j in self.jobs.values() if not j.deleted]

    def update_job(self, job_id: str, body: dict) -> dict:
        """PATCH semantics (Jobs_UpdateJob): only onAllTasksComplete, onTaskFailure, priority, maxParallelTasks,
        allowTaskPreemption, constraints and metadata may change; poolInfo must stay the same pool."""
        with self.lock:
            job = self._job(job_id)
            if job.state in ("completed", "deleting"):
                raise BatchError(409, "JobCompleted" if job.state == "completed" else "JobBeingDeleted",
                                 f"The job is {job.state} and cannot be updated.")
            for key, value in (body or {}).items():
                if key == "poolInfo":
                    if str((value or {}).get("poolId", "")).lower() != job.rest["poolInfo"]["poolId"].lower():
                        raise BatchError(400, "InvalidPropertyValue",
                                         "The local service cannot move a job to another pool.",
                                         {"PropertyName": "poolInfo.poolId"})
                elif key in ("onAllTasksComplete", "onTaskFailure"):
                    job.rest[key] = str(value).lower()
                elif key in ("priority", "maxParallelTasks", "allowTaskPreemption", "constraints", "metadata"):
                    job.rest[key] = copy.deepcopy(value)
                else:
                    raise BatchError(400, "InvalidPropertyValue", f"The property {key} cannot be updated.",
                                     {"PropertyName": key})
            self._touch(job.rest)
            self._maybe_complete_job(job)
            self.changed.notify_all()
            return copy.deepcopy(job.rest)

    def terminate_job(self, job_id: str, reason: str | None = None) -> None:
        with self.lock:
            job = self._job(job_id)
            if job.state == "completed":
                raise BatchError(409, "JobCompleted", "The specified job is already in a completed state.")
            if job.state == "deleting":
                raise BatchError(409, "JobBeingDeleted", "The specified job is being deleted.")
            if job.state == "terminating":
                return
            self.begin_terminate(job, reason or "UserTerminate")

    def begin_terminate(self, job: JobRecord, reason: str) -> None:
        """Terminating: stop running tasks, run release tasks, then completed (in the runner's thread)."""
        self.set_job_state(job, "terminating")
        job.rest["executionInfo"]["terminateReason"] = reason
        for task in job.tasks.values():
            if task.state in ("running", "preparing"):
                self.runner.kill_task(task, "terminated")
        self.runner.kill_job_side_tasks(job)
        self.runner.finish_job_async(job)
        self.changed.notify_all()

    def complete_job(self, job: JobRecord) -> None:
        """Called by the runner once running tasks stopped and release tasks ran."""
        with self.lock:
            if job.deleted or job.state != "terminating":  # deleted meanwhile, or already completed
                return
            self.set_job_state(job, "completed")
            job.rest["executionInfo"]["endTime"] = iso_now()
            self.changed.notify_all()

    def _maybe_complete_job(self, job: JobRecord) -> None:
        if job.state != "active" or job.rest.get("onAllTasksComplete") != "terminatejob":
            return
        if all(t.state == "completed" for t in job.tasks.values()):
            self.begin_terminate(job, "AllTasksComplete")

    def delete_job(self, job_id: str) -> None:
        with self.lock:
            job = self._job(job_id)
            if job.state == "deleting":
                return  # already on its way out; deleting again is accepted
            self.set_job_state(job, "deleting")
            for task in job.tasks.values():
                if task.state in ("running", "preparing"):
                    self.runner.kill_task(task, "deleted")
            self.runner.kill_job_side_tasks(job)
            self.runner.delete_job_async(job)
            self.changed.notify_all()

    def forget_job(self, job: JobRecord) -> None:
        """Called by the runner once a deleting job's processes are gone."""
        with self.lock:
            job.deleted = True
            if self.jobs.get(job.key) is job:
                del self.jobs[job.key]
            self.changed.notify_all()

    def job_task_counts(self, job_id: str) -> dict:
        with self.lock:
            job = self._job(job_id)
            counts = dict.fromkeys(("active", "running", "completed", "succeeded", "failed"), 0)
            slots = dict(counts)
            for task in job.tasks.values():
                n = int(task.rest.get("requiredSlots", 1))
                state = task.state
                bucket = "running" if state == "preparing" else state
                counts[bucket] += 1
                slots[bucket] += n
                if state == "completed":
                    result = "succeeded" if task.rest["executionInfo"].get("result") == "success" else "failed"
                    counts[result] += 1
                    slots[result] += n
            return {"taskCounts": counts, "taskSlotCounts": slots}

    def job_prep_release_status(self, job_id: str) -> list[dict]:
        with self.lock:
            job = self._job(job_id)
            if not job.rest.get("jobPreparationTask") and not job.rest.get("jobReleaseTask"):
                raise BatchError(
                    409,
                    "JobPreparationTaskOrReleaseTaskNotSpecified",
                    "The job does not have a job preparation or job release task.",
                )
            out = []
            for node_id, rec in job.prep_by_node.items():
                node = self._node(job.rest["poolInfo"]["poolId"], node_id)
                entry: dict[str, Any] = {"poolId": node.pool_id, "nodeId": node.id, "nodeUrl": self.node_url(node)}
                if rec.prep:
                    entry["jobPreparationTaskExecutionInfo"] = copy.deepcopy(rec.prep)
                if rec.release:
                    entry["jobReleaseTaskExecutionInfo"] = copy.deepcopy(rec.release)
                out.append(entry)
            return out

    # ------------------------------------------------------------------ tasks

    def _validate_task_body(self, job: JobRecord, body: Any) -> str:
        if not isinstance(body, dict):
            raise BatchError(400, "InvalidRequestBody", "Each task must be a JSON object.")
        task_id = check_id(body.get("id"), "task")
        if not isinstance(body.get("commandLine"), str) or not body["commandLine"].strip():
            raise BatchError(400, "MissingRequiredProperty", "The task commandLine is required.",
                             {"PropertyName": "commandLine"})
        for prop, code in (("jobPreparationTask", "TaskIdSameAsJobPreparationTask"),
                           ("jobReleaseTask", "TaskIdSameAsJobReleaseTask")):
            special = job.rest.get(prop)
            if special and special.get("id", "").lower() == task_id.lower():
                raise BatchError(409, code, f"The task id {task_id} is the id of the job's {prop}.")
        if body.get("dependsOn"):
            raise BatchError(400, "TaskDependenciesNotSpecifiedOnJob",
                             "The job does not use task dependencies (not supported by the local service).")
        if body.get("multiInstanceSettings"):
            raise BatchError(400, "InvalidPropertyValue",
                             "multiInstanceSettings is not supported by the local Batch service.",
                             {"PropertyName": "multiInstanceSettings"})
        slots = body.get("requiredSlots", 1)
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise BatchError(400, "InvalidPropertyValue", "requiredSlots must be a whole number ≥ 1.",
                             {"PropertyName": "requiredSlots", "PropertyValue": str(slots)})
        for i, rf in enumerate(body.get("resourceFiles") or []):
            sources = [k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if rf.get(k)]
            if len(sources) != 1:
                raise BatchError(400, "InvalidPropertyValue",
                                 "Exactly one of httpUrl, storageContainerUrl, autoStorageContainerName is required.",
                                 {"PropertyName": f"resourceFiles[{i}]"})
            if rf.get("httpUrl") and not rf.get("filePath"):
                raise BatchError(400, "MissingRequiredProperty", "filePath is required with httpUrl.",
                                 {"PropertyName": f"resourceFiles[{i}].filePath"})
            path = rf.get("filePath") or ""
            if path.startswith("/") or ".." in Path(path).parts:
                raise BatchError(400, "InvalidPropertyValue",
                                 "A resource file's filePath cannot break out of the task working directory.",
                                 {"PropertyName": f"resourceFiles[{i}].filePath", "PropertyValue": path})
        for i, of in enumerate(body.get("outputFiles") or []):
            if not of.get("filePattern") or not (of.get("destination") or {}).get("container", {}).get(
                "containerUrl"
            ) or not (of.get("uploadOptions") or {}).get("uploadCondition"):
                raise BatchError(400, "MissingRequiredProperty",
                                 "outputFiles need filePattern, destination.container.containerUrl and "
                                 "uploadOptions.uploadCondition.",
                                 {"PropertyName": f"outputFiles[{i}]"})
        return task_id

    def _check_job_accepts_tasks(self, job: JobRecord) -> None:
        if job.state == "completed":
            raise BatchError(409, "JobCompleted", "The specified job is already in a completed state.")
        if job.state == "terminating":
            raise BatchError(409, "JobBeingTerminated", "The specified job is being terminated.")
        if job.state == "deleting":
            raise BatchError(409, "JobBeingDeleted", "The specified job is being deleted.")

    def _insert_task(self, job: JobRecord, task_id: str, body: dict) -> TaskRecord:
        if task_id.lower() in job.tasks:
            raise BatchError(409, "TaskExists", "The specified task already exists.")
        now = iso_now()
        rest: dict[str, Any] = {
            k: copy.deepcopy(v)
            for k, v in body.items()
            if k not in ("url", "eTag", "lastModified", "creationTime", "state", "executionInfo", "nodeInfo", "stats")
        }
        job_constraints = job.rest.get("constraints") or {}
        constraints = dict(rest.get("constraints") or {})
        constraints.setdefault("maxWallClockTime", job_constraints.get("maxWallClockTime",
                                                                       "P10675199DT2H48M5.4775807S"))
        constraints.setdefault("retentionTime", "P7D")
        constraints.setdefault("maxTaskRetryCount", job_constraints.get("maxTaskRetryCount", 0))
        rest.update(
            {
                "url": f"{job.rest['url']}/tasks/{task_id}",
                "creationTime": now,
                "state": "active",
                "stateTransitionTime": now,
                "requiredSlots": body.get("requiredSlots", 1),
                "constraints": constraints,
                "userIdentity": body.get("userIdentity")
                or {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
                "executionInfo": {"retryCount": 0, "requeueCount": 0},
            }
        )
        self._touch(rest)
        task = TaskRecord(job.key, task_id.lower(), next(self._task_seq), rest)
        job.tasks[task.key] = task
        return task

    def add_task(self, job_id: str, body: dict) -> dict:
        with self.lock:
            job = self._job(job_id)
            self._check_job_accepts_tasks(job)
            task_id = self._validate_task_body(job, body)
            task = self._insert_task(job, task_id, body)
            self.changed.notify_all()
            return copy.deepcopy(task.rest)

    def add_task_collection(self, job_id: str, bodies: list[dict]) -> list[dict]:
        if not isinstance(bodies, list):
            raise BatchError(400, "InvalidRequestBody", "The request body must have a 'value' list of tasks.")
        if len(bodies) > MAX_TASKS_PER_COLLECTION:
            raise BatchError(
                413,
                "RequestBodyTooLarge",
                f"The collection has {len(bodies)} tasks; at most {MAX_TASKS_PER_COLLECTION} are allowed per request.",
            )
        with self.lock:
            job = self._job(job_id)
            self._check_job_accepts_tasks(job)
            results = []
            for body in bodies:
                task_id = body.get("id") if isinstance(body, dict) else None
                try:
                    task_id = self._validate_task_body(job, body)
                    task = self._insert_task(job, task_id, body)
                except BatchError as err:
                    results.append({"status": "clienterror", "taskId": str(task_id or ""), "error": err.to_body()})
                    continue
                results.append(
                    {
                        "status": "success",
                        "taskId": task.rest["id"],
                        "eTag": task.rest["eTag"],
                        "lastModified": task.rest["lastModified"],
                        "location": task.rest["url"],
                    }
                )
            self.changed.notify_all()
            return results

    def _task(self, job_id: str, task_id: str) -> tuple[JobRecord, TaskRecord]:
        job = self._job(job_id)
        task = job.tasks.get(str(task_id).lower())
        if task is None or task.deleted:
            raise BatchError(404, "TaskNotFound", "The specified task does not exist.")
        return job, task

    def get_task(self, job_id: str, task_id: str) -> dict:
        with self.lock:
            return copy.deepcopy(self._task(job_id, task_id)[1].rest)

    def list_tasks(self, job_id: str) -> list[dict]:
        with self.lock:
            job = self._job(job_id)
            return [copy.deepcopy(t.rest) for t in sorted(job.tasks.values(), key=lambda t: t.seq)]

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            job, task = self._task(job_id, task_id)
            if task.state == "completed":
                return  # Batch accepts terminating a completed task as a no-op
            if task.state == "active":
                self.complete_task(task, exit_code=None, failure=ended_by_user())
            else:
                self.runner.kill_task(task, "terminated")

    def delete_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            job, task = self._task(job_id, task_id)
            task.deleted = True
            if task.state in ("running", "preparing"):
                self.runner.kill_task(task, "deleted")
            del job.tasks[task.key]
            self._maybe_complete_job(job)
            self.changed.notify_all()

    def task_dir(self, job_id: str, task_id: str) -> Path | None:
        with self.lock:
            job, task = self._task(job_id, task_id)
            if task.node is None:
                return None
            return task_dir_on(task.node, job.id, task.rest["id"])

    # ------------------------------------------------------------------ task state machine (runner calls these)

    def set_task_state(self, task: TaskRecord, state: str) -> None:
        rest = task.rest
        if rest["state"] == state:
            return
        now = iso_now()
        rest["previousState"] = rest["state"]
        rest["previousStateTransitionTime"] = rest["stateTransitionTime"]
        rest["state"] = state
        rest["stateTransitionTime"] = now
        self._touch(rest)

    def complete_task(
        self,
        task: TaskRecord,
        exit_code: int | None,
        failure: dict[str, Any] | None,
    ) -> None:
        """Final state: completed with result success/failure; frees the node's slots; may end the job."""
        info = task.rest["executionInfo"]
        now = iso_now()
        info.setdefault("startTime", now)
        info["endTime"] = now
        if exit_code is not None:
            info["exitCode"] = exit_code
        else:
            info.pop("exitCode", None)
        if failure:
            info["failureInfo"] = failure
            info["result"] = "failure"
        else:
            info.pop("failureInfo", None)
            info["result"] = "success"
        self.release_node(task, succeeded=not failure)
        self.set_task_state(task, "completed")
        job = self.jobs.get(task.job_key)
        if job is not None and not task.deleted:
            if failure and job.state == "active" and job.rest.get("onTaskFailure") == "performexitoptionsjobaction":
                if exit_job_action(task.rest.get("exitConditions"), exit_code, failure) == "terminate":
                    self.begin_terminate(job, "TaskFailed")
            self._maybe_complete_job(job)
        self.changed.notify_all()

    def release_node(self, task: TaskRecord, succeeded: bool | None = None) -> None:
        node = task.node
        if node is None:
            return
        ref = (task.job_key, task.key)
        if ref in node.running_tasks:
            node.running_tasks.discard(ref)
            node.used_slots -= int(task.rest.get("requiredSlots", 1))
            if succeeded:
                node.total_tasks_succeeded += 1
            if not node.running_tasks:
                node.state_transition_time = iso_now()


def exit_job_action(conditions: dict[str, Any] | None, exit_code: int | None, failure: dict[str, Any]) -> str:
    """The jobAction of a failed task's exitConditions, defaulting to terminate as Batch does for failures.

    `disable` is treated as `none` (jobs cannot be disabled here).
    """
    conditions = conditions or {}
    options = None
    if exit_code is not None and failure.get("code") in ("FailureExitCode", "TaskEnded"):
        for entry in conditions.get("exitCodes") or []:
            if entry.get("code") == exit_code:
                options = entry.get("exitOptions")
                break
        if options is None:
            for entry in conditions.get("exitCodeRanges") or []:
                if entry.get("start", 0) <= exit_code <= entry.get("end", -1):
                    options = entry.get("exitOptions")
                    break
    elif failure.get("code") == "FileUploadMiscError":
        options = conditions.get("fileUploadError")
    else:
        options = conditions.get("preProcessingError")
    if options is None:
        options = conditions.get("default")
    action = str((options or {}).get("jobAction") or "terminate").lower()
    return "terminate" if action == "terminate" else "none"


def ended_by_user() -> dict[str, Any]:
    return {"category": "usererror", "code": "TaskEnded", "message": "Task Was Ended by User Request"}


def task_dir_on(node: NodeRecord, job_id: str, task_id: str) -> Path:
    return node.root / "workitems" / job_id / "job-1" / task_id


def _stable_hex(pool_id: str, index: int) -> str:
    import hashlib

    return hashlib.sha256(f"{pool_id}/{index}".encode()).hexdigest()[:10]
