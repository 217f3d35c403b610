"""How a run ends: its Batch jobs terminated (retried for a while when Batch is unreachable, else one line with
the command to do it by hand) and deleted unless kept, the run report, a created pool deleted; SIGTERM treated as
Ctrl-C; an outage past the tolerance handed to Snakemake as the one line that ends the run. A part of `Executor`,
kept apart by concern."""

from __future__ import annotations

import signal
import threading
from typing import List

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from ..azure_api.azure_sdk import error_text
from ..azure_api.batch_client import BatchServiceError
from .outage import OutageExpired, terminate_job_retrying
from .recovery import terminate_reason


class RunEnd:
    """Mixed into `Executor`: uses its `config`, `batch`, `staging`, `batch_jobs`, `pools`, `reporting`, `logger`,
    `workflow`, `completed_since`, `outages`, `run_watch`, `_finalized`, `_sigterm_installed`, `_cancelled`,
    `_leaving`, `_not_terminated` (Batch jobs it could not terminate: not tried again), `takeover` (adoption/),
    `run_identity`, `delete_created_pool`, `follow_job` and `all_batch_jobs`."""

    def _cancel_on_sigterm(self) -> None:
        """Snakemake treats SIGTERM as "finish running jobs first"; for Batch tasks that may run for hours we
        want what Ctrl-C does (cancel: terminate tasks and job), so SIGTERM raises KeyboardInterrupt too. SIGHUP
        (a closed terminal, a dropped SSH session) would kill the process and leave everything running, heartbeat
        and all: it cancels the same way, or with --azbatch-leave-on-hangup ends the run leaving its tasks for a
        later run to adopt (adoption/). The scheduler installs its handler after creating the executor, hence this
        is done on first submission."""
        if self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        self._sigterm_installed = True
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGHUP, self._leave_on_hangup if self.config.leave_on_hangup else
                      signal.default_int_handler)

    def _leave_on_hangup(self, signum, frame) -> None:
        self._leaving = True
        raise KeyboardInterrupt

    @property
    def leaving(self) -> bool:
        """SIGHUP with --azbatch-leave-on-hangup: the run ends, its Batch jobs and containers stay."""
        return self._leaving

    def _settle_adoption(self, force: bool = False) -> None:
        """Once every ready job is handed over (or the run ends, `force`): dead tasks nobody took end, dead jobs
        with adopted tasks are followed like earlier generations of this run's own (adoption/takeover.py)."""
        ready = getattr(getattr(self.workflow, "dag", None), "ready_jobs", None)  # not in the executor interface
        self.takeover.settle(ready if isinstance(ready, (set, frozenset)) else None,
                             lambda job: self._end_job(job, terminate_reason(self.run_identity)), self.follow_job,
                             force)

    def _end_run_for_outage(self, line: str) -> None:
        """Hand Snakemake the one line that ends the run, as the base class does with its status thread's errors:
        Snakemake prints it (an ApiError: one line, no traceback), shuts the executor down (which terminates the
        Batch jobs) and exits non-zero."""
        scheduler = getattr(self.workflow, "scheduler", None)
        if scheduler is None:
            self.logger.error(line)
        else:
            scheduler.executor_error_callback(OutageExpired(line))

    def _end_run_from_watch(self, line: str) -> None:
        """A pool deleted or a Batch job ended under the run (run_watch.py): the same way out as an outage; waits
        in progress stop at once."""
        self.outages.ended.set()
        self._end_run_for_outage(line)

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        """Ctrl-C / SIGTERM: terminating a Batch job terminates all of its running tasks. One line per cancelled
        task; a status round that still sees them ended does not report them as failures (an error block and the
        node's Snakemake banner for each would bury what happened)."""
        self._cancelled = True
        self.reporting.run_cancelled()
        if self.leaving:
            self.run_watch.leave()  # the jobs' metadata says so: a later run on any machine adopts at once
            jobs = ", ".join(self.all_batch_jobs()) or "none"
            self.logger.warning(
                f"azbatch: SIGHUP: left {len(active_jobs)} task(s) running on Batch (Batch jobs {jobs}) for the next "
                "run of this workflow to adopt: run it again with --rerun-incomplete")
            return
        self.run_watch.stop()
        for batch_job in self.all_batch_jobs():
            self._terminate(batch_job)
        for job_info in active_jobs:
            what = f"group {job_info.job.name}" if job_info.job.is_group() else f"rule {job_info.job.name}"
            self.logger.info(f"azbatch: cancelled Batch task {job_info.external_jobid} ({what})")

    def shutdown(self):
        super().shutdown()
        self._finalize()

    def _terminate(self, batch_job: str, reason: str = "snakemake run ended") -> bool:
        """Terminate a Batch job (ending its tasks), trying again for a while when Batch is unreachable. A job
        that could not be terminated is not tried again by this run (Ctrl-C cancels, then shuts down: one wait)."""
        failed = self._not_terminated
        self.run_watch.forget(batch_job)  # its end is this run's doing, not someone else's
        if batch_job in failed:
            return False
        done = terminate_job_retrying(
            self.batch, batch_job, reason, self.logger,
            account_url=self.config.account_url, account_name=self.config.account_name,
        )
        if not done:
            failed.add(batch_job)
        return done

    def _end_job(self, batch_job: str, reason: str = "snakemake run ended") -> None:
        """Terminate a Batch job, let the run report read its last tasks, delete it unless kept."""
        if not self._terminate(batch_job, reason):
            return  # one line said how to terminate it by hand; nothing more can be done now
        self.reporting.job_terminated(batch_job, self.completed_since.get(batch_job))
        if self.config.keep_job:
            self.logger.info(f"azbatch: kept Batch job {batch_job} (terminated)")
            return
        try:
            self.batch.delete_job(batch_job)
        except Exception as e:  # terminated already, so nothing runs: only the job record stays
            self.logger.error(str(e) if isinstance(e, BatchServiceError) else
                              f"azbatch: deleting Batch job {batch_job} failed: {error_text(e)}")

    def _end_run_container(self) -> None:
        """The run's own storage container (its tasks' outputs and logs, all downloaded by now) is deleted, or kept
        with a kept job, for debugging; a run that submitted nothing never created one."""
        if not self.staging.run_container_created:
            return
        name = self.staging.run_container.container_name
        if self.config.keep_job:
            self.logger.info(f"azbatch: kept storage container {name} (the run's task outputs and logs; delete it "
                             f"with `az storage container delete --name {name} "
                             f"--account-name {self.staging.service.account_name}`)")
            return
        try:
            self.staging.delete_run_container()
        except Exception as e:  # one line; the container holds only this run's copies
            self.logger.error(f"azbatch: deleting storage container {name} failed ({error_text(e)}); delete it with "
                              f"`az storage container delete --name {name}`")

    def _finalize(self):
        if self._finalized:
            return
        self._finalized = True
        self.reporting.stop_progress()
        if self.leaving:  # what the tasks need stays: jobs, the run's container, a created pool
            self.run_watch.stop()
            self.reporting.finish({info.id: info.slots_per_node for info in self.pools.values()})
            self.staging.close()
            self.batch.close()
            return
        if not self._cancelled:
            self._settle_adoption(force=True)  # dead tasks nobody took end; adopted ones' jobs with the run's
        self.run_watch.stop()
        for batch_job in self.all_batch_jobs():  # every generation (link_renewal.py)
            self._end_job(batch_job)
        self.reporting.finish({info.id: info.slots_per_node for info in self.pools.values()},
                              {info.id: self.pool_guard.pool_cores(info) for info in self.pools.values()})
        self.delete_created_pool()
        self._end_run_container()
        if self.takeover.settled and not self.config.keep_job:  # adopted outputs are all downloaded by now
            for run in sorted(self.takeover.dead_runs):
                self.staging.remove_dead_run_container(run)
        self.staging.close()
        self.batch.close()
