"""The one task state machine of the local Batch service, and the job transitions it drives.

Task states: `active` → (placed on a node, slots taken) `preparing` while the job preparation task runs on that
node, or `running` → `completed`. Back to `active` on a retry (non-zero exit with retries left) or a requeue
(preemption); slots are freed whenever an attempt ends. `TaskLifecycle` is also the model's side of the execution
seam: it hands attempts and preparation/release runs to the `ExecutionBackend` and implements `ExecutionEvents`,
the only methods through which a backend reports back. Every method takes `Records.lock`.

Choices where Batch is not documented, or where a local simulation differs:
- A retry or a preemption puts the task back to `active`; it is scheduled again.
- maxWallClockTime expiry: the task completes with failureInfo {category servererror, code TaskEnded}, as Batch
  documents, and no retry; its exit code is the Linux one (-9, SIGKILL), not Batch's Windows 0xC000013A
  (task_outcomes.WALL_CLOCK_EXIT_CODE).
- Terminate: failureInfo code `TaskEnded` ("Task Was Ended by User Request").
- The job preparation task runs once per node per job, before that job's first task there. When it fails (after
  its retries) and waitForSuccess is true, as Batch documents: the tasks that waited for it on that node go back
  to `active`, that node takes none of the job's tasks any more (`JobRecord.excludes_node`), and they run on other
  nodes — on a pool where every node failed they stay `active`. With waitForSuccess false the preparation task
  still runs first but its failure does not affect the tasks.
- Start tasks: a node is `starting` until the backend reports it up, then runs the pool's start task (retried on
  a non-zero exit up to maxTaskRetryCount); with waitForSuccess it is `waitingforstarttask` meanwhile and takes
  tasks only after success, `starttaskfailed` (no tasks, ever) after the last failure; without waitForSuccess it
  is `idle` and takes tasks at once.
- The job release task runs when the job terminates or is deleted, once on every node that ran the preparation
  task, after the job's running tasks and preparation tasks have ended.
- Preemption (`preempt_fraction`, seeded): a chosen task is killed shortly after its command starts and requeued
  (state back to `active`, requeueCount + 1), once per task, as Batch does for a preempted Spot node.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from typing import Any

from ..backends.execution import (
    AttemptRef,
    ExecutionBackend,
    JobTaskRef,
    TaskAttempt,
)
from ..backends.task_outcomes import (
    WALL_CLOCK_EXIT_CODE,
    ended_by_user,
    exit_failure,
    exit_job_action,
    wall_clock_failure,
)
from ..service_config import ServiceConfig
from .batch_records import JobRecord, Records, TaskRecord
from .node_task_runs import NodeTaskRuns
from .pool_records import NodeRecord
from .retention import TaskRetention
from .timestamps import duration_seconds, iso_now

PREEMPT_DELAY_SECONDS = 0.3


class TaskLifecycle(NodeTaskRuns):
    """Task and job transitions under `records.lock`; implements `execution.ExecutionEvents`."""

    def __init__(self, records: Records, backend: ExecutionBackend, config: ServiceConfig) -> None:
        self.records = records
        self.backend = backend
        self.config = config
        self._rng = random.Random(config.seed)
        self._attempts: dict[AttemptRef, TaskRecord] = {}  # attempts handed to the backend, deleted tasks too
        self._stopping = False
        self.retention = TaskRetention(records)  # completed tasks' directories, deleted when their time is up

    def stop(self) -> None:
        with self.records.lock:
            self._stopping = True

    def _notify(self) -> None:
        self.records.changed.notify_all()

    # ------------------------------------------------------------------ placing an attempt (scheduler)

    def assign(self, job: JobRecord, task: TaskRecord, node: NodeRecord) -> None:
        """Start an attempt of an active task on a node whose free slots fit it."""
        task.take_node(node)
        task.kill_reason = None
        task.attempt += 1
        task.launched = False
        tdir = node.layout.task_dir(job.id, task.rest["id"])
        node_url = self.records.node_url(node)
        task.rest["nodeInfo"] = {
            "affinityId": f"TVM:{node.id}",
            "nodeUrl": node_url,
            "poolId": node.pool_id,
            "nodeId": node.id,
            "taskRootDirectory": node.layout.relative(tdir),
            "taskRootDirectoryUrl": f"{node_url}/files/{node.layout.relative(tdir)}",
        }
        if job.rest.get("jobPreparationTask"):
            prep = job.prep_by_node.get(node.id)
            if prep is None or not prep.done:
                task.set_state("preparing")
                job.waiting_for_prep.setdefault(node.id, {})[task.key] = task
                if prep is None:
                    self._start_preparation(job, node)
                return  # launched (or sent back to active) by _after_preparation
        task.set_state("running")
        self._launch(job, task, node)

    def _launch(self, job: JobRecord, task: TaskRecord, node: NodeRecord) -> None:
        ref = AttemptRef(job.key, task.key, task.attempt)
        task.launched = True
        self._attempts[ref] = task
        prep = job.rest.get("jobPreparationTask")
        self.backend.start_attempt(
            TaskAttempt(
                ref=ref,
                node=node.layout,
                job_id=job.id,
                task_id=task.rest["id"],
                spec=copy.deepcopy(task.rest),
                job_environment=copy.deepcopy(job.rest.get("commonEnvironmentSettings") or []),
                preparation_task_id=prep["id"] if prep else None,
                timeout=duration_seconds(task.rest["constraints"].get("maxWallClockTime")),
                container_pool=self._container_pool(node),
            )
        )

    def _container_pool(self, node: NodeRecord) -> bool:
        pool = self.records.pools.get(node.pool_id.lower())
        return pool is not None and pool.container_configuration is not None

    def _ref(self, task: TaskRecord) -> AttemptRef:
        return AttemptRef(task.job_key, task.key, task.attempt)

    # ------------------------------------------------------------------ ending attempts (model commands)

    def kill(self, task: TaskRecord, reason: str) -> None:
        """End the task's attempt: "terminated", "deleted", "preempted" or "requeued" (its node leaves the pool)."""
        task.kill_reason = reason
        if task.launched:
            self.backend.kill_attempt(self._ref(task))
        elif task.state == "preparing":  # waiting for the preparation task: nothing of it runs yet
            self._end_killed(task, None)

    def _end_killed(self, task: TaskRecord, exit_code: int | None) -> bool:
        """After a kill: True when the attempt is fully handled (requeued, deleted, or terminated before its
        command ran); False for a terminated command, which still uploads its output files."""
        reason = task.kill_reason
        task.launched = False
        if reason in ("preempted", "requeued") and not self._stopping:
            info = task.rest["executionInfo"]
            info["requeueCount"] = info.get("requeueCount", 0) + 1
            info["lastRequeueTime"] = iso_now()
            task.kill_reason = None
            task.free_node()
            task.set_state("active")
            self._notify()
            return True
        if reason == "deleted" or task.deleted:
            job = self.records.jobs.get(task.job_key)
            if job is not None:
                self.retention.remove_now(job.id, task)
            task.free_node()
            self._notify()
            return True
        if exit_code is None:
            self._complete(task, None, ended_by_user())
            return True
        return False

    def terminate(self, task: TaskRecord) -> None:
        if task.state == "completed":
            return  # Batch accepts terminating a completed task as a no-op
        if task.state == "active":
            self._complete(task, None, ended_by_user())
        else:
            self.kill(task, "terminated")

    def _complete(self, task: TaskRecord, exit_code: int | None, failure: dict[str, Any] | None) -> None:
        """Final state: completed with result success/failure; frees the node's slots; may end the job."""
        task.launched = False
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
        task.free_node(succeeded=not failure)
        task.set_state("completed")
        self.retention.completed(task)
        job = self.records.jobs.get(task.job_key)
        if job is not None and not task.deleted:
            if failure and job.state == "active" and job.rest.get("onTaskFailure") == "performexitoptionsjobaction":
                if exit_job_action(task.rest.get("exitConditions"), exit_code, failure) == "terminate":
                    self.begin_terminate(job, "TaskFailed")
            self.maybe_complete_job(job)
        self._notify()

    # ------------------------------------------------------------------ ExecutionEvents: task attempts

    def node_ready(self, pool_id: str, node_id: str) -> None:
        with self.records.lock:
            node = self.records.find_node(pool_id, node_id)
            if node is not None and not node.ready:
                node.ready = True
                node.state_changed()
                if node.start_task and not self._stopping:
                    self._run_start_task(node)
                self._notify()

    def attempt_started(self, ref: AttemptRef) -> bool:
        with self.records.lock:
            task = self._attempts.get(ref)
            if task is None:
                return False
            if task.kill_reason:
                self._attempts.pop(ref, None)
                self._end_killed(task, None)
                return False
            task.set_state("running")
            info = task.rest["executionInfo"]
            info["startTime"] = iso_now()
            for key in ("endTime", "exitCode", "failureInfo", "result"):
                info.pop(key, None)
            if info.get("retryCount"):
                info["lastRetryTime"] = info["startTime"]
            return True

    def attempt_launched(self, ref: AttemptRef) -> None:
        with self.records.lock:
            task = self._attempts.get(ref)
            fraction = self.config.preempt_fraction
            if task is None or task.preempt_planned or fraction <= 0 or self._rng.random() >= fraction:
                return
            task.preempt_planned = True
        timer = threading.Timer(PREEMPT_DELAY_SECONDS, self._preempt, args=(ref,))
        timer.daemon = True
        timer.start()

    def _preempt(self, ref: AttemptRef) -> None:
        """On a Spot node the whole node is preempted (all its tasks requeued; pool_management starts it again
        later); on a dedicated node only the chosen task, as the fault option always did."""
        with self.records.lock:
            task = self._attempts.get(ref)
            if task is None or task.kill_reason is not None or self._stopping:
                return
            node = task.node
            if node is None or node.dedicated:
                self.kill(task, "preempted")
                return
            node.preempted_at = time.monotonic()
            node.state_transition_time = iso_now()
            for job_key, task_key in sorted(node.running_tasks):
                victim = self.records.live_task(job_key, task_key)
                if victim is not None and victim.kill_reason is None:
                    self.kill(victim, "preempted")

    def attempt_failed(self, ref: AttemptRef, failure: dict[str, Any]) -> None:
        with self.records.lock:
            task = self._attempts.pop(ref, None)
            if task is None or self._stopping:
                return
            if task.kill_reason:
                self._end_killed(task, None)
            elif task.state != "completed":
                self._complete(task, None, failure)

    def attempt_exited(self, ref: AttemptRef, exit_code: int, timed_out: bool) -> tuple[int, dict | None] | None:
        with self.records.lock:
            task = self._attempts.get(ref)
            if task is None or self._stopping:
                return None
            if task.kill_reason:
                if self._end_killed(task, exit_code):
                    self._attempts.pop(ref, None)
                    return None
                return exit_code, ended_by_user()
            if timed_out:
                return WALL_CLOCK_EXIT_CODE, wall_clock_failure()
            if exit_code == 0:
                return exit_code, None
            max_retries = int(task.rest["constraints"].get("maxTaskRetryCount", 0))
            info = task.rest["executionInfo"]
            if max_retries == -1 or info["retryCount"] < max_retries:
                self._attempts.pop(ref, None)
                info["retryCount"] += 1
                info["exitCode"] = exit_code
                task.launched = False
                task.free_node()
                task.set_state("active")
                self._notify()
                return None
            return exit_code, exit_failure()

    def attempt_completed(self, ref: AttemptRef, exit_code: int | None, failure: dict[str, Any] | None) -> None:
        with self.records.lock:
            task = self._attempts.pop(ref, None)
            if task is None or self._stopping:
                return
            if task.kill_reason == "deleted" or task.deleted:
                task.launched = False
                task.free_node()
                self._notify()
                return
            self._complete(task, exit_code, failure)

    # ------------------------------------------------------------------ job transitions

    def begin_terminate(self, job: JobRecord, reason: str) -> None:
        """Terminating: stop running tasks, run release tasks, then completed (`advance_finishing`)."""
        job.set_state("terminating")
        job.rest["executionInfo"]["terminateReason"] = reason
        self._stop_job_work(job, "terminated")

    def begin_delete(self, job: JobRecord) -> None:
        job.set_state("deleting")
        self._stop_job_work(job, "deleted")

    def _stop_job_work(self, job: JobRecord, reason: str) -> None:
        for task in list(job.tasks.values()):
            if task.state in ("running", "preparing"):
                self.kill(task, reason)
        for node_id, rec in job.prep_by_node.items():
            if rec.running == "preparation":
                self.backend.kill_job_task(JobTaskRef(job.key, node_id, "preparation", rec.run))
        self.advance_finishing(job)
        self._notify()

    def maybe_complete_job(self, job: JobRecord) -> None:
        """onAllTasksComplete=terminatejob: terminate once every task completed."""
        if job.state != "active" or job.rest.get("onAllTasksComplete") != "terminatejob":
            return
        if job.all_tasks_completed():
            self.begin_terminate(job, "AllTasksComplete")

    def advance_finishing(self, job: JobRecord) -> None:
        """A terminating/deleting job: once no task or preparation runs, run the release tasks, then end."""
        if job.state not in ("terminating", "deleting") or job.deleted or self._stopping:
            return
        if job.has_running_tasks() or any(rec.running for rec in job.prep_by_node.values()):
            return
        if job.rest.get("jobReleaseTask") and not job.releasing:
            job.releasing = True  # Batch runs the release task when an active job is deleted too
            for node_id, rec in job.prep_by_node.items():
                node = self.records.find_node(job.pool_key, node_id)
                if node is not None and rec.release is None:
                    self._start_job_task(job, node, rec, "release")
            if any(rec.running for rec in job.prep_by_node.values()):
                return
        if job.state == "terminating":
            job.set_state("completed")
            job.rest["executionInfo"]["endTime"] = iso_now()
        else:
            job.deleted = True
            if self.records.jobs.get(job.key) is job:
                del self.records.jobs[job.key]
            pool = self.records.pools.get(job.pool_key.lower())
            if pool is not None:
                self.retention.job_deleted(job.id, [node.layout for node in pool.nodes])
        self._notify()
