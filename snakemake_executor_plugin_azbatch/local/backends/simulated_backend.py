"""`SimulatedBackend`: nodes that run no process (`azbatch-local --simulate SECONDS`), for control-plane runs at scale.

It implements `execution.ExecutionBackend` directly, so the model drives it like any backend: placement, slots,
retries, requeues after preemption, wall clock, job actions and preparation/release order are the model's, unchanged.
What a simulated node does with what it is given:
- an attempt is started at once and its "command" ends SECONDS later with exit code 0, or 1 for a task chosen by
  `--simulate-fail FRACTION` (every attempt of a chosen task fails, so retries run and then fail as a failing
  command's would). The choice is a hash of (--seed, job id, task id): the same ids and seed fail the same way in
  every run, whatever the timing;
- a wall clock shorter than SECONDS ends the attempt as timed out; a kill (terminate, delete, preemption) ends it at
  once with -9, as a Linux node reports a process SIGKILL ended;
- job preparation and release tasks also take SECONDS and succeed, and so does a pool's start task (its
  `startup/` directory holds stdout.txt and stderr.txt), after which the node takes tasks;
- the task directory holds stdout.txt (one line saying nothing ran) and stderr.txt (empty, or the simulated failure),
  so the file API answers as for a real task;
- each output file whose filePattern is a literal path (no wildcard) is uploaded as a small placeholder blob under
  the name a real file would get, through `blob_transfer` (same destinations, SAS / identity handling, upload
  conditions and errors); a wildcard pattern matches nothing, as no command wrote a file.
Not simulated: resource files are not downloaded (their URLs are not checked), application packages are not
installed, containerSettings are ignored.

Cost: nothing per node at start (a node's directories appear when its first task starts); one timer thread holds
every pending end in one heap; a few I/O threads write the task files and upload placeholders.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..service_config import BoundEndpoints, ServiceConfig
from ..nodes.node_layout import NodeLayout, merge_settings
from .blob_transfer import redact_text
from .blob_uploads import UploadRetry, record_uploads, upload_placeholder_outputs
from .execution import AttemptRef, ExecutionEvents, JobTaskRef, JobTaskRun, StartTaskRef, StartTaskRun, TaskAttempt
from .task_outcomes import node_error

log = logging.getLogger(__name__)

IO_THREADS = 4  # task files and placeholder uploads; uploads wait on the blob endpoint, not on the CPU
KILLED_EXIT_CODE = -signal.SIGKILL  # what a Linux node reports for a process SIGKILL ended
SIMULATED_FAILURE_EXIT_CODE = 1

RunKey = AttemptRef | JobTaskRef | StartTaskRef


def chosen_to_fail(seed: int, job_id: str, task_id: str, fraction: float) -> bool:
    """Whether `--simulate-fail FRACTION` picks this task: a uniform draw from a hash of the seed and the ids."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}\0{job_id.lower()}\0{task_id.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class _Run:
    """An attempt, a preparation/release run or a start task run whose simulated command is "running"."""

    key: RunKey
    work: TaskAttempt | JobTaskRun | StartTaskRun
    exit_code: int
    timed_out: bool  # the wall clock ends it before SECONDS
    due: float
    generation: int = 0  # a kill reschedules the end; heap entries of an older generation are ignored
    killed: bool = False


