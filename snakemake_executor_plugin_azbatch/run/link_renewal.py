"""Links that outlive no task: `LinkRenewal`, which `Executor` holds and calls.

Every SAS link a node gets lives `--azbatch-sas-hours` from when it is signed (staging/links.py). Three things keep
a run of any length working with links shorter than it:

- A task's links are signed (or a cached link reused) when its body is built, valid for what it needs: its wall
  clock (`runtime` resource) plus an upload allowance, or the whole lifetime without one. Later tasks, and
  Snakemake's `--retries` (new submissions), so get fresh links.
- A Batch job's own links (its preparation task's resource files and environment) cannot be changed once the job
  exists (Jobs_Patch takes none of them). When less than half their lifetime is left, new tasks go to a new Batch job
  for the same pool (a new generation, `-g2`, ...: same body and metadata, made by `Executor.batch_job_for`); the
  old one is ended (terminated, and deleted unless --azbatch-keep-job) once none of its tasks is active, or at the
  run's end.
- A task still waiting in Batch whose links (its own or its job's) would expire before it could finish (less left
  than its need, at most half the lifetime) is replaced: deleted only if unchanged since listed (If-Match on its
  ETag, so a task that has just started is left alone), then added again under a new id with fresh links, into
  the current generation, for the same Snakemake job; one line per status round says how many. Requests: none in
  rounds without such a task; else one list of the Batch job's waiting tasks (`id,eTag`), and per replaced task
  one get and one delete, and the adds in bulk (as at submission).
- A waiting task adopted from a dead run (adoption/) carries that run's links, so it is watched the same way; when
  they near their end it is deleted the same way and its job gets a task of this run, built afresh (`task_anew`:
  its outputs then go to this run's container; it had not run, so nothing is lost).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, List

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from ..tasks import task_spec
from ..azure_api.azure_sdk import error_text
from ..azure_api.batch_client import BatchService
from ..staging import Staging
from .outage import Outages

UPLOAD_ALLOWANCE = timedelta(minutes=30)  # after the wall clock, for outputs to upload (a quarter of short lifetimes)
ROTATE_AT = 0.5  # a Batch job's links with less than this fraction of their lifetime left get a new generation
# What Batch returns in a task that Tasks_AddTaskCollection takes back (the rest is state Batch keeps).
TASK_CREATE_FIELDS = (
    "displayName", "commandLine", "containerSettings", "exitConditions", "resourceFiles", "outputFiles",
    "environmentSettings", "affinityInfo", "constraints", "requiredSlots", "userIdentity", "multiInstanceSettings",
    "dependsOn", "applicationPackageReferences", "authenticationTokenSettings",
)
UNLIMITED_DURATION_PREFIX = "P10675199D"  # .NET's TimeSpan.MaxValue, Batch's "no limit"
EXPIRED_LINK_CODES = ("BlobAccessDenied",)  # a resource file refused (TaskFailureInformationCodes)
REFUSED_UPLOAD_MARKS = ("403", "AuthenticationFailed", "AuthorizationFailure")  # in fileuploaderr.txt


def _now() -> datetime:
    return datetime.now(timezone.utc)


def renewed_body(body: dict | None, signer) -> dict | None:
    """A preparation task or task body with every link of this storage account signed afresh (resource files,
    output containers, environment values)."""
    if not body:
        return body
    body = dict(body)
    if body.get("resourceFiles"):
        body["resourceFiles"] = [
            {**f, "httpUrl": signer.renew_url(f["httpUrl"])} if f.get("httpUrl") else f for f in body["resourceFiles"]
        ]
    outputs = []
    for spec in body.get("outputFiles") or []:
        container = ((spec.get("destination") or {}).get("container") or {})
        if container.get("containerUrl"):
            container = {**container, "containerUrl": signer.renew_url(container["containerUrl"])}
            spec = {**spec, "destination": {**spec["destination"], "container": container}}
        outputs.append(spec)
    if outputs:
        body["outputFiles"] = outputs
    if body.get("environmentSettings"):
        body["environmentSettings"] = [
            {**e, "value": signer.renew_url(e["value"])} if e.get("value") else e for e in body["environmentSettings"]
        ]
    return body


def replacement_id(task_id: str) -> str:
    """Same rule, job id and attempt; a new last part (the id of a deleted task may not be reused at once)."""
    head, _, _ = task_id.rpartition("-")
    return f"{head or task_id}-{task_spec.short_hash(task_id, 'renewed')}"[: task_spec.MAX_ID_LENGTH]


class LinkRenewal:
    """The run's Batch job generations and the links of its waiting tasks. `batch_job_for(pool_id)`: the current
    Batch job of a pool (a new generation when its links age); `current_jobs()`: those jobs; `submitted()`: the
    jobs Snakemake has handed over and not yet seen finish; `submit_lock`: held by submission (generations are
    its too); `reporting`: the run's RunReporting (told of replaced tasks); `task_anew(job)`: a new task of this
    run for the job of an adopted waiting task given up."""

    def __init__(self, staging: Staging, batch: BatchService, outages: Outages, reporting, logger, *,
                 submit_lock: threading.Lock, batch_job_for: Callable[[str], str],
                 current_jobs: Callable[[], Iterable[str]], submitted: Callable[[], List[SubmittedJobInfo]],
                 sas_hours: float, task_anew: Callable[[Any], tuple[str, dict, datetime | None, str]]):
        self.staging = staging
        self.batch = batch
        self.outages = outages
        self.reporting = reporting
        self.logger = logger
        self.submit_lock = submit_lock
        self.batch_job_for = batch_job_for
        self.current_jobs = current_jobs
        self.submitted = submitted
        self.sas_hours = sas_hours
        self.task_anew = task_anew  # job -> (Batch job, body, links expiry, blob prefix) of a new task of this run
        self.retired_jobs: list[str] = []  # Batch jobs of earlier generations, until ended
        self.job_links: dict[str, datetime] = {}  # Batch job id -> when the first of its own links expires
        self.job_pools: dict[str, str] = {}  # Batch job id -> pool id
        self.retired_pools: dict[str, str] = {}  # retired Batch job id -> pool id (generations and followed jobs)

    @property
    def link_lifetime(self) -> timedelta:
        return self.staging.links.lifetime

    def all_batch_jobs(self) -> list[str]:
        """Every Batch job of the run still to end: earlier generations, then the current one of each pool."""
        return [*self.retired_jobs, *self.current_jobs()]

    # ---- what a task or job needs ---------------------------------------------------------------------------------
    def task_need(self, job) -> timedelta:
        """How long a task's links must stay valid once it starts: its wall clock plus an upload allowance, or the
        whole lifetime when it has none."""
        seconds = task_spec.runtime_seconds(job.resources)
        if seconds is None:
            return self.link_lifetime
        return min(self.link_lifetime, timedelta(seconds=seconds) + min(UPLOAD_ALLOWANCE, self.link_lifetime / 4))

    def job_links_aging(self, batch_job: str) -> bool:
        expiry = self.job_links.get(batch_job)
        return expiry is not None and expiry - _now() < self.link_lifetime * ROTATE_AT

    def job_created(self, batch_job: str, pool_id: str, links_expiry: datetime | None, previous: str | None) -> None:
        self.job_pools[batch_job] = pool_id
        if links_expiry is not None:
            self.job_links[batch_job] = links_expiry
        if previous is not None:
            self.retired_jobs.append(previous)
            self.retired_pools[previous] = pool_id
            self.logger.info(f"azbatch: Batch job {batch_job} on pool {pool_id} takes new tasks: the links of "
                             f"{previous} near their end (it ends once its tasks are done)")

    def follow_job(self, batch_job: str, pool_id: str) -> None:
        """A dead run's Batch job on `pool_id` whose tasks this run adopted (adoption/): ended like an earlier
        generation, once none of its tasks is active (and at the end, with every job of the run). Not one of this
        run's generations (job_pools counts those)."""
        self.retired_jobs.append(batch_job)
        self.retired_pools[batch_job] = pool_id

    def retired_by_pool(self) -> dict[str, list[str]]:
        """The retired Batch jobs still to end, by pool (progress counts their tasks with the pool's)."""
        by_pool: dict[str, list[str]] = {}
        for job in list(self.retired_jobs):  # read from the progress thread: a copy
            by_pool.setdefault(self.retired_pools.get(job, ""), []).append(job)
        by_pool.pop("", None)
        return by_pool

    def note_links(self, aux: dict, expiry: datetime | None, need: timedelta) -> None:
        """What a submitted task's SubmittedJobInfo keeps: when its first link expires (its job's included)."""
        job_expiry = self.job_links.get(aux["batch_job"])
        if expiry is None or (job_expiry is not None and job_expiry < expiry):
            expiry = job_expiry
        aux["links_expire"] = expiry
        aux["links_need"] = need

    # ---- waiting tasks ----------------------------------------------------------------------------------------------
    def links_at_risk(self, active_jobs: List[SubmittedJobInfo]) -> List[SubmittedJobInfo]:
        """Tasks not seen started whose links have less left than they need (no request)."""
        now, half = _now(), self.link_lifetime / 2
        return [
            j for j in active_jobs
            if j.aux.get("links_expire") is not None and not j.aux.get("started")
            and j.aux["links_expire"] - now < min(j.aux["links_need"], half)
        ]

    def renew_waiting_links(self, at_risk: List[SubmittedJobInfo]) -> list[tuple[SubmittedJobInfo, str]]:
        """Replace those of `at_risk` still waiting (runs in a worker thread). Returns (job, error) for tasks that
        could not be added again."""
        failed, replaced = [], []
        if self.outages.batch.down:
            return failed  # tried again once Batch answers
        with self.submit_lock:  # batch_job_for and generations are the submission's too
            for batch_job in sorted({j.aux["batch_job"] for j in at_risk}):
                try:
                    waiting = {t.id: t.etag for t in self.batch.client.list_tasks(
                        batch_job, filter="state eq 'active'", select=["id", "eTag"])}
                except Exception as e:  # checked again next round
                    self.logger.debug(f"azbatch: listing waiting tasks of {batch_job} failed: {error_text(e)}")
                    continue
                bodies: dict[str, list] = {}  # Batch job -> (job info, body, links expiry, aux), added in bulk
                for info in (j for j in at_risk if j.aux["batch_job"] == batch_job):
                    if info.external_jobid not in waiting:
                        info.aux["started"] = True  # its links were taken: nothing more to do for it
                        continue
                    try:
                        taken = self._take_back(info, waiting[info.external_jobid])
                    except Exception as e:
                        failed.append((info, f"azbatch: renewing the links of waiting task {info.external_jobid} "
                                             f"failed: {error_text(e)}"))
                        continue
                    if taken is not None:
                        bodies.setdefault(taken[0], []).append((info, *taken[1:]))
                for new_job, items in bodies.items():
                    results = self.outages.batch.call(  # deleted already: an outage is waited out, not a loss
                        lambda: self.batch.submit_tasks(new_job, [body for _, body, _, _ in items]))
                    for info, body, expiry, aux in items:
                        error = results.get(body["id"], "no result from Batch")
                        if error is None:
                            self._replaced(info, body, new_job, expiry, aux)
                            replaced.append(info)
                        else:
                            failed.append((info, f"azbatch: waiting task {info.external_jobid} was deleted to renew "
                                                 f"its links but could not be added again: {error}"))
        if replaced:
            self.logger.info(
                f"azbatch: {len(replaced)} waiting task(s) replaced with fresh links, theirs would have expired "
                f"before they could finish: {', '.join(j.external_jobid for j in replaced[:5])}"
                + (" ..." if len(replaced) > 5 else "")
            )
        return failed

    def _take_back(self, info: SubmittedJobInfo, etag: str | None) -> tuple[str, dict, datetime | None, dict] | None:
        """Delete the waiting task if unchanged since listed; its body for the current generation with fresh links
        under a new id (Batch job, body, links expiry, what changes in its aux). None when it had changed
        (started): left as it is. An adopted task's job gets a new task of this run instead (`task_anew`)."""
        old_job, old_id = info.aux["batch_job"], info.external_jobid
        adopted = bool(info.aux.get("adopted"))  # its body is the dead run's: rebuilt, not copied
        try:
            task = {} if adopted else self.batch.client.get_task(old_job, old_id).as_dict()
            self.batch.client.delete_task(old_job, old_id, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            info.aux["started"] = True
            return None
        except HttpResponseError as e:
            if e.status_code == 412:  # changed since listed: it has started
                info.aux["started"] = True
            else:  # e.g. an outage: it still waits, with its links; tried again next round
                self.logger.debug(f"azbatch: renewing the links of waiting task {old_id} failed: {error_text(e)}")
            return None
        except Exception as e:  # a dropped connection: the same
            self.logger.debug(f"azbatch: renewing the links of waiting task {old_id} failed: {error_text(e)}")
            return None
        # Deleted: from here on a failure fails the Snakemake job (the caller reports it).
        if adopted:  # a dead run's: this run's own task now (its links, its job, its container)
            new_job, body, expiry, prefix = self.task_anew(info.job)
            return new_job, body, expiry, {"blob_prefix": prefix, "run_container": None, "adopted": None}
        pool_id = self.job_pools.get(old_job)
        new_job = self.batch_job_for(pool_id) if pool_id else old_job
        body: dict[str, Any] = {"id": replacement_id(old_id),
                                **{k: task[k] for k in TASK_CREATE_FIELDS if task.get(k) is not None}}
        # Batch reports its defaults (an unlimited wall clock, no retries); the body carries only what was set.
        constraints = {k: v for k, v in (body.pop("constraints", None) or {}).items()
                       if not (k == "maxWallClockTime" and str(v).startswith(UNLIMITED_DURATION_PREFIX))
                       and not (k == "maxTaskRetryCount" and v == 0)}
        if constraints:
            body["constraints"] = constraints
        with self.staging.links.handing_out(info.aux["links_need"]) as handed:
            body = renewed_body(body, self.staging.links)
        return new_job, body, handed.expiry, {}

    def _replaced(self, info: SubmittedJobInfo, body: dict, new_job: str, expiry: datetime | None,
                  aux: dict) -> None:
        """The same Snakemake job, now the new task. Its outputs still go under the first task's blob prefix (the
        output specs are copied), which aux keeps; an adopted task's replacement is this run's (`aux`: what
        changes, None removes)."""
        old_id, old_job = info.external_jobid, info.aux["batch_job"]
        info.external_jobid = body["id"]
        info.aux["batch_job"] = new_job
        for name, value in aux.items():
            if value is None:
                info.aux.pop(name, None)
            else:
                info.aux[name] = value
        self.note_links(info.aux, expiry, info.aux["links_need"])
        self.logger.debug(f"azbatch: task {old_id} ({old_job}) replaced by {body['id']} ({new_job}) with fresh links")
        if self.reporting is not None:
            self.reporting.task_replaced(old_id, info.job, body["id"], new_job, self.job_pools.get(new_job, ""),
                                         body.get("requiredSlots", 1))

    # ---- earlier generations ----------------------------------------------------------------------------------------
    def idle_retired_jobs(self, active_jobs: List[SubmittedJobInfo]) -> list[str]:
        """Earlier generations none of whose tasks is active (none is being submitted either)."""
        if not self.retired_jobs or not self.submit_lock.acquire(blocking=False):
            return []
        try:
            pending = self.submitted()
            busy = {j.aux.get("batch_job") for j in [*active_jobs, *pending] if j.aux}
            idle = [job for job in self.retired_jobs if job not in busy]
            for job in idle:
                self.retired_jobs.remove(job)
            return idle
        finally:
            self.submit_lock.release()

    # ---- failures ---------------------------------------------------------------------------------------------------
    def link_failure_line(self, job_info: SubmittedJobInfo, failure: Any, upload_log: str) -> str | None:
        """One line when a task failed because storage refused its SAS links (expired or revoked)."""
        if self.staging.identity or failure is None:
            return None
        code = str(getattr(failure, "code", "") or "")
        refused_upload = code.startswith("FileUpload") and any(m in upload_log for m in REFUSED_UPLOAD_MARKS)
        if code not in EXPIRED_LINK_CODES and not refused_upload:
            return None
        expiry = (job_info.aux or {}).get("links_expire")
        hours = f"{self.sas_hours:g}"
        if expiry is not None and expiry <= _now():
            why = f"they expired at {expiry:%Y-%m-%d %H:%M:%S} UTC ({hours} hours after they were made)"
        else:
            why = "they were refused before their expiry (revoked: a rotated storage key or user-delegation key?)"
        return (f"azbatch: storage refused the SAS links of task {job_info.external_jobid}: {why}; a task must "
                f"start and finish within --azbatch-sas-hours ({hours}): raise it for longer tasks, give them a "
                "`runtime` resource, or let nodes use the pool's managed identity (--azbatch-managed-identity)")
