"""`BatchState`: the local Batch account — pools, nodes, applications, jobs and tasks — behind public methods.

The API handlers call only the public methods here; they take and return JSON dicts shaped like the Batch REST API
(2025-06-01.21.0) and raise the named errors of `errors`. Records and their transitions live in `records` and
`lifecycle` (the one task state machine), placement in `scheduler`, body checks in `validation`. What runs on the
nodes is an `ExecutionBackend` given by the caller (`service.make_backend`); this module does not know which one.

Choices where Batch's behaviour is not documented (or would make a local service useless):
- Creating a job whose `poolInfo.poolId` does not exist is refused with 404 `PoolNotFound` (real Batch accepts the
  job and leaves its tasks waiting forever; an immediate error is more useful offline).
- A task whose `requiredSlots` exceeds the pool's `taskSlotsPerNode` is accepted and stays `active`, as Batch treats
  a lack of free slots as a temporary scheduling failure.
- Terminating a job completes its running tasks (failureInfo `TaskEnded`); tasks that never started stay `active`
  and are never scheduled, as on Batch.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends.execution import ExecutionBackend
from ..service_config import BoundEndpoints, ServiceConfig
from . import node_system
from .batch_records import JobRecord, Records, TaskRecord
from .errors import (
    ActiveJobAndScheduleQuotaReached,
    BatchError,
    InvalidPropertyValue,
    JobBeingDeleted,
    JobCompleted,
    JobExists,
    JobNotFound,
    JobPreparationTaskOrReleaseTaskNotSpecified,
    PoolNotFound,
    TaskExists,
    TaskFilesCleanedup,
    TaskNotFound,
)
from .lifecycle import TaskLifecycle
from .pool_management import PoolManager
from .pool_operations import RUNTIME_FIELDS, PoolOperations
from .pool_records import PoolRecord, touch
from .scheduler import Scheduler
from .timestamps import UNLIMITED_DURATION, iso_now, new_etag
from .validation import check_job_accepts_tasks, check_job_body, check_task_body, check_task_list

_JOB_UPDATABLE = ("priority", "maxParallelTasks", "allowTaskPreemption", "constraints", "metadata")


class BatchState(PoolOperations):
    """Thread-safe state of the local Batch account; every record is guarded by `records.lock`."""

    def __init__(self, config: ServiceConfig, backend: ExecutionBackend, endpoints: BoundEndpoints | None = None) -> None:
        self.config = config
        self.endpoints = endpoints or BoundEndpoints.unbound(config)  # where entity URLs point
        self.records = Records(self.account_url)
        self.backend = backend
        self.lifecycle = TaskLifecycle(self.records, backend, config)
        self.pool_manager = PoolManager(self.records, self.lifecycle, backend, config, self.nodes_root)
        self.scheduler = Scheduler(self.records, self.lifecycle, self.pool_manager.tick)
        self.node_system = node_system.for_service(config.simulate, config.node_image)  # what pools report
        self._task_seq = itertools.count(1)
        now = iso_now()
        for spec in config.pools:
            pool = PoolRecord(spec.id, spec.slots, spec.nodes, now, new_etag(), vm_size=spec.vm_size,
                              container_configuration=copy.deepcopy(spec.container_configuration),
                              start_task=copy.deepcopy(spec.start_task),
                              system_vm=self.node_system.vm_configuration())
            for _ in range(spec.nodes):
                self.pool_manager.add_node(pool, dedicated=True)
            self.records.pools[spec.id.lower()] = pool
        backend.bind(self.lifecycle)

    # ------------------------------------------------------------------ lifecycle

    @property
    def pools(self) -> dict[str, PoolRecord]:
        return self.records.pools

    @property
    def jobs(self) -> dict[str, JobRecord]:
        return self.records.jobs

    @property
    def nodes_root(self) -> Path:
        return Path(self.config.root) / "nodes"

    @property
    def account_url(self) -> str:
        return self.endpoints.account_url.rstrip("/")

    def start(self) -> None:
        self.backend.start()
        with self.records.lock:
            self.pool_manager.started = True
            for pool in self.records.pools.values():
                for node in pool.nodes:
                    self.backend.start_node(node.layout)
        self.scheduler.start()

    def stop(self) -> None:
        self.lifecycle.stop()
        self.scheduler.stop()
        self.backend.stop()

    # pools, nodes, applications: pool_operations.PoolOperations

    # ------------------------------------------------------------------ jobs

    def _job(self, job_id: str) -> JobRecord:
        job = self.records.jobs.get(str(job_id).lower())
        if job is None or job.deleted:
            raise JobNotFound()
        return job

    def _check_active_job_quota(self) -> None:
        """Batch counts every job that has not completed against the account's active-job quota."""
        quota = self.config.active_job_quota
        if quota and sum(
            1 for job in self.records.jobs.values() if not job.deleted and job.rest.get("state") != "completed"
        ) >= quota:
            raise ActiveJobAndScheduleQuotaReached()

    def create_job(self, body: dict) -> dict:
        job_id, pool_id = check_job_body(body)
        with self.records.lock:
            pool = self._pool_for_job(pool_id)
            if job_id.lower() in self.records.jobs:
                raise JobExists()
            self._check_active_job_quota()
            now = iso_now()
            rest: dict[str, Any] = {k: copy.deepcopy(v) for k, v in body.items() if k not in RUNTIME_FIELDS}
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
                    or {"maxWallClockTime": UNLIMITED_DURATION, "maxTaskRetryCount": 0},
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
            touch(rest)
            job = JobRecord(job_id.lower(), rest)
            self.records.jobs[job.key] = job
            self.lifecycle.maybe_complete_job(job)
            return copy.deepcopy(rest)

    def _pool_for_job(self, pool_id: str) -> PoolRecord:
        try:
            return self._pool(pool_id)
        except PoolNotFound:
            raise PoolNotFound(
                f"The pool {pool_id!r} named in poolInfo.poolId does not exist on this account.",
                {"PropertyName": "poolInfo.poolId", "PropertyValue": str(pool_id)},
            ) from None

    def get_job(self, job_id: str) -> dict:
        with self.records.lock:
            return copy.deepcopy(self._job(job_id).rest)

    def list_jobs(self) -> list[dict]:
        with self.records.lock:
            return [copy.deepcopy(j.rest) for j in self.records.jobs.values() if not j.deleted]

    def update_job(self, job_id: str, body: dict) -> dict:
        """PATCH semantics (Jobs_UpdateJob): only onAllTasksComplete, onTaskFailure, priority, maxParallelTasks,
        allowTaskPreemption, constraints and metadata may change; poolInfo must stay the same pool."""
        with self.records.lock:
            job = self._job(job_id)
            if job.state in ("completed", "deleting"):
                error = JobCompleted if job.state == "completed" else JobBeingDeleted
                raise error(f"The job is {job.state} and cannot be updated.")
            for key, value in (body or {}).items():
                if key == "poolInfo":
                    if str((value or {}).get("poolId", "")).lower() != job.pool_key:
                        raise InvalidPropertyValue("The local service cannot move a job to another pool.",
                                                   {"PropertyName": "poolInfo.poolId"})
                elif key in ("onAllTasksComplete", "onTaskFailure"):
                    job.rest[key] = str(value).lower()
                elif key in _JOB_UPDATABLE:
                    job.rest[key] = copy.deepcopy(value)
                else:
                    raise InvalidPropertyValue(f"The property {key} cannot be updated.", {"PropertyName": key})
            touch(job.rest)
            self.lifecycle.maybe_complete_job(job)
            self.records.changed.notify_all()
            return copy.deepcopy(job.rest)

    def terminate_job(self, job_id: str, reason: str | None = None) -> None:
        with self.records.lock:
            job = self._job(job_id)
            if job.state == "completed":
                raise JobCompleted()
            if job.state == "deleting":
                raise JobBeingDeleted()
            if job.state != "terminating":
                self.lifecycle.begin_terminate(job, reason or "UserTerminate")

    def delete_job(self, job_id: str) -> None:
        with self.records.lock:
            job = self._job(job_id)
            if job.state != "deleting":  # deleting again is accepted
                self.lifecycle.begin_delete(job)

    def job_task_counts(self, job_id: str) -> dict:
        with self.records.lock:
            book = self._job(job_id).book  # kept up to date by every transition: no scan of the tasks

            def shape(counter: Counter[str]) -> dict[str, int]:
                counts = {name: counter[name] for name in ("active", "running", "completed", "succeeded", "failed")}
                counts["running"] += counter["preparing"]  # Batch has no preparing count: such tasks run
                return counts

            return {"taskCounts": shape(book.tasks), "taskSlotCounts": shape(book.slots)}

    def job_prep_release_status(self, job_id: str) -> list[dict]:
        with self.records.lock:
            job = self._job(job_id)
            if not job.rest.get("jobPreparationTask") and not job.rest.get("jobReleaseTask"):
                raise JobPreparationTaskOrReleaseTaskNotSpecified()
            out = []
            for node_id, rec in job.prep_by_node.items():
                node = self._node(job.pool_key, node_id)
                entry: dict[str, Any] = {"poolId": node.pool_id, "nodeId": node.id,
                                         "nodeUrl": self.records.node_url(node)}
                if rec.prep:
                    entry["jobPreparationTaskExecutionInfo"] = copy.deepcopy(rec.prep)
                if rec.release:
                    entry["jobReleaseTaskExecutionInfo"] = copy.deepcopy(rec.release)
                out.append(entry)
            return out

    # ------------------------------------------------------------------ tasks

    def _insert_task(self, job: JobRecord, task_id: str, body: dict) -> TaskRecord:
        if task_id.lower() in job.tasks:
            raise TaskExists()
        now = iso_now()
        rest: dict[str, Any] = {
            k: copy.deepcopy(v) for k, v in body.items() if k not in (*RUNTIME_FIELDS, "nodeInfo")
        }
        job_constraints = job.rest.get("constraints") or {}
        constraints = dict(rest.get("constraints") or {})
        constraints.setdefault("maxWallClockTime", job_constraints.get("maxWallClockTime", UNLIMITED_DURATION))
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
        touch(rest)
        task = TaskRecord(job.key, task_id.lower(), next(self._task_seq), rest)
        job.add_task(task)
        return task

    def add_task(self, job_id: str, body: dict) -> dict:
        with self.records.lock:
            job = self._job(job_id)
            check_job_accepts_tasks(job.state)
            task = self._insert_task(job, check_task_body(job.rest, body), body)
            self.records.changed.notify_all()
            return copy.deepcopy(task.rest)

    def add_task_collection(self, job_id: str, bodies: list[dict]) -> list[tuple[str, dict | BatchError]]:
        """Per body, in order: (task id, the added task) or (task id as given, the error refusing it)."""
        check_task_list(bodies)
        with self.records.lock:
            job = self._job(job_id)
            check_job_accepts_tasks(job.state)
            results: list[tuple[str, dict | BatchError]] = []
            for body in bodies:
                task_id = body.get("id") if isinstance(body, dict) else None
                try:
                    task = self._insert_task(job, check_task_body(job.rest, body), body)
                except BatchError as err:
                    results.append((str(task_id or ""), err))
                    continue
                results.append((task.rest["id"], copy.deepcopy(task.rest)))
            self.records.changed.notify_all()
            return results

    def _task(self, job_id: str, task_id: str) -> tuple[JobRecord, TaskRecord]:
        job = self._job(job_id)
        task = job.tasks.get(str(task_id).lower())
        if task is None or task.deleted:
            raise TaskNotFound()
        return job, task

    def get_task(self, job_id: str, task_id: str) -> dict:
        with self.records.lock:
            return copy.deepcopy(self._task(job_id, task_id)[1].rest)

    def list_tasks(self, job_id: str) -> list[dict]:
        """Copies of every task of the job, in submission order."""
        return self.list_task_page(job_id, lambda rests: (rests, False))[0]

    def list_task_page(
        self, job_id: str, cut: Callable[[list[dict]], tuple[list[dict], Any]]
    ) -> tuple[list[dict], Any]:
        """`cut(the live task dicts, in submission order)` runs under the lock and returns (chosen dicts, anything
        else); this returns copies of the chosen ones and the rest. A page of a 20,000-task job copies the page,
        not every task. `cut` only reads."""
        with self.records.lock:
            job = self._job(job_id)
            chosen, extra = cut([t.rest for t in job.tasks.values()])  # dict order is submission order
            return [copy.deepcopy(rest) for rest in chosen], extra

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.records.lock:
            self.lifecycle.terminate(self._task(job_id, task_id)[1])

    def delete_task(self, job_id: str, task_id: str) -> None:
        with self.records.lock:
            job, task = self._task(job_id, task_id)
            task.deleted = True
            if task.state in ("running", "preparing"):
                self.lifecycle.kill(task, "deleted")  # its directory goes when the process has ended
            else:
                self.lifecycle.retention.remove_now(job.id, task)
            job.remove_task(task)
            self.lifecycle.maybe_complete_job(job)
            self.records.changed.notify_all()

    def task_dir(self, job_id: str, task_id: str) -> Path | None:
        """None before the task is placed; TaskFilesCleanedup once its retention time removed the directory."""
        with self.records.lock:
            job, task = self._task(job_id, task_id)
            if task.files_cleaned:
                raise TaskFilesCleanedup(
                    f"The files of task {task.rest['id']} were cleaned up: its retention time "
                    f"({task.rest['constraints'].get('retentionTime')}) has passed."
                )
            if task.node is None:
                return None
            return task.node.layout.task_dir(job.id, task.rest["id"])
