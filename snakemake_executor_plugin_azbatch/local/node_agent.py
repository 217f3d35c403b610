"""`NodeAgent`: the Batch semantics a node agent applies around a task's process, shared by process backends.

For each attempt (and each job preparation/release run) it creates the task directory, builds the environment
(`node_layout`), installs application packages once per node, downloads resource files, starts the command
WITHOUT a shell (split with `shlex`, as Batch does) through `launch`, enforces the wall clock, and uploads output
files; it reports through the model's `ExecutionEvents`. Subclasses choose only how a process is started on a node:
`launch(Launch) -> RunningProcess` and the node's base environment (`base_environment`).
"""

from __future__ import annotations

import logging
import shlex
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .blob_transfer import TransferError, download_resource_files, record_uploads, redact_text, upload_output_files
from .config import ServiceConfig
from .execution import AttemptRef, ExecutionEvents, JobTaskRef, JobTaskRun, TaskAttempt
from .node_layout import NodeLayout, app_package_env_name, merge_settings
from .task_outcomes import node_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """How to run one command on a node: argv with env in cwd, as the task's user, output to two files."""

    node: NodeLayout
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stdout: Path
    stderr: Path
    user_identity: dict[str, Any] | None  # the task's userIdentity (autoUser scope/elevationLevel)
    container: dict[str, Any] | None  # the task's containerSettings, if any


class RunningProcess(Protocol):
    def wait(self, timeout: float | None) -> int | None:
        """The exit code (death by signal N as 128 + N); None when `timeout` seconds passed first."""

    def kill(self) -> None:
        """Kill the command and everything it started."""


def launch_failure(err: Exception) -> dict[str, Any]:
    if isinstance(err, FileNotFoundError):
        return {"category": "usererror", "code": "CommandProgramNotFound",
                "message": f"The program specified in the task's command line was not found: {err.filename}"}
    return {"category": "usererror", "code": "CommandLaunchFailed",
            "message": redact_text(f"The task's command line could not be launched: {err}")}


