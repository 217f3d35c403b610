"""While a run has Batch jobs: its heartbeat, and what others do to its pools and jobs.

- Heartbeat: every `--azbatch-heartbeat-interval` seconds one Jobs_UpdateJob per Batch job of the run rewrites its
  metadata (all keys: Batch replaces the whole list) with the time, so a later run of the same workflow can tell
  this run is alive (recovery.py).
- Pools: every `POOL_CHECK_SECONDS` (or the heartbeat interval when shorter) one Pools_GetPool (state and
  allocation fields) per pool the run has a Batch job on. A pool that is gone or deleting ends the run with one line
  naming it: its tasks would otherwise wait for nodes that never come. The allocation goes to resize_watch.py
  (`allocation`): resize errors said once, and the line that ends the run when the pool can get no node at all.
- Jobs ended by someone else: a heartbeat answered `JobCompleted` / `JobNotFound` (or a check the status rounds ask
  for when a task was ended by request) ends the run with one line giving Batch's terminateReason, which names the
  run that ended it when that was another run of this plugin.

Batch being unreachable is left to the outage watch (outage.py); these checks simply try again next time.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from ..azure_api.azure_sdk import enum_text, error_code, error_text, unreachable
from .resize_watch import PoolAllocation, ResizeWatch
from .run_identity import LEFT_KEY, RunIdentity, heartbeat_text

POOL_CHECK_SECONDS = 30.0
POKE_MIN_SECONDS = 5.0  # a check asked for by the status rounds is not repeated sooner
STOP_WAIT_SECONDS = 5.0
JOB_ENDED_CODES = ("JobCompleted", "JobNotFound", "JobBeingDeleted", "JobBeingTerminated")


class RunWatch:
    def __init__(self, batch: Any, identity: RunIdentity, logger, end_run: Callable[[str], None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`end_run(line)` ends the run (called at most once, from this watch's thread)."""
        self.batch = batch
        self.identity = identity
        self.logger = logger
        self.end_run = end_run
        self.clock = clock
        self.interval = identity.heartbeat_every
        self.check_every = min(POOL_CHECK_SECONDS, self.interval)
        self.lock = threading.Lock()
        self.jobs: dict[str, tuple[str, list[dict[str, str]]]] = {}  # Batch job -> (pool, metadata not ours)
        self.gone_pools: set[str] = set()  # pools (lower) found deleted or deleting
        self.allocation = ResizeWatch(logger)  # what the pools' resizes are doing (progress reads it)
        self.ended = False
        self.last_beat = clock()
        self.last_poke = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, job_id: str, pool_id: str, metadata: list[dict[str, str]]) -> None:
        """A Batch job of this run (created with `metadata`, the identity's keys among them); starts the watch."""
        ours = {item["name"] for item in self.identity.metadata(datetime.now(timezone.utc))}
        with self.lock:
            self.jobs[job_id] = (pool_id, [m for m in metadata if m["name"] not in ours])
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="azbatch-run-watch", daemon=True)
            self._thread.start()

    def forget(self, job_id: str) -> None:
        """The run ends this job itself: no more heartbeats, and its end is not someone else's doing."""
        with self.lock:
            self.jobs.pop(job_id, None)

    def poke(self) -> None:
        """Check the jobs soon (a task was ended by request: maybe its whole job was terminated)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_WAIT_SECONDS)

    def leave(self) -> None:
        """The run ends leaving its jobs for a later run to adopt: the watch stops, and each job's metadata says
        so, so a later run on any machine counts this one dead at once (recovery.py)."""
        self.stop()
        now = datetime.now(timezone.utc)
        with self.lock:
            jobs = dict(self.jobs)
        for job_id, (_, others) in jobs.items():
            try:
                self.batch.update_job_metadata(
                    job_id, [*others, *self.identity.metadata(now), {"name": LEFT_KEY, "value": heartbeat_text(now)}])
            except Exception as e:  # its heartbeat goes stale instead
                self.logger.debug(f"azbatch: marking Batch job {job_id} as left failed: {error_text(e)}")

    def _run(self) -> None:
        while not self._stop.is_set():
            poked = self._wake.wait(self.check_every)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick(poked)
            except Exception as e:  # never let the watch die silently; the next tick tries again
                self.logger.debug(f"azbatch: run watch: {error_text(e)}")

    def tick(self, poked: bool = False) -> None:
        now = self.clock()
        if poked and now - self.last_poke < POKE_MIN_SECONDS:
            poked = False
        if poked:
            self.last_poke = now
        self.check_pools()
        if poked or now - self.last_beat >= self.interval:
            self.last_beat = now
            self.beat()

    def check_pools(self) -> None:
        with self.lock:
            pools = sorted({pool for pool, _ in self.jobs.values()}, key=str.lower)
        for pool in pools:
            try:
                found = self.batch.pool_allocation(pool)
            except Exception as e:
                if not unreachable(e):
                    self.logger.debug(f"azbatch: reading pool {pool}'s state failed: {error_text(e)}")
                continue
            state = enum_text(found.state) if found is not None else None
            if state is None or state == "deleting":
                self.gone_pools.add(pool.lower())
                what = "no longer exists" if state is None else "is being deleted"
                self._end(f"azbatch: pool {pool} {what} (deleted outside this run); its tasks cannot run, so the "
                          "run ends and its Batch jobs are terminated")
                return
            line = self.allocation.observe(PoolAllocation.from_sdk(found))
            if line is not None:
                self._end(line)
                return

    def beat(self) -> None:
        """One Jobs_UpdateJob per Batch job with all its metadata, the heartbeat renewed."""
        ours = self.identity.metadata(datetime.now(timezone.utc))
        with self.lock:
            jobs = dict(self.jobs)
        for job_id, (_, others) in jobs.items():
            try:
                self.batch.update_job_metadata(job_id, [*others, *ours])
            except Exception as e:
                if unreachable(e):
                    continue
                if error_code(e) in JOB_ENDED_CODES or getattr(e, "status_code", None) == 404:
                    with self.lock:
                        still_ours = job_id in self.jobs
                    if still_ours:
                        self._end(self._ended_line(job_id))
                        return
                    continue
                self.logger.debug(f"azbatch: heartbeat of Batch job {job_id} failed: {error_text(e)}")

    def ended_outside(self, job_id: str) -> bool:
        """A task of this job ended by request (a status round saw it): if the whole job was terminated or deleted
        outside this run, end the run now with Batch's reason, before that task is reported as a failure of its
        own (one Jobs_GetJob; poke's heartbeat would come too late)."""
        with self.lock:
            if job_id not in self.jobs:
                return False  # this run ends it itself
        try:
            state, _ = self.batch.job_end(job_id)
        except Exception as e:
            if getattr(e, "status_code", None) != 404:
                return False
            state = "deleted"
        if state == "active":
            return False
        self._end(self._ended_line(job_id))
        return True

    def _ended_line(self, job_id: str) -> str:
        try:
            state, reason = self.batch.job_end(job_id)
        except Exception as e:
            if getattr(e, "status_code", None) == 404:
                return (f"azbatch: Batch job {job_id} of this run was deleted outside this run; the run ends and "
                        "its other Batch jobs are terminated")
            state, reason = "?", ""
        said = f" (terminateReason: {reason})" if reason else ""
        return (f"azbatch: Batch job {job_id} of this run was terminated outside this run{said}, which ended its "
                f"tasks (job state {state}); the run ends and its other Batch jobs are terminated")

    def _end(self, line: str) -> None:
        if self.ended or self._stop.is_set():
            return
        self.ended = True
        self._stop.set()
        self.end_run(line)
