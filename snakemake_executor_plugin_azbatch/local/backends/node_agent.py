"""`NodeAgent`: the Batch semantics a node agent applies around a task's process, shared by process backends.

For each attempt (and each job preparation/release run and start task run) it creates the task directory, builds
the environment (`node_layout`), checks that the task and its pool agree about containers (Batch's
ContainerPoolNotSupported / ContainerTaskSettingsNotFound), installs application packages once per node, downloads
resource files, starts the command WITHOUT a shell (split with `shlex`, as Batch does) through `launch`, enforces
the wall clock, and uploads output files; it reports through the model's `ExecutionEvents`. Subclasses choose only
how a process is started on a node: `launch(Launch) -> RunningProcess` and the node's base environment
(`base_environment`, not given to containers: a container keeps its image's PATH and HOME). Tasks with
containerSettings on a container-enabled pool run in podman (`launch_container`), from the store
`config.podman_store_dir()`; a pool that is container-enabled needs the Debian packages podman and runc.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
import threading
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..service_config import BoundEndpoints, ServiceConfig
from ..nodes import containers
from ..nodes.node_layout import NodeLayout, app_package_env_name, merge_settings, user_identity_name
from .blob_transfer import TransferError, download_resource_files, redact_text
from .blob_uploads import UploadRetry, record_uploads, upload_output_files
from .execution import (
    AttemptRef,
    ExecutionEvents,
    JobTaskRef,
    JobTaskRun,
    StartTaskRef,
    StartTaskRun,
    TaskAttempt,
)
from .node_processes import ContainerProcess, Launch, RunningProcess, launch_failure, start_process
from .task_outcomes import node_error

ProcessKey = AttemptRef | JobTaskRef | StartTaskRef

log = logging.getLogger(__name__)


class NodeAgent:
    """An `ExecutionBackend` that runs real processes; subclasses implement `launch` and `base_environment`."""

    confine_outputs = False  # True: output files must lie under the node's root (its host-visible directories)

    def __init__(self, config: ServiceConfig, endpoints: BoundEndpoints | None = None) -> None:
        self.config = config
        self.endpoints = endpoints or BoundEndpoints.unbound(config)
        self.events: ExecutionEvents | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._processes: dict[ProcessKey, RunningProcess] = {}
        self._kills: set[ProcessKey] = set()  # asked to die, perhaps before their process started
        self._threads: list[threading.Thread] = []
        self._app_locks: dict[Path, threading.Lock] = {}
        self._installed_apps: dict[tuple[Path, str], Path] = {}
        self.podman: containers.PodmanEngine | None = None
        if any(p.container_enabled for p in config.pools):  # podman is there: ServiceConfig.validate checked
            self.podman = containers.PodmanEngine(config.podman_store_dir())

    # ------------------------------------------------------------------ the seam subclasses fill

    def launch(self, launch: Launch) -> RunningProcess:
        raise NotImplementedError

    def base_environment(self, node: NodeLayout) -> dict[str, str]:
        """Variables of the node image (PATH, HOME, locale) under the Batch ones (not given to containers)."""
        return {}

    def launch_container(self, launch: Launch, *, user: tuple[int, int], network: str) -> RunningProcess:
        """Run `launch` in its containerSettings' image with podman, as `user` (uid, gid), on `network`
        ("host" or a network namespace path). ContainerTaskFailure when the image is absent or settings are bad."""
        assert self.podman is not None and launch.container is not None  # checked against the pool first
        containers.check_image(self.podman, launch.container.get("imageName") or "")
        name = f"azbatch-{launch.node.node_id}-{uuid.uuid4().hex[:12]}"
        command = containers.container_launch(
            self.podman, launch.container, launch.argv, env=launch.env, node_root=launch.node.root, user=user,
            name=name, network=network,
        )  # fmt: skip
        return ContainerProcess(start_process(command.argv, command.env, launch), self.podman, name)

    # ------------------------------------------------------------------ ExecutionBackend

    def bind(self, events: ExecutionEvents) -> None:
        self.events = events

    def start(self) -> None:
        if self.podman is not None:
            self.podman.prepare()

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

    def run_start_task(self, run: StartTaskRun) -> None:
        self._spawn(self._run_start_task, run, name=f"starttask-{run.node.node_id}")

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

    def _kill(self, key: ProcessKey) -> None:
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

    def _run(self, key: ProcessKey, launch: Launch, timeout: float | None) -> tuple[int, bool]:
        """Launch, register for kills, wait with the wall clock. (exit code, timed out); OSError if no start."""
        if launch.container is None:
            launch = replace(launch, env={**self.base_environment(launch.node), **launch.env})
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
        env = node.task_environment(self.config.account_name, self._account_url(), job_id, task_id, prep_id)
        return merge_settings(env, job_env)

    def _account_url(self) -> str:
        return self.endpoints.account_url.rstrip("/")

    @staticmethod
    def _fresh_task_dir(tdir: Path) -> Path:
        (tdir / "wd").mkdir(parents=True, exist_ok=True)
        (tdir / "stdout.txt").write_bytes(b"")
        (tdir / "stderr.txt").write_bytes(b"")
        return tdir / "wd"

    def _execute(
        self, key: ProcessKey, node: NodeLayout, tdir: Path, spec: dict[str, Any], env: dict[str, str],
        *, container_pool: bool, ordinary: bool, timeout: float | None,
    ) -> tuple[int | None, dict[str, Any] | None, bool]:
        """What the node agent does for any task: fresh directory, container/pool check, application packages,
        resource files, environment settings, then the command. (exit code, None, timed out) when it ran;
        (None, failureInfo, False) when it could not (nothing of the command ran)."""
        wd = self._fresh_task_dir(tdir)
        settings = spec.get("containerSettings")
        env["AZ_BATCH_TASK_USER_IDENTITY"] = user_identity_name(spec.get("userIdentity"))
        try:
            containers.check_pool_support(container_pool, settings, ordinary_task=ordinary)
            self._install_apps(node, spec.get("applicationPackageReferences") or [], env)
            download_resource_files(spec.get("resourceFiles") or [], wd, self.endpoints.storage)
        except containers.ContainerTaskFailure as err:
            return None, err.failure_info, False
        except TransferError as err:
            return None, {"category": "usererror", "code": err.code, "message": err.message}, False
        merge_settings(env, spec.get("environmentSettings"))
        try:
            launch = Launch(node, shlex.split(spec["commandLine"]), env, wd, tdir / "stdout.txt", tdir / "stderr.txt",
                            spec.get("userIdentity"), settings)
            exit_code, timed_out = self._run(key, launch, timeout)
        except containers.ContainerTaskFailure as err:
            return None, err.failure_info, False
        except (OSError, ValueError) as err:
            return None, launch_failure(err), False
        return exit_code, None, timed_out

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
        env = self._environment(node, attempt.job_id, attempt.task_id, attempt.preparation_task_id,
                                attempt.job_environment)
        exit_code, failure, timed_out = self._execute(
            attempt.ref, node, tdir, spec, env, container_pool=attempt.container_pool, ordinary=True,
            timeout=attempt.timeout,
        )  # fmt: skip
        if exit_code is None:
            events.attempt_failed(attempt.ref, failure or node_error("the task did not start"))
            return
        if self._stopping.is_set():  # the service is going away: no uploads, no state changes
            return
        verdict = events.attempt_exited(attempt.ref, exit_code, timed_out)
        if verdict is None:
            return
        exit_code, failure = verdict
        outputs = spec.get("outputFiles") or []
        if outputs:
            retry = UploadRetry(self.config.node_upload_retry_seconds, self._stopping.is_set)
            upload = upload_output_files(outputs, tdir / "wd", env, failure is None, self.endpoints.storage,
                                         confine=node.root if self.confine_outputs else None, retry=retry)
            failure = record_uploads(tdir, upload, failure)
        events.attempt_completed(attempt.ref, exit_code, failure)

    # ------------------------------------------------------------------ job preparation / release, start tasks

    def _run_job_task(self, run: JobTaskRun) -> None:
        events = self._report()
        try:
            tdir = run.node.task_dir(run.job_id, run.task_id)
            env = self._environment(run.node, run.job_id, run.task_id, run.preparation_task_id, run.job_environment)
            exit_code, failure, timed_out = self._execute(
                run.ref, run.node, tdir, run.spec, env, container_pool=run.container_pool, ordinary=False,
                timeout=run.timeout,
            )  # fmt: skip
        except Exception as err:  # as for tasks: report instead of leaving the job waiting
            log.exception("local node error running the %s task of job %s", run.ref.kind, run.job_id)
            exit_code, failure, timed_out = None, node_error(f"local node error: {type(err).__name__}"), False
        if not self._stopping.is_set():
            events.job_task_finished(run.ref, exit_code, failure, timed_out)

    def _run_start_task(self, run: StartTaskRun) -> None:
        """The pool's start task in the node's `startup/` directory (no wall clock: Batch gives it none)."""
        events = self._report()
        try:
            env = run.node.start_task_environment(self.config.account_name, self._account_url())
            exit_code, failure, _ = self._execute(
                run.ref, run.node, run.node.startup_dir, run.spec, env, container_pool=run.container_pool,
                ordinary=False, timeout=None,
            )  # fmt: skip
        except Exception as err:  # a node left waiting for its start task forever would be worse
            log.exception("local node error running the start task on %s", run.node.node_id)
            exit_code, failure = None, node_error(f"local node error: {type(err).__name__}")
        if not self._stopping.is_set():
            events.start_task_finished(run.ref, exit_code, failure)

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
                            extract_keeping_modes(archive, target)
                    except (OSError, zipfile.BadZipFile) as err:
                        raise TransferError("ApplicationPackageError",
                                            f"Application package {key} could not be extracted: {err}") from None
                    self._installed_apps[(node.root, key)] = target
            env[app_package_env_name(spec.name, spec.version)] = str(target)
            if not version:
                env[app_package_env_name(spec.name, None)] = str(target)


def extract_keeping_modes(archive: zipfile.ZipFile, target: Path) -> None:
    """Extract like Info-ZIP's unzip on Linux: each member's Unix permission bits (external_attr, when the zip was
    made on Unix) are kept, so a package's bin/ stays executable. Batch does not document what its Linux nodes
    do; zipfile's extractall alone drops every mode bit. Set-id and sticky bits and symlink entries are not
    honoured (zipfile writes a link as a plain file)."""
    modes = []
    for member in archive.infolist():
        path = archive.extract(member, target)
        mode = member.external_attr >> 16
        if member.create_system == 3 and stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR) and mode & 0o777:
            modes.append((path, mode & 0o777))
    for path, mode in reversed(modes):  # directories after their contents: a read-only one must not block them
        os.chmod(path, mode)
