"""`FakeBackend`: an execution backend that runs nothing; a test decides when and how each attempt ends.

For model tests where a real process adds nothing (retries, kills, preparation/release order, stale reports). It
reports through the model's public `ExecutionEvents`, exactly as a real backend must.
"""

from __future__ import annotations

import threading
from typing import Any

from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.backends.execution import (
    AttemptRef,
    ExecutionEvents,
    JobTaskRef,
    JobTaskRun,
    StartTaskRun,
    TaskAttempt,
)
from snakemake_executor_plugin_azbatch.local.nodes.node_layout import NodeLayout

WAIT_SECONDS = 10


class FakeBackend:
    def __init__(self) -> None:
        self.events: ExecutionEvents | None = None
        self.nodes: list[NodeLayout] = []
        self.attempts: list[TaskAttempt] = []
        self.job_tasks: list[JobTaskRun] = []
        self.start_tasks: list[StartTaskRun] = []
        self.kills: list[AttemptRef | JobTaskRef] = []
        self.stopped = False
        self._lock = threading.Lock()

    # -- ExecutionBackend ----------------------------------------------------------------------------------

    def bind(self, events: ExecutionEvents) -> None:
        self.events = events

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True

    def start_node(self, node: NodeLayout) -> None:
        self.nodes.append(node)
        assert self.events is not None
        self.events.node_ready(node.pool_id, node.node_id)

    def start_attempt(self, attempt: TaskAttempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def kill_attempt(self, ref: AttemptRef) -> None:
        with self._lock:
            self.kills.append(ref)

    def run_job_task(self, run: JobTaskRun) -> None:
        with self._lock:
            self.job_tasks.append(run)

    def kill_job_task(self, ref: JobTaskRef) -> None:
        with self._lock:
            self.kills.append(ref)

    def run_start_task(self, run: StartTaskRun) -> None:
        with self._lock:
            self.start_tasks.append(run)

    # -- driving it from a test ----------------------------------------------------------------------------

    def attempt(self, task_id: str, number: int = 1) -> TaskAttempt:
        """The `number`-th attempt handed over for `task_id` (waits for the scheduler)."""

        def found() -> TaskAttempt | None:
            with self._lock:
                mine = [a for a in self.attempts if a.task_id == task_id]
            return mine[number - 1] if len(mine) >= number else None

        return wait_for(found, WAIT_SECONDS, lambda: f"attempt {number} of {task_id} never started: {self.attempts}")

    def job_task(self, kind: str, number: int = 1) -> JobTaskRun:
        def found() -> JobTaskRun | None:
            with self._lock:
                mine = [r for r in self.job_tasks if r.ref.kind == kind]
            return mine[number - 1] if len(mine) >= number else None

        return wait_for(found, WAIT_SECONDS, lambda: f"{kind} run {number} never started: {self.job_tasks}")

    def start_task(self, node_id: str, number: int = 1) -> StartTaskRun:
        """The `number`-th start task run handed over for node `node_id`."""

        def found() -> StartTaskRun | None:
            with self._lock:
                mine = [r for r in self.start_tasks if r.ref.node_id == node_id]
            return mine[number - 1] if len(mine) >= number else None

        return wait_for(found, WAIT_SECONDS, lambda: f"start task run {number} on {node_id} never started")

    def finish_start_task(self, run: StartTaskRun, exit_code: int | None = 0, failure: dict | None = None) -> None:
        assert self.events is not None
        self.events.start_task_finished(run.ref, exit_code, failure)

    def finish(self, attempt: TaskAttempt, exit_code: int = 0, *, timed_out: bool = False,
               upload_failure: dict[str, Any] | None = None) -> tuple[int, dict | None] | None:
        """Run the attempt to its end as a node agent would: started, exited, (outputs uploaded,) completed."""
        assert self.events is not None
        if not self.events.attempt_started(attempt.ref):
            return None
        verdict = self.events.attempt_exited(attempt.ref, exit_code, timed_out)
        if verdict is not None:
            final_code, failure = verdict
            self.events.attempt_completed(attempt.ref, final_code, failure or upload_failure)
        return verdict

    def finish_job_task(self, run: JobTaskRun, exit_code: int = 0) -> None:
        assert self.events is not None
        self.events.job_task_finished(run.ref, exit_code, None, False)
