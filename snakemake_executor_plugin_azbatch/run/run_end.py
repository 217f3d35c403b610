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


class RunEnd:
    """Mixed into `Executor`: uses its `config`, `batch`, `staging`, `batch_jobs`, `pools`, `reporting`, `logger`,
    `workflow`, `completed_since`, `outages`, `run_watch`, `_finalized`, `_sigterm_installed`, `_cancelled`,
    `_not_terminated` (Batch jobs it could not terminate: not tried again),
    `delete_created_pool` and `all_batch_jobs`."""

    def _cancel_on_sigterm(self) -> None:
        """Snakemake treats SIGTERM as "finish running jobs first"; for Batch tasks that may run for hours we
        want what Ctrl-C does (cancel: terminate tasks and job), so SIGTERM raises KeyboardInterrupt too. The
        scheduler installs its handler after creating the executor, hence this is done on first submission."""
        if self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        self._sigterm_installed = True
        signal.signal(signal.SIGTERM, signal.default_int_handler)

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

    def _end_job(self, batch_job: str) -> None:
        """Terminate a Batch job, let the run report read its last tasks, delete it unless kept."""
        if not self._terminate(batch_job):
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
        self.run_watch.stop()
        for batch_job in self.all_batch_jobs():  # every generation (link_renewal.py)
            self._end_job(batch_job)
        self.reporting.finish({info.id: info.slots_per_node for info in self.pools.values()})
        self.delete_created_pool()
        self._end_run_container()
        self.staging.close()
        self.batch.close()
