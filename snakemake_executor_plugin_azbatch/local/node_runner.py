"""Simulated Linux Batch nodes: slot scheduling, node directories, environment, processes, prep/release tasks.

Each node is a directory `ROOT/nodes/<pool>/<node>/` laid out like a Batch Linux node (`shared/`, `startup/`,
`applications/`, `workitems/<job>/job-1/<task>/{wd,stdout.txt,stderr.txt}`). A task runs as a local process
started WITHOUT a shell (the command line is split with `shlex`, as Batch does), in `wd/`, in its own process
group, with the AZ_BATCH_* variables of a Batch node plus the job's commonEnvironmentSettings and the task's
environmentSettings. The "node image" is the host: PATH is the host's with the directory of this Python first.

Choices where Batch is not documented, or where a local simulation differs:
- Scheduling is by job priority, then FIFO by submission order over all jobs of a pool, skipping tasks that do not
  fit in the free slots (backfill); a job's maxParallelTasks is honoured. `spread` places a task on the node with the most free slots, `pack` on the fullest node that fits.
- A retry (non-zero exit with retries left) or a preemption puts the task back to `active`; it is scheduled again.
- An exit caused by a signal is reported as exit code 128 + signal (the shell convention), e.g. 137 for SIGKILL.
- maxWallClockTime expiry: the process group is killed and, as Batch documents, the task completes with exit code
  0xC000013A (-1073741510 as the API's int32) and failureInfo {category servererror, code TaskEnded}; no retry.
- Terminate: the process group is killed, failureInfo code `TaskEnded` ("Task Was Ended by User Request").
- The job preparation task runs once per node per job, before that job's first task there. When it fails and
  waitForSuccess is true, the task that waited for it completes with failureInfo `JobPreparationTaskFailed`
  (Batch would keep it active for another node; failing keeps workflows on a one-node pool from hanging).
  With waitForSuccess false the prep task still runs first but its failure does not affect the task.
- The job release task runs when the job terminates or is deleted, once on every node that ran the preparation
  task.
- containerSettings: there is no container engine here. The task runs on the host and a warning line is written
  at the top of stderr.txt, so pipelines written for container pools keep working locally.
- Preemption (`preempt_fraction`, seeded): a chosen task is killed shortly after its command starts and requeued
  (state back to `active`, requeueCount + 1), once per task, as Batch does for a preempted Spot node.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blob_transfer import TransferError, download_resource_files, redact_text, upload_output_files
from .model import JobRecord, NodeRecord, PrepRecord, TaskRecord, ended_by_user, iso_now, task_dir_on

if TYPE_CHECKING:
    from .model import BatchState

PREEMPT_DELAY_SECONDS = 0.3
HOST_ENV_KEPT = ("HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR", "TZ")

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNLIMITED_SECONDS = 10 * 365 * 86400


def duration_seconds(text: str | None) -> float | None:
    """ISO-8601 duration (PnDTnHnMnS) in seconds; None when absent or effectively unlimited."""
    if not text:
        return None
    m = _DURATION.match(text)
    if not m:
        return None
    secs = (
        float(m.group("d") or 0) * 86400
        + float(m.group("h") or 0) * 3600
        + float(m.group("m") or 0) * 60
        + float(m.group("s") or 0)
    )
    return None if secs >= _UNLIMITED_SECONDS else secs


def app_package_env_name(name: str, version: str | None) -> str:
    """Batch's Linux naming: case preserved, '.', '-' and '#' flattened to '_'."""
    flat = re.sub(r"[.#-]", "_", name)
    return f"AZ_BATCH_APP_PACKAGE_{flat}" + (f"_{re.sub(r'[.#-]', '_', version)}" if version else "")


