"""The Snakemake remote executor: preflight, one Batch job per pool and run, bulk task submission, one list request
per Batch job per status round, staging through Blob storage, cancellation."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from datetime import datetime, timezone
from typing import AsyncGenerator, List

import snakemake
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from .adoption.takeover import Takeover
from .run import recovery
from .tasks import task_spec
from .run.run_identity import RunIdentity, workflow_key
from .run.run_watch import RunWatch
from .azure_api.azure_sdk import error_text, redact, unreachable
from .azure_api.job_quota import create_job_waiting
from .run.link_renewal import LinkRenewal, renewed_body
from .run.malloc_arenas import ARENAS as MALLOC_ARENAS, limit_malloc_arenas
from .azure_api.batch_client import BatchService, BatchServiceError, task_collections
from .config import Config, resolve
from .run.progress import quiet_progress
from .run.polling import AdaptiveInterval, default_maximum, first_interval, sleep_interval
from .run.node_health import NodeHealth
from .run.node_setup import NodeSetup
from .run.outage import OutageExpired, Outages
from .report.run_reporting import RunReporting
from .settings.profile_overrides import override_warnings, snakemake_cli_argv
from .run.run_end import RunEnd
from .run.pool_guard import PoolGuard
from .run.task_results import LOG_DIR, STATE_DIR, TaskResults
from .settings.executor_settings import SettingsError
from .staging import BlobLayout, NodePaths, Staging, StagingError, node_commands
from .staging import input_check, usage_probe
from .run.input_staging import raise_error, stage_inputs
from .tasks.task_builder import TaskBuilder
from .run.run_files import RunFiles
from .run.status_lists import StatusLists
from .run.submission import RateLimitHint, submit_streaming


def _default_credential():
    from .azure_api.credentials import default_credential

    return default_credential()


class Executor(RemoteExecutor):
    # The status thread starts before __post_init__ runs, so what it reads exists at class level.
    reporting: RunReporting | None = None
    poll_interval: AdaptiveInterval | None = None
    earlier_runs: recovery.EarlierRuns | None = None  # what crash recovery found (its dead_runs: their run tokens)

    def __post_init__(self):
        self.config: Config = resolve(self.workflow.executor_settings)
        if limit_malloc_arenas():
            self.logger.debug(f"azbatch: glibc malloc arenas limited to {MALLOC_ARENAS} (malloc_arenas.py)")
        for warning in override_warnings(snakemake_cli_argv(), os.environ):
            self.logger.warning(warning)
        self.workdir = os.getcwd()
        self._credential = None
        self._credential_lock = threading.Lock()
        self.batch = BatchService(self.config, self._credential_factory)
        # Sources, local inputs and outputs always go through our container; files that belong to a storage
        # provider (e.g. with --default-storage-provider) are left to it (task_spec.job_files skips them).
        self.run_token = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.staging = Staging(self.config, self._credential_factory, STATE_DIR, self.logger, self.run_token)
        self.layout: BlobLayout = self.staging.layout
        self.node_paths = NodePaths(self.workdir, self.config.files.mounted_paths)
        self.snakemake_version = snakemake.__version__
        self.workflow_label = os.path.basename(self.workdir.rstrip(os.sep)) or "workflow"
        self.run_identity = RunIdentity.current(workflow_key(self.workdir), self.run_token,
                                                self.config.scale.heartbeat_interval)
        self.run_watch = RunWatch(self.batch, self.run_identity, self.logger,
                                  lambda line: self.run_end.end_from_watch(line))
        self.batch_jobs: dict[str, str] = {}  # pool id (lower) -> Batch job id taking new tasks
        self._submit_lock = threading.Lock()
        self.rate_hint = RateLimitHint(self.workflow, self.logger.info)  # said once per run
        self._init_collaborators()
        if len(self.workflow.dag) > 0:
            self.pool_guard.preflight()
            self.earlier_runs = recovery.end_earlier_runs(  # .dead_runs: tokens of runs found dead
                self.batch, self.run_identity, self.config.scale.heartbeat_stale,
                keep=self.config.keep.orphans, delete=not self.config.keep.job, logger=self.logger,
                on_dead_run=None if self.config.keep.job else self.staging.remove_dead_run_container,
                spare=None if self.config.keep.no_adopt else self.takeover.survey,  # its tasks may be adopted
            )

    def _init_collaborators(self) -> None:
        """The parts of a run the executor delegates to, each given what it needs."""
        interval = first_interval(self.config.scale.status_interval, float(
            self.workflow.remote_execution_settings.seconds_between_status_checks or 0), self.config.account.url)
        self.next_seconds_between_status_checks = interval
        maximum = self.config.scale.status_interval_max or default_maximum(interval)
        self.poll_interval = AdaptiveInterval(interval, maximum)
        self.node_health = NodeHealth(lambda: self.batch.client, self.logger, LOG_DIR,
                                      unusable_wait=self.config.scale.unusable_wait)
        self.reporting = RunReporting(  # live progress and the run report (report/, progress.py)
            client=lambda: self.batch.client, logger=self.logger, config=self.config, run_token=self.run_token,
            workdir=self.workdir, log_root=LOG_DIR, jobs=self._jobs_by_pool, quiet=quiet_progress(self.workflow),
            observe_nodes=self.node_health.states.observe, usage_blobs=self.staging.run_blob_names,
            waiting=self.run_watch.allocation.waiting_text, older_jobs=lambda: self.links.retired_by_pool(),
        )
        self.node_health.states.observers.append(self.reporting.node_hours.observe)  # billed node-hours
        methods = getattr(self.workflow.deployment_settings, "deployment_method", None) or ()
        self.run_files = RunFiles(self.config, self.staging, self.node_paths, lambda: self.workflow.dag.get_sources(),
                                  STATE_DIR / "sources.tar.gz")  # sources archive and bootstrap files, once
        self.node_setup = NodeSetup(  # what the nodes need: bootstrap (preparation task), task prefix, prefixes
            self.config, frozenset(m.item_to_choice() for m in methods), self.snakemake_version,
            stage=self.run_files.stage_fetched, log=self.logger.info,
        )
        self.outages = Outages(  # Batch or storage unreachable mid-run: wait, say so, give up after the tolerance
            self.config.account.url, self.staging.endpoint, self.config.scale.outage_tolerance_minutes, self.logger,
            lambda line: self.run_end.end_for_outage(line),
        )
        self.status_lists = StatusLists(self.config, self.batch, self.outages, self.run_watch, self.reporting,
                                        self.logger)
        self.links = LinkRenewal(  # Batch job generations; waiting tasks' links renewed (link_renewal.py)
            self.staging, self.batch, self.outages, self.reporting, self.logger, submit_lock=self._submit_lock,
            batch_job_for=self.batch_job_for, current_jobs=lambda: self.batch_jobs.values(),
            submitted=self._submitted, sas_hours=self.config.links.sas_hours, task_anew=self._task_anew)
        self.results = TaskResults(  # a finished task's outputs, or its logs and the reason it failed
            self.config, self.batch, self.staging, self.outages, self.workdir, self.logger, self.links.link_failure_line)
        self.tasks = TaskBuilder(  # a job, its pool and its staged inputs -> its task request
            self.config, self.staging, self.node_paths, job_args=self.get_job_args,
            storage_call=self.outages.storage.call, warn=self.logger.warning,
        )
        self.pool_guard = PoolGuard(  # preflight, the pool the run creates, each rule against its pool
            self.config, self.batch, self.staging, self.node_setup, self.tasks, self.run_watch, self.workflow,
            lambda: self.batch_jobs.values(), self.logger)
        self.pool_guard.on_created = self.reporting.node_hours.pool_created  # billed from its creation
        self.pools = self.pool_guard.pools  # pool id (lower) -> PoolInfo
        self.takeover = Takeover(  # a dead earlier run's tasks this run's jobs take over (adoption/)
            self.batch, self.staging, self.run_identity, self.reporting, self.run_watch, self.logger,
            self.snakemake_version)
        self.run_end = RunEnd(  # Batch jobs ended, the report, the created pool deleted; Ctrl-C and SIGTERM
            self.batch, self.staging, self.reporting, self.run_watch, self.outages, self.logger,
            all_batch_jobs=self.links.all_batch_jobs, pools=self.pools, completed_since=self.status_lists.since,
            delete_created_pool=self.pool_guard.delete_created_pool,
            scheduler=lambda: getattr(self.workflow, "scheduler", None), keep_job=self.config.keep.job,
            account_url=self.config.account.url, account_name=self.config.account.name,
            leave_on_hangup=self.config.keep.leave_on_hangup, takeover=self.takeover,
            settle_adoption=self._settle_adoption, pool_cores=self.pool_guard.pool_cores)

    # ---- setup -------------------------------------------------------------------------------------------------
    def _credential_factory(self):
        with self._credential_lock:
            if self._credential is None:
                self._credential = _default_credential()
            return self._credential

    def _submitted(self) -> List[SubmittedJobInfo]:
        """Jobs handed to Snakemake's status loop and not yet seen by a status round (the base class's list)."""
        with self.lock:
            return list(self.active_jobs)

    def _jobs_by_pool(self) -> dict[str, str]:
        return {self.pools[key].id: job for key, job in list(self.batch_jobs.items())}

    def batch_job_for(self, pool_id: str) -> str:
        """One Batch job per pool used by the run, created on first use, and again (a new generation with fresh
        links) when the links of its preparation task near their end (link_renewal.py)."""
        key = pool_id.lower()
        previous = self.batch_jobs.get(key)
        if previous is None or self.links.job_links_aging(previous):
            pool = self.pool_guard.pool_info(pool_id, setting="the azbatch_pool resource")
            generation = 1 + sum(1 for j in self.links.job_pools.values() if j.lower() == key)
            job_id = task_spec.job_id(self.workflow_label, pool_id, self.run_token, generation)
            with self.staging.links.handing_out() as links:  # the whole lifetime; cached bodies get fresh links
                prep = renewed_body(self.pool_guard.preparation_task(pool, self.run_files.sources()), self.staging.links)
            body = task_spec.job_body(
                job_id,
                pool_id,
                f"snakemake {self.workflow_label} ({self.workdir})",
                workflow=os.path.abspath(self.workflow.main_snakefile),
                prep_task=prep,
                metadata=self.run_identity.metadata(datetime.now(timezone.utc)),
                common_env={**self.envvars(), **usage_probe.job_environment(
                    self.staging.output_container_url(), self.staging.identity),  # where nodes write their usage
                    task_spec.TASK_PREFIX_VARIABLE: self._job_wide_prefix()},
            )
            interval = max(1.0, min(15.0, self.next_seconds_between_status_checks))
            self.outages.batch.call(lambda: create_job_waiting(self.batch, body, self.logger, interval=interval))
            self.batch_jobs[key] = job_id
            self.run_watch.track(job_id, pool_id, body["metadata"])  # heartbeat; pool and job watched
            self.links.job_created(job_id, pool_id, links.expiry, previous)
            if previous is None:
                self.logger.info(f"azbatch: Batch job {job_id} on pool {pool_id}")
        return self.batch_jobs[key]

    # ---- command -----------------------------------------------------------------------------------------------
    def get_python_executable(self):
        return "python3"

    def _job_wide_prefix(self) -> str:
        """What every task runs before Snakemake, the same for the whole Batch job: it travels once, in the job's
        common environment, and each task evaluates it (fewer bytes per task definition)."""
        parts = [
            self.node_setup.exec_prefix(),  # application packages and the node-wide installs on PATH
            node_commands.link_command(),  # the sources, extracted once per node by the preparation task
            input_check.verify_function(self.layout.cas_prefix),  # what each task's inputs check calls
            self.config.software.precommand or "",
            usage_probe.shell_functions(node_commands.helper_invocation()),  # CPU and peak memory, measured
            task_spec.snakemake_function(usage_probe.measured(super().format_job_exec(task_spec.RUN_WIDE))),
        ]
        return " && ".join(p for p in parts if p)

    def format_job_exec(self, job) -> str:
        """The job's own arguments only (TaskBuilder.command); a task's inputs fetch and check are added when
        its task is built."""
        return self.tasks.command(job)

    def get_job_args(self, job, **kwargs) -> str:
        return '"$@"' if job is task_spec.RUN_WIDE else super().get_job_args(job, **kwargs)

    def get_job_exec_prefix(self, job: JobExecutorInterface):
        return "" if job is task_spec.RUN_WIDE else self.tasks.exec_prefix()

    def additional_general_args(self) -> str:
        return self.node_setup.snakemake_args()

    # ---- submission --------------------------------------------------------------------------------------------
    def _report_preparation_error(self, job: JobExecutorInterface, e: Exception) -> None:
        if isinstance(e, OutageExpired):
            raise e  # the whole run ends (run_jobs), not this job
        if isinstance(e, (StagingError, BatchServiceError, SettingsError, WorkflowError)):
            message = redact(str(e))
        else:
            message = f"azbatch: preparing the task failed: {error_text(e)}"
        self.report_job_error(SubmittedJobInfo(job), msg=message)

    def run_job(self, job: JobExecutorInterface):
        self.run_jobs([job])

    def run_jobs(self, jobs: List[JobExecutorInterface]):
        try:
            self._run_jobs(jobs)
        except OutageExpired:
            pass  # Snakemake ends the run (RunEnd.end_for_outage); these jobs never reach Batch

    def _run_jobs(self, jobs: List[JobExecutorInterface]):
        """Stage every ready job's inputs together, build each task as requests fill, submit in bulk, record."""
        self.run_end.cancel_on_sigterm()
        self.rate_hint(len(jobs))
        for job in jobs:
            self.run_job_pre(job)
        with self._submit_lock:
            staged_inputs, blobs = stage_inputs(jobs, self.node_paths, self.run_files, self.staging,
                                                self.outages.storage.call, self._report_preparation_error)
            requests = task_collections(self._task_bodies(jobs, staged_inputs, blobs))
            for batch_job, submitted, results in submit_streaming(
                self.batch, requests, self.config.scale.submit_concurrency, self.outages.batch.call
            ):
                self._record_submissions(batch_job, submitted, results)
            self._settle_adoption()

    def _settle_adoption(self, force: bool = False) -> None:
        """Once every ready job is handed over (or at the end, `force`): what nobody took ends (takeover.py)."""
        ready = getattr(getattr(self.workflow, "dag", None), "ready_jobs", None)  # not in the executor interface
        self.takeover.settle(ready if isinstance(ready, (set, frozenset)) else None,
                             lambda job: self.run_end.end_job(job, recovery.terminate_reason(self.run_identity)),
                             self.links.follow_job, force)

    def _task_bodies(self, jobs, staged_inputs: dict, blobs: dict[str, str] | None):
        """(Batch job id, task body, what the results are reported with), built as requests fill."""
        for job in jobs:
            if id(job) not in staged_inputs:
                continue
            try:
                built = self._task_body(job, *staged_inputs.pop(id(job)), blobs)
            except Exception as e:
                self._report_preparation_error(job, e)
                continue
            if built is not None:
                yield built

    def _task_body(self, job, files, pairs, blobs: dict[str, str] | None, adopt: bool = True):
        """A job's task, or None when it takes a dead run's task instead (`adopt`)."""
        job_blobs = blobs if blobs is not None else self.outages.storage.call(lambda: (
            self.staging.create_run_container(), self.staging.stage_files(p for p, _ in pairs))[1])
        pool_id = self.tasks.pool_id(job)
        pool = self.pool_guard.pool_info(pool_id, setting="the azbatch_pool resource")
        key = self.takeover.key_for(job, pairs, job_blobs, pool.id, self.tasks.image(job))
        need = self.links.task_need(job)
        adopted = self.takeover.adopt(job, key, need) if adopt else None  # a dead run's task computing the same
        if adopted is not None:
            self.report_job_submission(adopted)
            return None
        with self.staging.links.handing_out(need) as links:  # valid for as long as it needs
            request = self.tasks.build(job, pool, files, pairs, job_blobs, key)
        batch_job = self.batch_job_for(pool_id)
        if batch_job in self.node_health.dead:
            raise WorkflowError(self.node_health.dead[batch_job])
        return batch_job, task_spec.task_body(request), (job, request.id, pool.id, request.slots, links.expiry, need)

    def _task_anew(self, job):
        """A task of this run for a job whose adopted waiting task was given up (link_renewal.py): (Batch job,
        body, links expiry, blob prefix). Under the submission lock; raises what stops it."""
        staged_inputs, blobs = stage_inputs([job], self.node_paths, self.run_files, self.staging,
                                            self.outages.storage.call, raise_error)
        batch_job, body, (_, task_id, _, _, expiry, _) = self._task_body(job, *staged_inputs[id(job)], blobs, False)
        return batch_job, body, expiry, self.layout.task_prefix(task_id)

    def _record_submissions(self, batch_job: str, submitted, results: dict[str, str | None]) -> None:
        for job, task_id, pool_id, slots, expiry, need in submitted:
            error = results.get(task_id, "no result from Batch")
            aux = {"batch_job": batch_job, "blob_prefix": self.layout.task_prefix(task_id)}
            self.links.note_links(aux, expiry, need)
            info = SubmittedJobInfo(job, external_jobid=task_id, aux=aux)
            if error is None:
                self.report_job_submission(info)
                self.reporting.task_submitted(job, task_id, batch_job, pool_id, slots)
            else:
                self.report_job_error(info, msg=error)

    # ---- status ------------------------------------------------------------------------------------------------
    async def sleep(self) -> None:
        await sleep_interval(lambda: float(self.next_seconds_between_status_checks or 0))

    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        if self.outages.ended.is_set():  # the run is ending (outage): nothing more to look at
            for job_info in active_jobs:
                yield job_info
            return
        dead = await self._check_nodes()
        at_risk = self.links.links_at_risk(active_jobs)  # waiting tasks whose links near their end: replaced
        for job_info, message in (await asyncio.to_thread(self.links.renew_waiting_links, at_risk)) if at_risk else ():
            self.report_job_error(job_info, msg=message)
            active_jobs = [j for j in active_jobs if j is not job_info]
        for batch_job in self.links.idle_retired_jobs(active_jobs):  # earlier generations with no task left
            await asyncio.to_thread(self.run_end.end_job, batch_job)
        completed, gone, finished = await self.status_lists.list_round(
            {(j.aux["batch_job"], j.external_jobid) for j in active_jobs}, self.status_rate_limiter)
        # Newly completed tasks (not repeats from the margin) keep the interval short; quiet rounds lengthen it.
        if self.poll_interval is not None:
            self.next_seconds_between_status_checks = self.poll_interval.after_round(finished)
        finished_jobs = []
        for job_info in active_jobs:
            if job_info.aux["batch_job"] in dead:
                self.report_job_error(job_info, msg=dead[job_info.aux["batch_job"]])
                continue
            if job_info.aux["batch_job"] in gone:
                self.report_job_error(
                    job_info, msg=f"azbatch: Batch job {job_info.aux['batch_job']} was deleted outside this run"
                )
                continue
            task = completed.get((job_info.aux["batch_job"], job_info.external_jobid))
            if task is None:
                yield job_info
                continue
            if getattr(getattr(task.execution_info, "failure_info", None), "code", None) == "TaskEnded":
                if self.run_end.cancelled:
                    continue  # this run's cancellation ended it: its one line is said, no error block
                if await asyncio.to_thread(self.run_watch.ended_outside, job_info.aux["batch_job"]):
                    yield job_info  # its whole job was terminated outside this run: that one line ends the run
                    continue
            finished_jobs.append((job_info, task))
        for (job_info, _), collected in zip(finished_jobs, await self.results.collect_all(finished_jobs)):
            if collected is None:
                yield job_info  # the run is ending after an outage; its outputs were never downloaded
                continue
            ok, message, aux_logs = collected
            if ok:
                self.report_job_success(job_info)
            else:
                self.report_job_error(job_info, msg=message, aux_logs=aux_logs)

    async def _check_nodes(self) -> dict[str, str]:
        """Batch job -> why no node can run its tasks (failed preparation / start tasks, at most every 30 s; nodes
        unusable too long). A dead job is terminated at once (its tasks could never run) and its waiting jobs are
        reported failed."""
        if not self.batch_jobs or self.outages.batch.down:
            return dict(self.node_health.dead)
        newly = await asyncio.to_thread(self.node_health.check, self._jobs_by_pool())
        for batch_job, message in newly.items():
            self.logger.error(message)
            await asyncio.to_thread(self.run_end.terminate, batch_job, "no node can run its tasks")
        return dict(self.node_health.dead)

    # ---- end ---------------------------------------------------------------------------------------------------
    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        self.run_end.cancel(active_jobs)

    def shutdown(self):
        super().shutdown()
        self.run_end.finalize()
