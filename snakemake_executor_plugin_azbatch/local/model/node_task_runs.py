"""The runs of the task state machine that belong to a node rather than to a task: the pool's start task on each node
(retries, `startTaskInfo`, the node's state while it runs) and each job's preparation and release tasks (once per
node per job, before the job's first task there; release after the job ends). Part of `TaskLifecycle`."""

from __future__ import annotations

import copy
from typing import Any

from ..backends.execution import (
    JobTaskRef,
    JobTaskRun,
    StartTaskRef,
    StartTaskRun,
)
from ..backends.task_outcomes import (
    WALL_CLOCK_EXIT_CODE,
    exit_failure,
    wall_clock_failure,
)
from .batch_records import JobRecord, PrepRecord
from .pool_records import NodeRecord
from .timestamps import duration_seconds, iso_now

RELEASE_DEFAULT_SECONDS = 900


class NodeTaskRuns:
    """Start, preparation and release runs: a part of `lifecycle.TaskLifecycle` (its records, backend, lock)."""

    def _run_start_task(self, node: NodeRecord) -> None:
        assert node.start_task is not None
        now = iso_now()
        retry = node.start_task_info["retryCount"] + 1 if node.start_task_info else 0
        node.start_task_info = {"state": "running", "startTime": now, "retryCount": retry}
        if retry:
            node.start_task_info["lastRetryTime"] = now
        node.start_task_run += 1
        self.backend.run_start_task(
            StartTaskRun(
                ref=StartTaskRef(node.pool_id, node.id, node.start_task_run),
                node=node.layout,
                spec=copy.deepcopy(node.start_task),
                container_pool=self._container_pool(node),
            )
        )

    def start_task_finished(self, ref: StartTaskRef, exit_code: int | None, failure: dict[str, Any] | None) -> None:
        with self.records.lock:
            node = self.records.find_node(ref.pool_id, ref.node_id)
            if node is None or node.start_task is None or node.start_task_run != ref.run or self._stopping:
                return
            if failure is None and exit_code not in (0, None):
                failure = exit_failure()
            max_retries = int(node.start_task.get("maxTaskRetryCount", 0))
            retryable = failure is not None and failure.get("code") == "FailureExitCode"
            if retryable and (max_retries == -1 or node.start_task_info["retryCount"] < max_retries):
                self._run_start_task(node)  # Batch retries application failures, not pre-processing errors
                return
            _record_completion(node.start_task_info, exit_code, failure)
            node.state_changed()
            self._notify()


    def _start_job_task(self, job: JobRecord, node: NodeRecord, rec: PrepRecord, kind: str) -> None:
        spec = job.rest["jobPreparationTask" if kind == "preparation" else "jobReleaseTask"]
        rel = node.layout.relative(node.layout.task_dir(job.id, spec["id"]))
        now = iso_now()
        info: dict[str, Any] = {
            "state": "running",
            "startTime": now,
            "taskRootDirectory": rel,
            "taskRootDirectoryUrl": f"{self.records.node_url(node)}/files/{rel}",
        }
        if kind == "preparation":
            retry = rec.prep["retryCount"] + 1 if rec.prep else 0
            info["retryCount"] = retry
            if retry:
                info["lastRetryTime"] = now
            rec.prep = info
            timeout = duration_seconds((spec.get("constraints") or {}).get("maxWallClockTime"))
        else:
            rec.release = info
            timeout = duration_seconds(spec.get("maxWallClockTime")) or RELEASE_DEFAULT_SECONDS
        rec.run += 1
        rec.running = kind
        prep = job.rest.get("jobPreparationTask")
        self.backend.run_job_task(
            JobTaskRun(
                ref=JobTaskRef(job.key, node.id, kind, rec.run),
                node=node.layout,
                job_id=job.id,
                task_id=spec["id"],
                spec=copy.deepcopy(spec),
                job_environment=copy.deepcopy(job.rest.get("commonEnvironmentSettings") or []),
                preparation_task_id=prep["id"] if prep else None,
                timeout=timeout,
                container_pool=self._container_pool(node),
            )
        )

    def _start_preparation(self, job: JobRecord, node: NodeRecord) -> None:
        self._start_job_task(job, node, job.prep_by_node.setdefault(node.id, PrepRecord()), "preparation")

    def job_task_finished(
        self, ref: JobTaskRef, exit_code: int | None, failure: dict[str, Any] | None, timed_out: bool
    ) -> None:
        with self.records.lock:
            job = self.records.jobs.get(ref.job_key)
            rec = job.prep_by_node.get(ref.node_id) if job is not None else None
            if job is None or rec is None or rec.run != ref.run or self._stopping:
                return
            rec.running = None
            if timed_out:
                exit_code, failure = WALL_CLOCK_EXIT_CODE, wall_clock_failure()
            elif failure is None and exit_code not in (0, None):
                failure = exit_failure()
            node = self.records.find_node(job.pool_key, ref.node_id)
            if ref.kind == "preparation":
                spec = job.rest["jobPreparationTask"]
                max_retries = int((spec.get("constraints") or {}).get("maxTaskRetryCount", 0))
                retryable = failure is not None and failure.get("code") == "FailureExitCode"
                if retryable and job.state == "active" and node is not None and (
                    max_retries == -1 or rec.prep["retryCount"] < max_retries
                ):
                    self._start_preparation(job, node)
                    return
                _record_completion(rec.prep, exit_code, failure)
                rec.done, rec.succeeded = True, failure is None
                if node is not None:
                    self._after_preparation(job, node, rec)
            else:
                _record_completion(rec.release or {}, exit_code, failure)
            self.advance_finishing(job)
            self._notify()

    def _after_preparation(self, job: JobRecord, node: NodeRecord, rec: PrepRecord) -> None:
        """Launch the tasks that waited on this node for the preparation task, or — when it failed and they must
        wait for success — send them back to `active` for other nodes (this node is now excluded for the job)."""
        candidates = job.waiting_for_prep.pop(node.id, {}).values()
        waiting = [t for t in candidates if t.node is node and t.state == "preparing" and not t.launched]
        for task in sorted(waiting, key=lambda t: t.seq):
            if not task.holds_node:
                continue
            if task.kill_reason:
                self._end_killed(task, None)
            elif job.excludes_node(node.id):
                task.free_node()
                task.set_state("active")
            elif job.state == "active":
                self._launch(job, task, node)

def _record_completion(info: dict[str, Any], exit_code: int | None, failure: dict | None) -> None:
    """Complete a job preparation/release execution-info dict."""
    info.update({"state": "completed", "endTime": iso_now(), "result": "failure" if failure else "success"})
    if exit_code is not None:
        info["exitCode"] = exit_code
    if failure:
        info["failureInfo"] = failure