class NodeRunner:
    def __init__(self, state: BatchState) -> None:
        self.state = state
        self.config = state.config
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._live: set[subprocess.Popen] = set()
        self._scheduler: threading.Thread | None = None
        self._rng = random.Random(self.config.seed)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._scheduler = threading.Thread(target=self._schedule_loop, name="azbatch-scheduler", daemon=True)
        self._scheduler.start()

    def stop(self) -> None:
        """Stop scheduling and kill every process group this runner started."""
        self._stopping.set()
        with self.state.lock:
            self.state.changed.notify_all()
            live = list(self._live)
        for proc in live:
            _kill_group(proc)
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)
        with self.state.lock:
            live = list(self._live)
        for proc in live:  # started while stopping
            _kill_group(proc)

    def _spawn(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------------ scheduling

    def _schedule_loop(self) -> None:
        with self.state.changed:
            while not self._stopping.is_set():
                self._schedule_locked()
                self.state.changed.wait(timeout=0.5)

    def _schedule_locked(self) -> None:
        now = time.monotonic()
        for job in list(self.state.jobs.values()):
            limit = duration_seconds((job.rest.get("constraints") or {}).get("maxWallClockTime"))
            if job.state == "active" and limit is not None and now - job.created_monotonic > limit:
                self.state.begin_terminate(job, "MaxWallClockTimeExpiry")
        for pool in self.state.pools.values():
            candidates: list[tuple[int, JobRecord, TaskRecord]] = []
            running_per_job: dict[str, int] = {}
            for job in self.state.jobs.values():
                if job.deleted or job.state != "active" or job.rest["poolInfo"]["poolId"].lower() != pool.id.lower():
                    continue
                running_per_job[job.key] = sum(1 for t in job.tasks.values() if t.state in ("running", "preparing"))
                for task in job.tasks.values():
                    if task.state == "active" and not task.deleted:
                        candidates.append((-int(job.rest.get("priority") or 0), task.seq, job, task))
            candidates.sort(key=lambda c: c[:2])
            for _, _, job, task in candidates:
                limit = job.rest.get("maxParallelTasks", -1)
                if limit is not None and limit >= 0 and running_per_job[job.key] >= limit:
                    continue
                need = int(task.rest.get("requiredSlots", 1))
                fitting = [n for n in pool.nodes if n.free_slots >= need]
                if not fitting:
                    continue
                if pool.node_fill_type == "pack":
                    node = min(fitting, key=lambda n: (n.free_slots, n.index))
                else:
                    node = max(fitting, key=lambda n: (n.free_slots, -n.index))
                self._assign(job, task, node)
                running_per_job[job.key] += 1

    def _assign(self, job: JobRecord, task: TaskRecord, node: NodeRecord) -> None:
        if not node.running_tasks:
            node.state_transition_time = iso_now()
        node.running_tasks.add((job.key, task.key))
        node.used_slots += int(task.rest.get("requiredSlots", 1))
        node.total_tasks_run += 1
        task.node = node
        task.kill_reason = None
        tdir = task_dir_on(node, job.id, task.rest["id"])
        task.rest["nodeInfo"] = {
            "affinityId": f"TVM:{node.id}",
            "nodeUrl": self.state.node_url(node),
            "poolId": node.pool_id,
            "nodeId": node.id,
            "taskRootDirectory": str(tdir.relative_to(node.root)),
            "taskRootDirectoryUrl": f"{self.state.node_url(node)}/files/{tdir.relative_to(node.root)}",
        }
        needs_prep = bool(job.rest.get("jobPreparationTask"))
        prep = job.prep_by_node.get(node.id)
        self.state.set_task_state(task, "preparing" if needs_prep and not (prep and prep.done.is_set()) else "running")
        self._spawn(self._run_task, job, task, node, name=f"task-{job.id}-{task.rest['id']}")

    # ------------------------------------------------------------------ kills

    def kill_job_side_tasks(self, job: JobRecord) -> None:
        """Under the state lock: kill the job's running preparation processes (terminate/delete)."""
        for rec in job.prep_by_node.values():
            if rec.process is not None and rec.release is None:
                _kill_group(rec.process)

    def kill_task(self, task: TaskRecord, reason: str) -> None:
        """Called under the state lock: mark why the task ends and kill its process group if it has one."""
        task.kill_reason = reason
        if task.process is not None:
            _kill_group(task.process)

    # ------------------------------------------------------------------ environment

    def _base_env(self, node: NodeRecord, job: JobRecord, task_id: str, tdir: Path) -> dict[str, str]:
        env = {k: os.environ[k] for k in HOST_ENV_KEPT if k in os.environ}
        python_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([python_dir, os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
        env.update(
            {
                "AZ_BATCH_ACCOUNT_NAME": self.config.account_name,
                "AZ_BATCH_ACCOUNT_URL": self.state.account_url,
                "AZ_BATCH_POOL_ID": node.pool_id,
                "AZ_BATCH_NODE_ID": node.id,
                "AZ_BATCH_NODE_IS_DEDICATED": "true",
                "AZ_BATCH_NODE_ROOT_DIR": str(node.root),
                "AZ_BATCH_NODE_SHARED_DIR": str(node.root / "shared"),
                "AZ_BATCH_NODE_STARTUP_DIR": str(node.root / "startup"),
                "AZ_BATCH_NODE_STARTUP_WORKING_DIR": str(node.root / "startup" / "wd"),
                "AZ_BATCH_NODE_MOUNTS_DIR": str(node.root / "fsmounts"),
                "AZ_BATCH_CERTIFICATES_DIR": str(tdir / "certs"),
                "AZ_BATCH_JOB_ID": job.id,
                "AZ_BATCH_TASK_ID": task_id,
                "AZ_BATCH_TASK_DIR": str(tdir),
                "AZ_BATCH_TASK_WORKING_DIR": str(tdir / "wd"),
                "AZ_BATCH_TASK_USER": "_azbatch",
                "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
            }
        )
        prep = job.rest.get("jobPreparationTask")
        if prep:
            prep_dir = node.root / "workitems" / job.id / "job-1" / prep["id"]
            env["AZ_BATCH_JOB_PREP_DIR"] = str(prep_dir)
            env["AZ_BATCH_JOB_PREP_WORKING_DIR"] = str(prep_dir / "wd")
        for setting in job.rest.get("commonEnvironmentSettings") or []:
            env[setting["name"]] = setting.get("value") or ""
        return env

    # ------------------------------------------------------------------ processes

    def _launch(self, argv: list[str], cwd: Path, env: dict[str, str], tdir: Path) -> subprocess.Popen:
        with open(tdir / "stdout.txt", "ab") as out, open(tdir / "stderr.txt", "ab") as err:
            return subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def _wait(self, proc: subprocess.Popen, timeout: float | None) -> tuple[int, bool]:
        """Wait for the process; kill its group at the timeout. Returns (exit code, timed out)."""
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        rc = proc.returncode
        return (128 - rc if rc < 0 else rc), timed_out

    def _run_simple(
        self,
        command: str,
        tdir: Path,
        env: dict[str, str],
        resource_files: list,
        timeout: float | None,
        holder: PrepRecord,
    ) -> tuple[int | None, dict[str, Any] | None]:
        """Run a prep/release command: resource files, then the process. Returns (exit code, failureInfo)."""
        (tdir / "wd").mkdir(parents=True, exist_ok=True)
        (tdir / "stdout.txt").write_bytes(b"")
        (tdir / "stderr.txt").write_bytes(b"")
        try:
            download_resource_files(resource_files or [], tdir / "wd", self.config.storage)
        except TransferError as err:
            return None, {"category": "usererror", "code": err.code, "message": err.message}
        try:
            proc = self._launch(shlex.split(command), tdir / "wd", env, tdir)
        except (OSError, ValueError) as err:
            return None, _launch_failure(err)
        with self.state.lock:
            self._live.add(proc)
            holder.process = proc
            if self._stopping.is_set():
                _kill_group(proc)
        try:
            rc, timed_out = self._wait(proc, timeout)
        finally:
            with self.state.lock:
                self._live.discard(proc)
                holder.process = None
        if timed_out:
            return WALL_CLOCK_EXIT_CODE, _wall_clock_failure()
        if rc != 0:
            return rc, _exit_failure()
        return rc, None

    # ------------------------------------------------------------------ job preparation / release

    def _ensure_prep(self, job: JobRecord, node: NodeRecord) -> PrepRecord:
        with self.state.lock:
            rec = job.prep_by_node.setdefault(node.id, PrepRecord())
        with rec.run_lock:
            if rec.done.is_set():
                return rec
            spec = job.rest["jobPreparationTask"]
            tdir = node.root / "workitems" / job.id / "job-1" / spec["id"]
            rel = str(tdir.relative_to(node.root))
            constraints = spec.get("constraints") or {}
            max_retries = int(constraints.get("maxTaskRetryCount", 0))
            timeout = duration_seconds(constraints.get("maxWallClockTime"))
            env = self._base_env(node, job, spec["id"], tdir)
            for setting in spec.get("environmentSettings") or []:
                env[setting["name"]] = setting.get("value") or ""
            retry = 0
            while True:
                with self.state.lock:
                    rec.prep = {
                        "state": "running",
                        "startTime": iso_now(),
                        "taskRootDirectory": rel,
                        "taskRootDirectoryUrl": f"{self.state.node_url(node)}/files/{rel}",
                        "retryCount": retry,
                    }
                    if retry:
                        rec.prep["lastRetryTime"] = rec.prep["startTime"]
                rc, failure = self._run_simple(
                    spec["commandLine"], tdir, env, spec.get("resourceFiles"), timeout, rec
                )
                retryable = failure is not None and failure.get("code") == "FailureExitCode"
                if retryable and (max_retries == -1 or retry < max_retries) and not self._stopping.is_set():
                    retry += 1
                    continue
                break
            with self.state.lock:
                _record_completion(rec.prep, rc, failure)
                rec.succeeded = failure is None
                rec.done.set()
        return rec

    def _run_release(self, job: JobRecord) -> None:
        spec = job.rest.get("jobReleaseTask")
        if not spec:
            return
        with self.state.lock:
            targets = [(self.state._node(job.rest["poolInfo"]["poolId"], nid), rec)
                       for nid, rec in job.prep_by_node.items()]
        for node, rec in targets:
            if self._stopping.is_set():
                return
            with rec.run_lock:  # terminate and delete may both ask; the release runs once per node
                if rec.release is None:
                    self._release_on(job, spec, node, rec)

    def _release_on(self, job: JobRecord, spec: dict[str, Any], node: NodeRecord, rec: PrepRecord) -> None:
        tdir = node.root / "workitems" / job.id / "job-1" / spec["id"]
        rel = str(tdir.relative_to(node.root))
        env = self._base_env(node, job, spec["id"], tdir)
        for setting in spec.get("environmentSettings") or []:
            env[setting["name"]] = setting.get("value") or ""
        with self.state.lock:
            rec.release = {"state": "running", "startTime": iso_now(), "taskRootDirectory": rel,
                           "taskRootDirectoryUrl": f"{self.state.node_url(node)}/files/{rel}"}
        rc, failure = self._run_simple(spec["commandLine"], tdir, env, spec.get("resourceFiles"),
                                       duration_seconds(spec.get("maxWallClockTime")) or 900, rec)
        with self.state.lock:
            _record_completion(rec.release, rc, failure)

    def _wait_no_running(self, job: JobRecord) -> None:
        with self.state.changed:
            while not self._stopping.is_set() and any(
                t.node is not None and (job.key, t.key) in t.node.running_tasks for t in job.tasks.values()
            ):
                self.state.changed.wait(timeout=0.2)

    def finish_job_async(self, job: JobRecord) -> None:
        def finish() -> None:
            self._wait_no_running(job)
            self._run_release(job)
            self.state.complete_job(job)

        self._spawn(finish, name=f"finish-{job.id}")

    def delete_job_async(self, job: JobRecord) -> None:
        def delete() -> None:
            self._wait_no_running(job)
            self._run_release(job)  # Batch runs the release task when an active job is deleted too
            self.state.forget_job(job)

        self._spawn(delete, name=f"delete-{job.id}")

    # ------------------------------------------------------------------ application packages

    def _install_apps(self, node: NodeRecord, refs: list[dict[str, Any]], env: dict[str, str]) -> None:
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
            with node.app_lock:
                target = node.installed_apps.get(key)
                if target is None:
                    target = node.root / "applications" / f"{spec.name}_{spec.version}"
                    try:
                        with zipfile.ZipFile(spec.zip_path) as archive:
                            archive.extractall(target)
                    except (OSError, zipfile.BadZipFile) as err:
                        raise TransferError("ApplicationPackageError",
                                            f"Application package {key} could not be extracted: {err}") from None
                    node.installed_apps[key] = target
            env[app_package_env_name(spec.name, spec.version)] = str(target)
            if not version:
                env[app_package_env_name(spec.name, None)] = str(target)

    # ------------------------------------------------------------------ one attempt of a task

    def _run_task(self, job: JobRecord, task: TaskRecord, node: NodeRecord) -> None:
        try:
            self._attempt(job, task, node)
        except Exception as err:  # a bug here must not leave the task running forever
            with self.state.lock:
                if task.node is node and task.state != "completed":
                    self.state.complete_task(
                        task, None,
                        {"category": "servererror", "code": "Unknown",
                         "message": redact_text(f"local node error: {type(err).__name__}: {err}")},
                    )
            raise

    def _fail_before_start(self, task: TaskRecord, failure: dict[str, Any]) -> None:
        with self.state.lock:
            if task.kill_reason:
                self._handle_kill(task, None)
                return
            self.state.complete_task(task, None, failure)

    def _attempt(self, job: JobRecord, task: TaskRecord, node: NodeRecord) -> None:
        rest = task.rest
        task_id = rest["id"]
        if job.rest.get("jobPreparationTask"):
            prep = self._ensure_prep(job, node)
            if not prep.succeeded and job.rest["jobPreparationTask"].get("waitForSuccess", True):
                self._fail_before_start(task, {
                    "category": "usererror",
                    "code": "JobPreparationTaskFailed",
                    "message": "Task cannot run because the job preparation task failed on node",
                    "details": [{"name": "NodeId", "value": node.id}],
                })
                return
        tdir = task_dir_on(node, job.id, task_id)
        wd = tdir / "wd"
        with self.state.lock:
            if task.kill_reason:
                self._handle_kill(task, None)
                return
            self.state.set_task_state(task, "running")
            info = rest["executionInfo"]
            info["startTime"] = iso_now()
            for key in ("endTime", "exitCode", "failureInfo", "result"):
                info.pop(key, None)
            if info.get("retryCount"):
                info["lastRetryTime"] = info["startTime"]
        wd.mkdir(parents=True, exist_ok=True)
        (tdir / "stdout.txt").write_bytes(b"")
        (tdir / "stderr.txt").write_bytes(b"")
        env = self._base_env(node, job, task_id, tdir)
        if rest.get("containerSettings"):
            image = rest["containerSettings"].get("imageName", "?")
            with open(tdir / "stderr.txt", "a") as fh:
                fh.write(f"azbatch-local: warning: no container engine; running on the host instead of {image}\n")
        try:
            self._install_apps(node, rest.get("applicationPackageReferences") or [], env)
            download_resource_files(rest.get("resourceFiles") or [], wd, self.config.storage)
        except TransferError as err:
            self._fail_before_start(task, {"category": "usererror", "code": err.code, "message": err.message})
            return
        for setting in rest.get("environmentSettings") or []:
            env[setting["name"]] = setting.get("value") or ""
        try:
            argv = shlex.split(rest["commandLine"])
            proc = self._launch(argv, wd, env, tdir)
        except (OSError, ValueError) as err:
            self._fail_before_start(task, _launch_failure(err))
            return
        with self.state.lock:
            task.process = proc
            self._live.add(proc)
            if task.kill_reason or self._stopping.is_set():
                _kill_group(proc)
            elif (
                self.config.preempt_fraction > 0
                and not task.preempt_planned
                and self._rng.random() < self.config.preempt_fraction
            ):
                task.preempt_planned = True
                timer = threading.Timer(PREEMPT_DELAY_SECONDS, self._preempt, args=(task, proc))
                timer.daemon = True
                timer.start()
        timeout = duration_seconds(rest["constraints"].get("maxWallClockTime"))
        try:
            rc, timed_out = self._wait(proc, timeout)
        finally:
            with self.state.lock:
                self._live.discard(proc)
                task.process = None
        if self._stopping.is_set():  # the service is going away: no uploads, no state changes
            return
        with self.state.lock:
            if task.kill_reason:
                if self._handle_kill(task, rc):
                    return
                failure = ended_by_user()
            elif timed_out:
                rc, failure = WALL_CLOCK_EXIT_CODE, _wall_clock_failure()
            elif rc != 0:
                max_retries = int(rest["constraints"].get("maxTaskRetryCount", 0))
                info = rest["executionInfo"]
                if max_retries == -1 or info["retryCount"] < max_retries:
                    info["retryCount"] += 1
                    info["exitCode"] = rc
                    self.state.release_node(task)
                    self.state.set_task_state(task, "active")
                    self.state.changed.notify_all()
                    return
                failure = _exit_failure()
            else:
                failure = None
        upload = upload_output_files(rest.get("outputFiles") or [], wd, env, failure is None, self.config.storage)
        if rest.get("outputFiles"):
            (tdir / "fileuploadout.txt").write_text("".join(line + "\n" for line in upload.log))
            if upload.errors:
                (tdir / "fileuploaderr.txt").write_text("".join(line + "\n" for line in upload.errors))
        if upload.errors and failure is None:
            failure = {
                "category": "usererror",
                "code": "FileUploadMiscError",
                "message": "One or more output files failed to upload; see fileuploaderr.txt in the task directory",
                "details": [{"name": "Message", "value": upload.errors[0]}],
            }
        with self.state.lock:
            if task.kill_reason == "deleted" or task.deleted:
                self.state.release_node(task)
                return
            self.state.complete_task(task, rc, failure)

    def _handle_kill(self, task: TaskRecord, rc: int | None) -> bool:
        """Under the lock, after a killed attempt: True when handled (requeued/deleted), False for terminate."""
        reason = task.kill_reason
        if reason == "preempted" and not self._stopping.is_set():
            info = task.rest["executionInfo"]
            info["requeueCount"] = info.get("requeueCount", 0) + 1
            info["lastRequeueTime"] = iso_now()
            task.kill_reason = None
            self.state.release_node(task)
            self.state.set_task_state(task, "active")
            self.state.changed.notify_all()
            return True
        if reason == "deleted" or task.deleted:
            self.state.release_node(task)
            self.state.changed.notify_all()
            return True
        if rc is None:  # killed before the command started: terminate completes it now
            self.state.complete_task(task, None, ended_by_user())
            return True
        return False

    def _preempt(self, task: TaskRecord, proc: subprocess.Popen) -> None:
        with self.state.lock:
            if task.process is proc and task.kill_reason is None:
                self.kill_task(task, "preempted")


# Batch's documented exit code for a task ended by its maxWallClockTime: 0xC000013A, as a signed int32.
WALL_CLOCK_EXIT_CODE = 0xC000013A - 2**32


def _wall_clock_failure() -> dict[str, Any]:
    return {"category": "servererror", "code": "TaskEnded",
            "message": "The task exceeded its maxWallClockTime constraint and was ended"}


def _record_completion(info: dict[str, Any], rc: int | None, failure: dict | None) -> None:
    """Complete a job preparation/release execution-info dict (callers hold the state lock)."""
    info.update({"state": "completed", "endTime": iso_now(), "result": "failure" if failure else "success"})
    if rc is not None:
        info["exitCode"] = rc
    if failure:
        info["failureInfo"] = failure


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_failure() -> dict[str, Any]:
    return {"category": "usererror", "code": "FailureExitCode",
            "message": "The task exited with an exit code representing a failure"}


def _launch_failure(err: Exception) -> dict[str, Any]:
    if isinstance(err, FileNotFoundError):
        return {"category": "usererror", "code": "CommandProgramNotFound",
                "message": f"The program specified in the task's command line was not found: {err.filename}"}
    return {"category": "usererror", "code": "CommandLaunchFailed",
            "message": redact_text(f"The task's command line could not be launched: {err}")}


