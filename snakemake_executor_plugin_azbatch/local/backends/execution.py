"""The seam between the model and whatever executes tasks on nodes: the `ExecutionBackend` protocol.

The model (`lifecycle.TaskLifecycle`) decides what runs where and when; a backend only executes and reports back
through `ExecutionEvents`, the model's public report methods. Every call into a backend is non-blocking; reports
may come from any thread. A backend never sees a model record, only the value objects below.

Backends: `host_backend.HostProcessBackend` (processes on the host) and `stock_backend.StockNodeBackend` (processes
in the stock node image, `--node-image`). Backends that run real processes share the Batch semantics of
`node_agent.NodeAgent` (resource files, application packages, output files, wall clock, start tasks, containers on
container-enabled pools) and override only `NodeAgent.launch` — how to run argv with env in cwd on a node as a user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..nodes.node_layout import NodeLayout


@dataclass(frozen=True)
class AttemptRef:
    """One attempt of one task (the model numbers attempts; a report about an old attempt is ignored)."""

    job_key: str
    task_key: str
    attempt: int


@dataclass(frozen=True)
class ProcessUsage:
    """What a task's processes used (the rusage of its process and every descendant it waited for), for Batch's
    task statistics; None from a backend that cannot tell (a container's processes belong to podman)."""

    user_seconds: float
    kernel_seconds: float
    read_ops: int = 0  # block input operations
    write_ops: int = 0
    read_bytes: int = 0
    write_bytes: int = 0


@dataclass(frozen=True)
class TaskAttempt:
    """What a backend needs to run one attempt of a task."""

    ref: AttemptRef
    node: NodeLayout
    job_id: str
    task_id: str
    spec: dict[str, Any]  # the task's REST definition (a copy): commandLine, resourceFiles, outputFiles, ...
    job_environment: list[dict[str, Any]]  # the job's commonEnvironmentSettings
    preparation_task_id: str | None  # set when the job has a preparation task (AZ_BATCH_JOB_PREP_DIR)
    timeout: float | None  # seconds of wall clock (maxWallClockTime), None for unlimited
    container_pool: bool = False  # the node's pool is container-enabled (containerConfiguration)


@dataclass(frozen=True)
class JobTaskRef:
    job_key: str
    node_id: str
    kind: str  # "preparation" | "release"
    run: int


@dataclass(frozen=True)
class JobTaskRun:
    """One run of a job preparation or release task on one node."""

    ref: JobTaskRef
    node: NodeLayout
    job_id: str
    task_id: str  # the preparation/release task's id (its directory name)
    spec: dict[str, Any]  # jobPreparationTask / jobReleaseTask (a copy)
    job_environment: list[dict[str, Any]]
    preparation_task_id: str | None
    timeout: float | None
    container_pool: bool = False


@dataclass(frozen=True)
class StartTaskRef:
    pool_id: str
    node_id: str
    run: int  # numbers the runs (retries), so a late report about an earlier run is ignored


@dataclass(frozen=True)
class StartTaskRun:
    """One run of the pool's start task on one node (directory `startup/`, no job)."""

    ref: StartTaskRef
    node: NodeLayout
    spec: dict[str, Any]  # the pool's startTask (a copy), Batch's defaults filled in
    container_pool: bool = False


class ExecutionEvents(Protocol):
    """The model's report methods: the only way a backend changes the model."""

    def node_ready(self, pool_id: str, node_id: str) -> None:
        """The node is up; the model then runs the pool's start task on it, if there is one."""

    def attempt_started(self, ref: AttemptRef) -> bool:
        """The attempt begins on the node (state running, startTime). False: stop, it was ended meanwhile."""

    def attempt_launched(self, ref: AttemptRef) -> None:
        """The command's process is running (the model may plan a preemption from here)."""

    def attempt_failed(self, ref: AttemptRef, failure: dict[str, Any]) -> None:
        """The attempt ended before its command ran (resource files, launch, a backend error): failureInfo."""

    def attempt_exited(
        self, ref: AttemptRef, exit_code: int, timed_out: bool, usage: ProcessUsage | None = None
    ) -> tuple[int, dict | None] | None:
        """The command ended (`usage`: what its processes used, for the task's statistics). None: nothing more to do (retried, requeued, deleted). Otherwise the final
        (exit code, failureInfo or None): upload output files, then report `attempt_completed`."""

    def attempt_completed(self, ref: AttemptRef, exit_code: int | None, failure: dict[str, Any] | None) -> None:
        """Output files are uploaded: the attempt's final result (an upload failure may replace a success)."""

    def job_task_finished(
        self, ref: JobTaskRef, exit_code: int | None, failure: dict[str, Any] | None, timed_out: bool
    ) -> None:
        """A preparation/release run ended (exit code None when it never started)."""

    def start_task_finished(self, ref: StartTaskRef, exit_code: int | None, failure: dict[str, Any] | None) -> None:
        """A start task run ended (exit code None when it never started; failureInfo for that)."""


class ExecutionBackend(Protocol):
    """Runs what the model asks on the nodes. All methods return at once; results come through the events."""

    def bind(self, events: ExecutionEvents) -> None:
        """Called once, before `start`, with the model's report methods."""

    def start(self) -> None: ...

    def stop(self) -> None:
        """Kill everything still running; report nothing afterwards."""

    def start_node(self, node: NodeLayout) -> None:
        """Bring a node up (directories, its system); report `node_ready` when it is up."""

    def start_attempt(self, attempt: TaskAttempt) -> None: ...

    def kill_attempt(self, ref: AttemptRef) -> None:
        """End the attempt's command (terminate, delete, preempt); it then reports `attempt_exited`/`_failed`."""

    def run_job_task(self, run: JobTaskRun) -> None: ...

    def kill_job_task(self, ref: JobTaskRef) -> None: ...

    def run_start_task(self, run: StartTaskRun) -> None:
        """Run the start task on run.node; report `start_task_finished` (retries are the model's decision)."""
