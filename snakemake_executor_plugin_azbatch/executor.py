"""The Snakemake remote executor: preflight, one Batch job per pool and run, bulk task submission, one list request
per Batch job per status round, staging through Blob storage, cancellation."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncGenerator, List
from urllib.parse import urlparse

import snakemake
from azure.core.exceptions import ResourceNotFoundError
from snakemake.common.tbdstring import TBDString
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from . import recovery, task_spec
from .run_identity import RunIdentity, workflow_key
from .run_watch import RunWatch
from .azure_sdk import error_text, redact, unreachable
from .job_quota import create_job_waiting
from .link_renewal import LinkRenewal, renewed_body
from .malloc_arenas import ARENAS as MALLOC_ARENAS, limit_malloc_arenas
from .batch_client import BatchService, BatchServiceError, PoolInfo, task_collections
from .config import Config, resolve
from .polling import AdaptiveInterval, default_maximum, sleep_interval
from .node_health import NodeHealth
from .node_setup import NodeSetup, StagedFiles
from .outage import OutageExpired, Outages
from .run_report.reporting import RunReporting
from .profile_overrides import override_warnings, snakemake_cli_argv
from .run_end import RunEnd
from .run_pools import RunPools
from .task_results import LOG_DIR, STATE_DIR, TaskResults
from .settings import SettingsError
from .staging import BlobLayout, NodePaths, Staging, StagingError, node_commands
from .staging import input_check
from .staging.manifest import manifest_env, stage_manifest
from .staging.node_helper import READ_URL_VARIABLE
from .staging.sources_archive import PreparedSources, stage_sources
from .submission import rate_limit_hint, submit_streaming
from .credentials import explain

COMPLETION_MARGIN = timedelta(seconds=60)


def is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _default_credential():
    from .credentials import default_credential

    return default_credential()


class Executor(RunPools, RunEnd, TaskResults, LinkRenewal, RemoteExecutor):
    # The status thread starts before __post_init__ runs, so what it reads exists at class level.
    status_rounds = 0
    completed_since: dict = {}  # Batch job id -> lower bound for the next round's completed-task filter
    reporting: RunReporting | None = None
    created_pool: str | None = None  # the pool this run created (pool_creation), deleted at the end unless kept
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
        self.node_paths = NodePaths(self.workdir, self.config.mounted_paths)
        self.snakemake_version = snakemake.__version__
        self.workflow_label = os.path.basename(self.workdir.rstrip(os.sep)) or "workflow"
        self.run_identity = RunIdentity.current(workflow_key(self.workdir), self.run_token,
                                                self.config.heartbeat_interval)
        self.run_watch = RunWatch(self.batch, self.run_identity, self.logger, self._end_run_from_watch)
        self.batch_jobs: dict[str, str] = {}  # pool id (lower) -> Batch job id taking new tasks
        self._init_link_renewal()  # earlier generations of those jobs, when links expire (link_renewal.py)
        self.pools: dict[str, PoolInfo] = {}
        self.run_sources: PreparedSources | None = None  # the sources archive, staged once per run
        self.manifests: dict[int, str] = {}  # id(job) -> sha256 of its input manifest, while its task is built
        self.input_checks: dict[int, str] = {}  # id(job) -> its inputs' node-side check (input_check.py), likewise
        self._submit_lock = threading.Lock()
        self._finalized = False
        self.completed_since = {}
        self._sigterm_installed = False
        self._cancelled = False  # Ctrl-C / SIGTERM: tasks ended by it were said once each (RunEnd.cancel_jobs)
        self._rate_hinted = False  # said once per run (submission.rate_limit_hint)
        self._threads_warned: set[tuple[str, str]] = set()
        interval = self.config.status_interval
        if interval is None:
            snakemake_interval = float(self.workflow.remote_execution_settings.seconds_between_status_checks or 0)
            # A loopback account is the local service: rounds are cheap there, and quick feedback matters.
            interval = 1.0 if is_loopback(self.config.account_url) else max(1.0, snakemake_interval)
        self.next_seconds_between_status_checks = interval
        maximum = self.config.status_interval_max or default_maximum(interval)
        self.poll_interval = AdaptiveInterval(interval, maximum)
        self.node_health = NodeHealth(lambda: self.batch.client, self.logger, LOG_DIR,
                                      unusable_wait=self.config.unusable_wait)
        self.reporting = RunReporting(  # live progress and the run report (run_report/, progress.py)
            client=lambda: self.batch.client, logger=self.logger, config=self.config, run_token=self.run_token,
            workdir=self.workdir, log_root=LOG_DIR, jobs=self._jobs_by_pool, quiet=self._quiet_progress(),
            observe_nodes=self.node_health.states.observe, waiting=self.run_watch.allocation.waiting_text,
        )
        methods = getattr(self.workflow.deployment_settings, "deployment_method", None) or ()
        self.node_setup = NodeSetup(  # what the nodes need: bootstrap (preparation task), task prefix, prefixes
            self.config, frozenset(m.item_to_choice() for m in methods), self.snakemake_version,
            stage=self._stage_fetched, log=self.logger.info,
        )
        self.outages = Outages(  # Batch or storage unreachable mid-run: wait, say so, give up after the tolerance
            self.config.account_url, self.staging.endpoint, self.config.outage_tolerance_minutes, self.logger,
            self._end_run_for_outage,
        )
        if len(self.workflow.dag) > 0:
            self.preflight()
            self.earlier_runs = recovery.end_earlier_runs(  # .dead_runs: tokens of runs found dead
                self.batch, self.run_identity, self.config.heartbeat_stale,
                keep=self.config.keep_orphans, delete=not self.config.keep_job, logger=self.logger,
                on_dead_run=None if self.config.keep_job else self.staging.remove_dead_run_container,
            )

    # ---- setup -------------------------------------------------------------------------------------------------
    def _credential_factory(self):
        with self._credential_lock:
            if self._credential is None:
                self._credential = _default_credential()
            return self._credential

    def _jobs_by_pool(self) -> dict[str, str]:
        return {self.pools[key].id: job for key, job in list(self.batch_jobs.items())}

    def _quiet_progress(self) -> bool:
        """--quiet (progress, or all) silences the progress lines; the interface does not expose it, the
        workflow does."""
        from snakemake.settings.enums import Quietness

        quiet = getattr(getattr(self.workflow, "output_settings", None), "quiet", None) or ()
        return Quietness.PROGRESS in quiet or Quietness.ALL in quiet

    def batch_job_for(self, pool_id: str) -> str:
        """One Batch job per pool used by the run, created on first use, and again (a new generation with fresh
        links) when the links of its preparation task near their end (link_renewal.py)."""
        key = pool_id.lower()
        previous = self.batch_jobs.get(key)
        if previous is None or self.job_links_aging(previous):
            pool = self.pool_info(pool_id, setting="the azbatch_pool resource")
            generation = 1 + sum(1 for j in self.job_pools.values() if j.lower() == key)
            job_id = task_spec.job_id(self.workflow_label, pool_id, self.run_token, generation)
            with self.staging.links.handing_out() as links:  # the whole lifetime; cached bodies get fresh links
                prep = renewed_body(self._preparation_task(pool, self._run_sources()), self.staging.links)
            body = task_spec.job_body(
                job_id,
                pool_id,
                f"snakemake {self.workflow_label} ({self.workdir})",
                workflow=os.path.abspath(self.workflow.main_snakefile),
                prep_task=prep,
                metadata=self.run_identity.metadata(datetime.now(timezone.utc)),
                common_env={**self.envvars(), task_spec.TASK_PREFIX_VARIABLE: self._job_wide_prefix()},
            )
            interval = max(1.0, min(15.0, self.next_seconds_between_status_checks))
            self.outages.batch.call(lambda: create_job_waiting(self.batch, body, self.logger, interval=interval))
            self.batch_jobs[key] = job_id
            self.run_watch.track(job_id, pool_id, body["metadata"])  # heartbeat; pool and job watched
            self.job_created(job_id, pool_id, links.expiry, previous)
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
            self.config.precommand or "",
            task_spec.snakemake_function(super().format_job_exec(task_spec.RUN_WIDE)),
        ]
        return " && ".join(p for p in parts if p)

    def format_job_exec(self, job) -> str:
        """The job's own arguments only: the rest of Snakemake's command line is the same for the whole run and
        comes from the shell function the job-wide prefix defines (task_spec.snakemake_function)."""
        return f"{self.get_job_exec_prefix(job)} && {task_spec.SNAKEMAKE_FUNCTION} {self.get_job_args(job).strip()}"

    def get_job_args(self, job, **kwargs) -> str:
        return '"$@"' if job is task_spec.RUN_WIDE else super().get_job_args(job, **kwargs)

    def get_job_exec_prefix(self, job: JobExecutorInterface):
        if job is task_spec.RUN_WIDE:
            return ""
        manifest = self.manifests.get(id(job))
        fetch = node_commands.fetch_command(manifest) + " && " if manifest else ""  # before the links: inputs win
        verify = self.input_checks.get(id(job))  # before the command: every input against its sha256
        return f'{fetch}eval "${task_spec.TASK_PREFIX_VARIABLE}"' + (f" && {verify}" if verify else "")

    def additional_general_args(self) -> str:
        return self.node_setup.snakemake_args()

    # ---- staging -----------------------------------------------------------------------------------------------
    def _stage(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Resource files for (local path, node path) pairs."""
        if not pairs:
            return []
        blobs = self.staging.stage_files(p for p, _ in pairs)
        return [self.staging.resource_file(blobs[os.path.abspath(p)], node) for p, node in pairs]

    def _stage_fetched(self, pairs: list[tuple[Path, str]]) -> StagedFiles:
        """Bootstrap files the node fetches only when it needs them: one manifest resource file and a read URL
        (with a managed identity, the files themselves: the node could not fetch without a token)."""
        pairs = [(str(local), node) for local, node in pairs]
        if self.staging.identity:
            return StagedFiles(self._stage(pairs))
        blobs = self.staging.stage_files(p for p, _ in pairs)
        spec, digest = stage_manifest(self.staging, pairs, blobs)
        return StagedFiles([spec], digest, {READ_URL_VARIABLE: self.staging.read_container_url()})

    def _run_sources(self) -> PreparedSources:
        """The run's sources and local extra files as one archive blob, extracted by each node's job preparation
        task; URL extra files are downloaded there once per node too."""
        if self.run_sources is None:
            pairs = []
            for source in sorted(self.workflow.dag.get_sources()):
                for f in NodePaths.expand(source):
                    if os.path.isfile(f):
                        pairs.append((f, self.node_paths.node_path(f, "workflow source")))
            pairs += [(x.source, x.node_path) for x in self.config.resource_files if not x.is_url]
            urls = [(x.source, x.node_path) for x in self.config.resource_files if x.is_url]
            self.run_sources = stage_sources(self.staging, STATE_DIR / "sources.tar.gz", pairs, urls)
        return self.run_sources

    def _input_files(self, job, pairs: list[tuple[str, str]], blobs: dict[str, str]) -> tuple[list[dict], dict]:
        """The task's input resource files and extra environment: one per input, or above the threshold one
        manifest the task fetches itself (not with a managed identity: the node would need a token of its own)."""
        if len(pairs) > self.config.input_manifest_threshold and not self.staging.identity:
            spec, digest = self.outages.storage.call(lambda: stage_manifest(self.staging, pairs, blobs))
            self.manifests[id(job)] = digest  # fetch checks each file's sha256
            return [spec], manifest_env(self.staging, [blobs[os.path.abspath(local)] for local, _ in pairs])
        files = {node.replace(os.sep, "/"): self.staging.resource_file(blobs[os.path.abspath(local)], node)
                 for local, node in pairs}
        self.input_checks[id(job)] = input_check.task_verify_command(self.staging, pairs, blobs)
        return list(files.values()), {}

    # ---- submission --------------------------------------------------------------------------------------------
    def _resource(self, job: JobExecutorInterface, name: str):
        members = list(job.jobs) if job.is_group() else [job]
        for member in [job, *members]:
            try:
                value = member.resources.get(name)
            except Exception:
                value = None
            if value not in (None, ""):
                return value if isinstance(value, TBDString) else str(value)
        return None

    def _pool_id(self, job: JobExecutorInterface) -> str:
        return self._resource(job, "azbatch_pool") or self.config.pool_id

    def _image(self, job: JobExecutorInterface) -> str | None:
        return self._resource(job, "azbatch_container_image") or self.config.container_image

    def _task_request(
        self, job: JobExecutorInterface, pool: PoolInfo, files: task_spec.JobFiles,
        pairs: list[tuple[str, str]], blobs: dict[str, str],
    ) -> task_spec.TaskRequest:
        tid = task_spec.task_id(job)
        task_prefix = self.layout.task_prefix(tid)
        resource_files, extra_env = self._input_files(job, pairs, blobs)
        output_files = task_spec.output_file_specs(
            files,
            self.layout.task_files_dir(task_prefix),
            self.layout.task_batch_logs_dir(task_prefix),
            self.staging.output_container_url(),
            self.staging.identity,
        )
        slots, warning = task_spec.required_slots(job.threads, pool.slots_per_node)
        if warning:
            self.logger.warning(f"azbatch: job {job.name} (task {tid}) {warning}")
        image = self._image(job)
        problem = pool.container_problem(job.name, image) or self.resource_problem(job, pool)
        if problem:
            raise SettingsError(problem)
        try:
            script = node_commands.with_directories(  # empty directories: made for inputs, listed for outputs
                self.format_job_exec(job), self.node_paths.empty_dirs(files.inputs, "input directory"),
                [o.path for o in files.outputs if o.directory], task_spec.EMPTY_DIRS_FILE)
        finally:
            self.manifests.pop(id(job), None)
            self.input_checks.pop(id(job), None)
        return task_spec.TaskRequest(
            id=tid,
            display_name=f"{job.name} {job.jobid} attempt {job.attempt}",
            script=script,
            env=extra_env,  # Snakemake's envvars are the same for every task: the job's common environment
            resource_files=resource_files,
            output_files=output_files,
            slots=slots,
            max_wall_clock_seconds=task_spec.runtime_seconds(job.resources),
            container_image=image,
            application_packages=[p.reference() for p in self.config.application_packages],
            retention_seconds=self.config.task_retention_minutes * 60 or None,
        )

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
            pass  # Snakemake ends the run (_end_run_for_outage); these jobs never reach Batch

    def _run_jobs(self, jobs: List[JobExecutorInterface]):
        self._cancel_on_sigterm()
        if not self._rate_hinted:
            # Neither is in the executor interface: read defensively, so another Snakemake only loses the hint.
            limit = getattr(getattr(self.workflow, "scheduling_settings", None), "max_jobs_per_timespan", None)
            ready = getattr(getattr(self.workflow, "dag", None), "ready_jobs", None)  # without the jobs handed over
            hint = rate_limit_hint(limit, len(jobs), len(ready) if isinstance(ready, (set, frozenset)) else None)
            if hint:
                self._rate_hinted = True
                self.logger.info(hint)
        for job in jobs:
            self.run_job_pre(job)
        with self._submit_lock:
            # Inputs of all ready jobs are staged together: one parallel hash/upload pass, one record save.
            staged_inputs: dict[int, tuple[task_spec.JobFiles, list[tuple[str, str]]]] = {}
            for job in list(jobs):
                try:
                    files = task_spec.job_files(job)
                    staged_inputs[id(job)] = (files, self.node_paths.pairs(files.inputs, "input file"))
                except Exception as e:
                    self._report_preparation_error(job, e)
            paths = [p for _, pairs in staged_inputs.values() for p, _ in pairs]

            def stage_all() -> dict[str, str]:
                self._run_sources()
                self.staging.create_run_container()  # where the tasks write (run_container.py)
                return self.staging.stage_files(paths)

            try:
                blobs = self.outages.storage.call(stage_all)  # waits out a storage outage (outage.py)
            except OutageExpired:
                raise
            except Exception:
                blobs = None  # stage job by job below, so a problem is reported for the job it belongs to

            def task_bodies():
                """(Batch job id, task body, what the results are reported with), built as requests fill."""
                for job in jobs:
                    if id(job) not in staged_inputs:
                        continue
                    files, pairs = staged_inputs.pop(id(job))
                    try:
                        job_blobs = blobs if blobs is not None else self.outages.storage.call(lambda: (
                            self.staging.create_run_container(), self.staging.stage_files(p for p, _ in pairs))[1])
                        pool_id = self._pool_id(job)
                        pool = self.pool_info(pool_id, setting="the azbatch_pool resource")
                        need = self.task_need(job)
                        with self.staging.links.handing_out(need) as links:  # valid for as long as it needs
                            request = self._task_request(job, pool, files, pairs, job_blobs)
                        batch_job = self.batch_job_for(pool_id)
                        if batch_job in self.node_health.dead:
                            raise WorkflowError(self.node_health.dead[batch_job])
                    except Exception as e:
                        self._report_preparation_error(job, e)
                        continue
                    yield batch_job, task_spec.task_body(request), (job, request.id, pool.id, request.slots,
                                                                   links.expiry, need)

            requests = task_collections(task_bodies())
            for batch_job, submitted, results in submit_streaming(
                self.batch, requests, self.config.submit_concurrency, self.outages.batch.call
            ):
                for job, task_id, pool_id, slots, expiry, need in submitted:
                    error = results.get(task_id, "no result from Batch")
                    aux = {"batch_job": batch_job, "blob_prefix": self.layout.task_prefix(task_id)}
                    self.note_links(aux, expiry, need)
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
        completed: dict[str, object] = {}
        gone: set[str] = set()
        dead = await self._check_nodes()
        at_risk = self.links_at_risk(active_jobs)  # waiting tasks whose links near their end: replaced
        for job_info, message in (await asyncio.to_thread(self.renew_waiting_links, at_risk)) if at_risk else ():
            self.report_job_error(job_info, msg=message)
            active_jobs = [j for j in active_jobs if j is not job_info]
        for batch_job in self.idle_retired_jobs(active_jobs):  # earlier generations with no task left
            await asyncio.to_thread(self._end_job, batch_job)
        batch_jobs = sorted({j.aux["batch_job"] for j in active_jobs})
        self.status_rounds += 1
        job_ids_active = {j.external_jobid for j in active_jobs}
        finished = 0
        self.logger.debug(f"azbatch: status round {self.status_rounds}: one task list for each of {len(batch_jobs)} Batch job(s)")
        for batch_job in batch_jobs:
            async with self.status_rate_limiter:
                started = time.monotonic()
                try:
                    since = self.completed_since.get(batch_job)
                    # Only tasks of jobs still active come back: the margin's repeats are dropped page by page.
                    tasks, latest = await asyncio.to_thread(self.batch.completed_tasks, batch_job, since, job_ids_active)
                except ResourceNotFoundError:
                    gone.add(batch_job)
                    continue
                except Exception as e:
                    if unreachable(e):  # an outage: all jobs stay active, one line says so (outage.py)
                        self.outages.batch.failed(e, started)
                        break
                    # Its jobs stay active and are checked again next round.
                    # A token that can no longer be renewed (e.g. a revoked secret) is named in one line.
                    why = explain(e, f"Batch account {self.config.account_url}", keyed=bool(self.config.account_key))
                    why = why.removeprefix("azbatch: ") if why else error_text(e)
                    self.logger.warning(f"azbatch: listing tasks of {batch_job} failed, retrying: {why}")
                    continue
            self.outages.batch.recovered()
            for task in tasks:
                completed[task.id] = task
                if getattr(getattr(task.execution_info, "failure_info", None), "code", None) == "TaskEnded":
                    self.run_watch.poke()  # ended by request: was the whole job terminated outside this run?
            finished += len(tasks)
            if self.reporting is not None:
                self.reporting.tasks_listed(tasks)
            if latest is not None:
                # A margin covers tasks whose completion becomes visible after later ones; its repeats are dropped
                # because only still-active jobs are kept.
                self.completed_since[batch_job] = latest - COMPLETION_MARGIN
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
            task = completed.get(job_info.external_jobid)
            if task is None:
                yield job_info
                continue
            if self._cancelled and getattr(getattr(task.execution_info, "failure_info", None), "code", None) == "TaskEnded":
                continue  # this run's cancellation ended it: its one line is said, no error block
            finished_jobs.append((job_info, task))
        for (job_info, _), collected in zip(finished_jobs, await self._collect_all(finished_jobs)):
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
            await asyncio.to_thread(self._terminate, batch_job, "no node can run its tasks")
        return dict(self.node_health.dead)
