"""How a run ends: its Batch jobs terminated (retried for a while when Batch is unreachable, else one line with
the command to do it by hand) and deleted unless kept, the run report, a created pool deleted; SIGTERM treated as
Ctrl-C, SIGHUP too unless --azbatch-leave-on-hangup leaves the tasks for a later run to adopt; an outage past the tolerance handed to Snakemake as the one line that ends the run. `Executor` holds one
and delegates its `cancel_jobs` and `shutdown` hooks to it."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Iterable, List, Mapping

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from ..azure_api.azure_sdk import error_text
from ..azure_api.batch_client import BatchServiceError
from ..azure_api.batch_client import BatchService
from ..pools.pool_info import PoolInfo
from ..staging import Staging
from .outage import OutageExpired, Outages, terminate_job_retrying
from .run_watch import RunWatch


class RunEnd:
    """Ends the run's Batch jobs, storage container and created pool; `reporting` is the run's RunReporting (told
    of the cancellation and of each ended job, and writes the report). `all_batch_jobs()`: every generation still
    to end (LinkRenewal); `pools`: pool id (lower) -> PoolInfo, `completed_since`: Batch job -> the last list's
    time (both read at the end, for the report); `scheduler()`: Snakemake's scheduler once it exists;
    `takeover`: the dead runs' tasks this run took (adoption/takeover.py), `settle_adoption(force)` ends what nobody
    took; `pool_cores(info)`: a pool's cores per node, for the report's billed core-hours."""

    def __init__(self, batch: BatchService, staging: Staging, reporting, run_watch: RunWatch,
                 outages: Outages, logger, *, all_batch_jobs: Callable[[], Iterable[str]],
                 pools: Mapping[str, PoolInfo], completed_since: Mapping, delete_created_pool: Callable[[], None],
                 scheduler: Callable[[], object | None], keep_job: bool, account_url: str, account_name: str | None,
                 leave_on_hangup: bool, takeover: Any, settle_adoption: Callable[[bool], None],
                 pool_cores: Callable[[PoolInfo], int | None]):
        self.batch = batch
        self.staging = staging
        self.reporting = reporting
        self.run_watch = run_watch
        self.outages = outages
        self.logger = logger
        self.all_batch_jobs = all_batch_jobs
        self.pools = pools
        self.completed_since = completed_since
        self.delete_created_pool = delete_created_pool
        self.scheduler = scheduler
        self.keep_job = keep_job
        self.account_url = account_url
        self.account_name = account_name
        self.leave_on_hangup = leave_on_hangup
        self.takeover = takeover
        self.settle_adoption = settle_adoption
        self.pool_cores = pool_cores
        self.leaving = False  # SIGHUP with --azbatch-leave-on-hangup: the run ends, its jobs and containers stay
        self.finalized = False
        self.not_terminated: set[str] = set()  # Batch jobs terminate gave up on: not tried again
        self.sigterm_installed = False
        self.cancelled = False  # Ctrl-C / SIGTERM: tasks ended by it were said once each (cancel)

    def cancel_on_sigterm(self) -> None:
        """Snakemake treats SIGTERM as "finish running jobs first"; for Batch tasks that may run for hours we
        want what Ctrl-C does (cancel: terminate tasks and job), so SIGTERM raises KeyboardInterrupt too. SIGHUP
        (a closed terminal, a dropped SSH session) would kill the process and leave everything running, heartbeat
        and all: it cancels the same way, or with --azbatch-leave-on-hangup ends the run leaving its tasks for a
        later run to adopt (adoption/). The scheduler installs its handler after creating the executor, hence this
        is done on first submission."""
        if self.sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        self.sigterm_installed = True
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGHUP, self._leave_on_hangup if self.leave_on_hangup else signal.default_int_handler)

    def _leave_on_hangup(self, signum, frame) -> None:
        self.leaving = True
        raise KeyboardInterrupt

    def end_for_outage(self, line: str) -> None:
        """Hand Snakemake the one line that ends the run, as the base class does with its status thread's errors:
        Snakemake prints it (an ApiError: one line, no traceback), shuts the executor down (which terminates the
        Batch jobs) and exits non-zero."""
        scheduler = self.scheduler()
        if scheduler is None:
            self.logger.error(line)
        else:
            scheduler.executor_error_callback(OutageExpired(line))

    def end_from_watch(self, line: str) -> None:
        """A pool deleted or a Batch job ended under the run (run_watch.py): the same way out as an outage; waits
        in progress stop at once."""
        self.outages.ended.set()
        self.end_for_outage(line)

    def cancel(self, active_jobs: List[SubmittedJobInfo]) -> None:
        """Ctrl-C / SIGTERM: terminating a Batch job terminates all of its running tasks. One line per cancelled
        task; a status round that still sees them ended does not report them as failures (an error block and the
        node's Snakemake banner for each would bury what happened)."""
        self.cancelled = True
        self.reporting.run_cancelled()
        if self.leaving:
            self.run_watch.leave()  # the jobs' metadata says so: a later run on any machine adopts at once
            jobs = ", ".join(self.all_batch_jobs()) or "none"
            left = len(self._unfinished(active_jobs))
            self.logger.warning(
                f"azbatch: SIGHUP: left {left} task(s) running on Batch (Batch jobs {jobs}) for the next "
                "run of this workflow to adopt: run it again with --rerun-incomplete")
            return
        self.run_watch.stop()
        for batch_job in self.all_batch_jobs():
            self.terminate(batch_job)
        for task_id, what in self._unfinished(active_jobs):
            self.logger.info(f"azbatch: cancelled Batch task {task_id} ({what})")

    def _unfinished(self, active_jobs: List[SubmittedJobInfo]) -> list[tuple[str, str]]:
        """(task id, what it runs) of every task not seen completed: the jobs Snakemake hands over, and the run's
        own record (Snakemake hands over none while a status round runs)."""
        tasks = {j.external_jobid: (f"group {j.job.name}" if j.job.is_group() else f"rule {j.job.name}")
                 for j in active_jobs}
        for attempt in self.reporting.recorder.unfinished():
            tasks.setdefault(attempt.task_id, f"rule {attempt.rule}")
        return sorted(tasks.items())

    def terminate(self, batch_job: str, reason: str = "snakemake run ended") -> bool:
        """Terminate a Batch job (ending its tasks), trying again for a while when Batch is unreachable. A job
        that could not be terminated is not tried again by this run (Ctrl-C cancels, then shuts down: one wait)."""
        failed = self.not_terminated
        self.run_watch.forget(batch_job)  # its end is this run's doing, not someone else's
        if batch_job in failed:
            return False
        done = terminate_job_retrying(
            self.batch, batch_job, reason, self.logger,
            account_url=self.account_url, account_name=self.account_name,
        )
        if not done:
            failed.add(batch_job)
        return done

    def end_job(self, batch_job: str, reason: str = "snakemake run ended") -> None:
        """Terminate a Batch job, let the run report read its last tasks, delete it unless kept."""
        if not self.terminate(batch_job, reason):
            return  # one line said how to terminate it by hand; nothing more can be done now
        self.reporting.job_terminated(batch_job, self.completed_since.get(batch_job))
        if self.keep_job:
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
        if self.keep_job:
            self.logger.info(f"azbatch: kept storage container {name} (the run's task outputs and logs; delete it "
                             f"with `az storage container delete --name {name} "
                             f"--account-name {self.staging.service.account_name}`)")
            return
        try:
            self.staging.delete_run_container()
        except Exception as e:  # one line; the container holds only this run's copies
            self.logger.error(f"azbatch: deleting storage container {name} failed ({error_text(e)}); delete it with "
                              f"`az storage container delete --name {name}`")

    def finalize(self) -> None:
        """What shutdown does after the base class: every Batch job ended, the report, the pool, the container."""
        if self.finalized:
            return
        self.finalized = True
        self.reporting.stop_progress()
        if self.leaving:  # what the tasks need stays: jobs, the run's container, a created pool
            self.run_watch.stop()
            self.reporting.finish({info.id: info.slots_per_node for info in self.pools.values()})
            self.staging.close()
            self.batch.close()
            return
        if not self.cancelled:
            self.settle_adoption(True)  # dead tasks nobody took end; adopted ones' jobs with the run's
        self.run_watch.stop()
        for batch_job in self.all_batch_jobs():  # every generation (link_renewal.py)
            self.end_job(batch_job)
        self.reporting.finish({info.id: info.slots_per_node for info in self.pools.values()},
                              {info.id: self.pool_cores(info) for info in self.pools.values()})
        self.delete_created_pool()
        self._end_run_container()
        if self.takeover.settled and not self.keep_job:  # adopted outputs are all downloaded by now
            for run in sorted(self.takeover.dead_runs):
                self.staging.remove_dead_run_container(run)
        self.staging.close()
        self.batch.close()