class NodeAgent:
    """An `ExecutionBackend` that runs real processes; subclasses implement `launch` and `base_environment`."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.events: ExecutionEvents | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._processes: dict[AttemptRef | JobTaskRef, RunningProcess] = {}
        self._kills: set[AttemptRef | JobTaskRef] = set()  # asked to die, perhaps before their process started
        self._threads: list[threading.Thread] = []
        self._app_locks: dict[Path, threading.Lock] = {}
        self._installed_apps: dict[tuple[Path, str], Path] = {}

    # ------------------------------------------------------------------ the seam subclasses fill

    def launch(self, launch: Launch) -> RunningProcess:
        raise NotImplementedError

    def base_environment(self, node: NodeLayout) -> dict[str, str]:
        """Variables of the node image (PATH, HOME, locale) under the Batch ones."""
        return {}

    # ------------------------------------------------------------------ ExecutionBackend

    def bind(self, events: ExecutionEvents) -> None:
        self.events = events

    def start(self) -> None:
        pass

    def stop(self) -> None:
        """Kill every process this agent started; report nothing afterwards."""
        self._stopping.set()
        self._kill_all()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._kill_all()  # started while stopping

    def start_node(self, node: NodeLayout) -> None:
        node.create()
        self._report().node_ready(node.pool_id, node.node_id)

    def start_attempt(self, attempt: TaskAttempt) -> None:
        self._spawn(self._run_attempt, attempt, name=f"task-{attempt.job_id}-{attempt.task_id}")

    def kill_attempt(self, ref: AttemptRef) -> None:
        self._kill(ref)

    def run_job_task(self, run: JobTaskRun) -> None:
        self._spawn(self._run_job_task, run, name=f"{run.ref.kind}-{run.job_id}-{run.node.node_id}")

    def kill_job_task(self, ref: JobTaskRef) -> None:
        self._kill(ref)

    # ------------------------------------------------------------------ processes

    def _report(self) -> ExecutionEvents:
        if self.events is None:
            raise RuntimeError("NodeAgent used before bind()")
        return self.events

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _kill(self, key: AttemptRef | JobTaskRef) -> None:
        with self._lock:
            self._kills.add(key)
            process = self._processes.get(key)
        if process is not None:
            process.kill()

    def _kill_all(self) -> None:
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.kill()

    def _run(self, key: AttemptRef | JobTaskRef, launch: Launch, timeout: float | None) -> tuple[int, bool]:
        """Launch, register for kills, wait with the wall clock. (exit code, timed out); OSError if no start."""
        process = self.launch(launch)
        with self._lock:
            self._processes[key] = process
            doomed = key in self._kills or self._stopping.is_set()
        if doomed:
            process.kill()
        if isinstance(key, AttemptRef):
            self._report().attempt_launched(key)
        try:
            code = process.wait(timeout)
            timed_out = code is None
            if code is None:
                process.kill()
                code = process.wait(None)
        finally:
            with self._lock:
                self._processes.pop(key, None)
                self._kills.discard(key)
        return int(code if code is not None else -1), timed_out

    def _environment(
        self, node: NodeLayout, job_id: str, task_id: str, prep_id: str | None, job_env: list[dict[str, Any]]
    ) -> dict[str, str]:
        env = self.base_environment(node)
        env.update(node.task_environment(self.config.account_name, self._account_url(), job_id, task_id, prep_id))
        return merge_settings(env, job_env)

    def _account_url(self) -> str:
        return (self.config.account_url or f"http://{self.config.host}:{self.config.port}").rstrip("/")

    @staticmethod
    def _fresh_task_dir(tdir: Path) -> Path:
        (tdir / "wd").mkdir(parents=True, exist_ok=True)
        (tdir / "stdout.txt").write_bytes(b"")
        (tdir / "stderr.txt").write_bytes(b"")
        return tdir / "wd"

    # ------------------------------------------------------------------ one attempt of a task

    def _run_attempt(self, attempt: TaskAttempt) -> None:
        events = self._report()
        try:
            self._attempt(attempt, events)
        except Exception as err:  # a bug here must not leave the task running forever
            log.exception("local node error running task %s/%s", attempt.job_id, attempt.task_id)
            events.attempt_failed(attempt.ref, node_error(redact_text(f"local node error: {type(err).__name__}: {err}")))

    def _attempt(self, attempt: TaskAttempt, events: ExecutionEvents) -> None:
        if not events.attempt_started(attempt.ref):
            return
        spec, node = attempt.spec, attempt.node
        tdir = node.task_dir(attempt.job_id, attempt.task_id)
        wd = self._fresh_task_dir(tdir)
        env = self._environment(node, attempt.job_id, attempt.task_id, attempt.preparation_task_id,
                                attempt.job_environment)
        try:
            self._install_apps(node, spec.get("applicationPackageReferences") or [], env)
            download_resource_files(spec.get("resourceFiles") or [], wd, self.config.storage)
        except TransferError as err:
            events.attempt_failed(attempt.ref, {"category": "usererror", "code": err.code, "message": err.message})
            return
        merge_settings(env, spec.get("environmentSettings"))
        try:
            launch = Launch(node, shlex.split(spec["commandLine"]), env, wd, tdir / "stdout.txt", tdir / "stderr.txt",
                            spec.get("userIdentity"), spec.get("containerSettings"))
            exit_code, timed_out = self._run(attempt.ref, launch, attempt.timeout)
        except (OSError, ValueError) as err:
            events.attempt_failed(attempt.ref, launch_failure(err))
            return
        if self._stopping.is_set():  # the service is going away: no uploads, no state changes
            return
        verdict = events.attempt_exited(attempt.ref, exit_code, timed_out)
        if verdict is None:
            return
        exit_code, failure = verdict
        outputs = spec.get("outputFiles") or []
        if outputs:
            upload = upload_output_files(outputs, wd, env, failure is None, self.config.storage)
            failure = record_uploads(tdir, upload, failure)
        events.attempt_completed(attempt.ref, exit_code, failure)

    # ------------------------------------------------------------------ job preparation / release

    def _run_job_task(self, run: JobTaskRun) -> None:
        events = self._report()
        try:
            exit_code, failure, timed_out = self._job_task(run)
        except Exception as err:  # as for tasks: report instead of leaving the job waiting
            log.exception("local node error running the %s task of job %s", run.ref.kind, run.job_id)
            exit_code, failure, timed_out = None, node_error(f"local node error: {type(err).__name__}"), False
        if not self._stopping.is_set():
            events.job_task_finished(run.ref, exit_code, failure, timed_out)

    def _job_task(self, run: JobTaskRun) -> tuple[int | None, dict[str, Any] | None, bool]:
        tdir = run.node.task_dir(run.job_id, run.task_id)
        wd = self._fresh_task_dir(tdir)
        env = self._environment(run.node, run.job_id, run.task_id, run.preparation_task_id, run.job_environment)
        merge_settings(env, run.spec.get("environmentSettings"))
        try:
            download_resource_files(run.spec.get("resourceFiles") or [], wd, self.config.storage)
        except TransferError as err:
            return None, {"category": "usererror", "code": err.code, "message": err.message}, False
        try:
            launch = Launch(run.node, shlex.split(run.spec["commandLine"]), env, wd, tdir / "stdout.txt",
                            tdir / "stderr.txt", run.spec.get("userIdentity"), None)
            exit_code, timed_out = self._run(run.ref, launch, run.timeout)
        except (OSError, ValueError) as err:
            return None, launch_failure(err), False
        return exit_code, None, timed_out

    # ------------------------------------------------------------------ application packages

    def _install_apps(self, node: NodeLayout, refs: list[dict[str, Any]], env: dict[str, str]) -> None:
        """Extract referenced packages once per node into applications/ and export AZ_BATCH_APP_PACKAGE_*."""
        for ref in refs:
            app_id = str(ref.get("applicationId", "")).rsplit("/", 1)[-1]
            version = ref.get("version")
            specs = [s for s in self.config.app_packages if s.name.lower() == app_id.lower()]
            if version:
                specs = [s for s in specs if s.version == version]
            if not specs:
                raise TransferError(
                    "ApplicationPackageError",
                    f"Application package {app_id}{' version ' + version if version else ''} is not available; "
                    "start the service with --app-package NAME:VERSION=ZIP",
                )
            spec = specs[-1]
            key = f"{spec.name}#{spec.version}"
            with self._lock:
                node_lock = self._app_locks.setdefault(node.root, threading.Lock())
            with node_lock:
                target = self._installed_apps.get((node.root, key))
                if target is None:
                    target = node.applications_dir / f"{spec.name}_{spec.version}"
                    try:
                        with zipfile.ZipFile(spec.zip_path) as archive:
                            archive.extractall(target)
                    except (OSError, zipfile.BadZipFile) as err:
                        raise TransferError("ApplicationPackageError",
                                            f"Application package {key} could not be extracted: {err}") from None
                    self._installed_apps[(node.root, key)] = target
            env[app_package_env_name(spec.name, spec.version)] = str(target)
            if not version:
                env[app_package_env_name(spec.name, None)] = str(target)