class SimulatedBackend:
    """An `ExecutionBackend` whose nodes only keep time (see the module docstring)."""

    def __init__(self, config: ServiceConfig, endpoints: BoundEndpoints | None = None) -> None:
        self.config = config
        self.endpoints = endpoints or BoundEndpoints.unbound(config)
        self.seconds = float(config.simulate or 0.0)
        self.events: ExecutionEvents | None = None
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, int, RunKey]] = []  # (due, tiebreak, generation, key)
        self._order = itertools.count()
        self._running: dict[RunKey, _Run] = {}
        self._pending: set[RunKey] = set()  # handed over, not yet scheduled
        self._kills: set[RunKey] = set()  # pending ones asked to die before they were scheduled
        self._nodes_made: set[str] = set()
        self._stopping = False
        self._timer: threading.Thread | None = None
        self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="azbatch-simulated-io")

    # ------------------------------------------------------------------ ExecutionBackend

    def bind(self, events: ExecutionEvents) -> None:
        self.events = events

    def start(self) -> None:
        self._timer = threading.Thread(target=self._timer_loop, name="azbatch-simulated-clock", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._timer is not None:
            self._timer.join(timeout=5)
        self._io.shutdown(wait=True, cancel_futures=True)

    def start_node(self, node: NodeLayout) -> None:
        self._report().node_ready(node.pool_id, node.node_id)  # no directories yet: see _task_dir

    def start_attempt(self, attempt: TaskAttempt) -> None:
        self._submit(self._begin_attempt, attempt, pending=attempt.ref)

    def kill_attempt(self, ref: AttemptRef) -> None:
        self._kill(ref)

    def run_job_task(self, run: JobTaskRun) -> None:
        self._submit(self._begin_job_task, run, pending=run.ref)

    def kill_job_task(self, ref: JobTaskRef) -> None:
        self._kill(ref)

    def run_start_task(self, run: StartTaskRun) -> None:
        self._submit(self._begin_start_task, run, pending=run.ref)

    # ------------------------------------------------------------------ starting

    def _report(self) -> ExecutionEvents:
        if self.events is None:
            raise RuntimeError("SimulatedBackend used before bind()")
        return self.events

    def _submit(self, target: Callable[..., None], *args: Any, pending: RunKey | None = None) -> None:
        with self._cond:
            if self._stopping:
                return
            if pending is not None:
                self._pending.add(pending)
            self._io.submit(target, *args)

    def _begin_attempt(self, attempt: TaskAttempt) -> None:
        events = self._report()
        try:
            if self._stopping or not events.attempt_started(attempt.ref):
                self._unpend(attempt.ref)
                return
            fails = chosen_to_fail(self.config.seed, attempt.job_id, attempt.task_id, self.config.simulate_fail)
            note = (f"simulated failure: azbatch-local --simulate-fail {self.config.simulate_fail} "
                    f"--seed {self.config.seed} chose this task; exit code {SIMULATED_FAILURE_EXIT_CODE}\n")
            self._task_files(attempt.node, attempt.job_id, attempt.task_id, note if fails else "")
            events.attempt_launched(attempt.ref)  # before its end is scheduled: with SECONDS 0 that comes at once
            self._schedule(attempt.ref, attempt, SIMULATED_FAILURE_EXIT_CODE if fails else 0, attempt.timeout)
        except Exception as err:  # a bug here must not leave the task running forever
            log.exception("simulated node error starting task %s/%s", attempt.job_id, attempt.task_id)
            self._unpend(attempt.ref)
            events.attempt_failed(attempt.ref, node_error(redact_text(f"local node error: {type(err).__name__}")))

    def _begin_job_task(self, run: JobTaskRun) -> None:
        try:
            if self._stopping:
                return
            self._task_files(run.node, run.job_id, run.task_id, "")
            self._schedule(run.ref, run, 0, run.timeout)
        except Exception as err:  # as for tasks: report instead of leaving the job waiting
            log.exception("simulated node error starting the %s task of job %s", run.ref.kind, run.job_id)
            self._unpend(run.ref)
            self._report().job_task_finished(run.ref, None, node_error(f"local node error: {type(err).__name__}"),
                                             False)

    def _begin_start_task(self, run: StartTaskRun) -> None:
        try:
            if self._stopping:
                return
            self._make_node(run.node)
            startup = run.node.startup_dir
            (startup / "wd").mkdir(parents=True, exist_ok=True)
            (startup / "stdout.txt").write_text(f"azbatch-local --simulate {self.seconds:g}: no start task ran\n")
            (startup / "stderr.txt").write_text("")
            self._schedule(run.ref, run, 0, None)
        except Exception as err:  # report instead of leaving the node waiting for its start task
            log.exception("simulated node error starting the start task of node %s", run.ref.node_id)
            self._unpend(run.ref)
            self._report().start_task_finished(run.ref, None, node_error(f"local node error: {type(err).__name__}"))

    def _make_node(self, node: NodeLayout) -> None:
        if node.node_id not in self._nodes_made:  # a set read is atomic; creating twice is harmless
            node.create()
            self._nodes_made.add(node.node_id)

    def _task_files(self, node: NodeLayout, job_id: str, task_id: str, stderr: str) -> None:
        """The task directory with its two output files; the node's own directories on its first task."""
        self._make_node(node)
        # Plain os calls: at thousands of tasks a second, pathlib's and open()'s extra system calls show.
        tdir = str(node.task_dir(job_id, task_id))
        os.makedirs(f"{tdir}/wd", exist_ok=True)
        note = f"azbatch-local --simulate {self.seconds:g}: no process ran for this task\n"
        for name, text in (("stdout.txt", note), ("stderr.txt", stderr)):
            fd = os.open(f"{tdir}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)

    def _schedule(self, key: RunKey, work: TaskAttempt | JobTaskRun | StartTaskRun, exit_code: int,
                  timeout: float | None) -> None:
        timed_out = timeout is not None and timeout < self.seconds
        run = _Run(key, work, exit_code, timed_out, time.monotonic() + (timeout if timed_out else self.seconds))
        with self._cond:
            self._pending.discard(key)
            if key in self._kills:
                self._kills.discard(key)
                run.killed, run.due = True, time.monotonic()
            self._running[key] = run
            heapq.heappush(self._due, (run.due, next(self._order), run.generation, key))
            self._cond.notify()

    # ------------------------------------------------------------------ killing

    def _kill(self, key: RunKey) -> None:
        with self._cond:
            run = self._running.get(key)
            if run is None:
                if key in self._pending:  # not scheduled yet: _schedule ends it at once
                    self._kills.add(key)
                return  # already ended
            if run.killed:
                return
            run.killed, run.due, run.generation = True, time.monotonic(), run.generation + 1
            heapq.heappush(self._due, (run.due, next(self._order), run.generation, key))
            self._cond.notify()

    def _unpend(self, key: RunKey) -> None:
        """It will not be scheduled (never started, or failed to start): forget it."""
        with self._cond:
            self._pending.discard(key)
            self._kills.discard(key)

    # ------------------------------------------------------------------ ending

    def _timer_loop(self) -> None:
        """Pop every end that is due and report it; sleep until the next one (or a new one) otherwise."""
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        break
                    self._cond.wait(timeout=self._due[0][0] - now if self._due else None)
                if self._stopping:
                    return
                ended: list[_Run] = []
                while self._due and self._due[0][0] <= now:
                    _, _, generation, key = heapq.heappop(self._due)
                    run = self._running.get(key)
                    if run is not None and run.generation == generation:
                        del self._running[key]
                        ended.append(run)
            for run in ended:
                try:
                    self._end(run)
                except Exception:  # keep the clock going for every other task
                    log.exception("simulated node error ending %s", run.key)

    def _end(self, run: _Run) -> None:
        events = self._report()
        exit_code = KILLED_EXIT_CODE if run.killed else run.exit_code
        timed_out = run.timed_out and not run.killed
        if self._stopping:
            return
        if isinstance(run.key, JobTaskRef):
            events.job_task_finished(run.key, exit_code, None, timed_out)
            return
        if isinstance(run.key, StartTaskRef):
            events.start_task_finished(run.key, exit_code, None)
            return
        verdict = events.attempt_exited(run.key, exit_code, timed_out)
        if verdict is None:
            return
        assert isinstance(run.work, TaskAttempt)
        if run.work.spec.get("outputFiles"):
            self._submit(self._upload_and_complete, run.work, verdict)
        else:
            events.attempt_completed(run.key, *verdict)

    def _upload_and_complete(self, attempt: TaskAttempt, verdict: tuple[int, dict | None]) -> None:
        exit_code, failure = verdict
        node = attempt.node
        try:
            env = node.task_environment(self.config.account_name, self._account_url(), attempt.job_id,
                                        attempt.task_id, attempt.preparation_task_id)
            merge_settings(env, attempt.job_environment, attempt.spec.get("environmentSettings"))

            def placeholder(pattern: str) -> bytes:
                return (f"placeholder written by azbatch-local --simulate for {pattern} "
                        f"(job {attempt.job_id}, task {attempt.task_id})\n").encode()

            tdir = node.task_dir(attempt.job_id, attempt.task_id)
            retry = UploadRetry(self.config.node_upload_retry_seconds, lambda: self._stopping)
            outcome = upload_placeholder_outputs(attempt.spec["outputFiles"], tdir / "wd", env, failure is None,
                                                 self.endpoints.storage, placeholder, retry)
            failure = record_uploads(tdir, outcome, failure)
        except Exception as err:  # report instead of leaving the task running forever
            log.exception("simulated node error uploading outputs of %s/%s", attempt.job_id, attempt.task_id)
            failure = node_error(redact_text(f"local node error: {type(err).__name__}"))
        if not self._stopping:
            self._report().attempt_completed(attempt.ref, exit_code, failure)

    def _account_url(self) -> str:
        return self.endpoints.account_url.rstrip("/")
