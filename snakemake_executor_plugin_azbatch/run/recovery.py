"""Crash recovery: ending the active jobs an earlier run of the same workflow left behind (a run killed with
SIGKILL, a laptop that died, a dropped SSH session) — and only those: a live run of the same workflow (another
container with the same host name and path, a `--nolock` run in the same directory) is named and left alone.

Which runs are dead is `run_identity.why_dead`: its process is gone on this machine, or its heartbeat is stale.
Batch's List Jobs `$filter` cannot test metadata (it takes `id` with startswith/eq/..., `state`, times), so one paged
list of active jobs whose id starts with the plugin's `sm-` fills the gap, with `$select` `id,metadata,
creationTime`; the metadata is compared here. Active jobs are capped by the account's active-job quota, so the list
is short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from .run_identity import HEARTBEAT_KEY, HOST_KEY, RUN_KEY, WORKFLOW_KEY, RunIdentity, age_text, metadata_of, \
    parse_heartbeat, why_dead

JOB_ID_PREFIX = "sm-"  # task_spec.job_id starts every Batch job id with it
ORPHAN_FILTER = f"state eq 'active' and startswith(id, '{JOB_ID_PREFIX}')"
ORPHAN_SELECT = ["id", "metadata", "creationTime"]


@dataclass(frozen=True)
class OrphanJob:
    """An active Batch job of another run of this workflow; `dead` says why that run is over (None: it may live)."""

    id: str
    run: str
    host: str
    dead: str | None = None
    heartbeat_age: float | None = None  # seconds; None: the job has no heartbeat (an older plugin)


@dataclass
class EarlierRuns:
    """What the cleanup found: jobs of dead runs (terminated unless kept) and of live ones (left alone)."""

    dead: list[OrphanJob] = field(default_factory=list)
    live: list[OrphanJob] = field(default_factory=list)

    @property
    def dead_runs(self) -> list[str]:
        """The run tokens of the dead runs, once each (what the run left in storage is named by it)."""
        return list(dict.fromkeys(o.run for o in self.dead if o.run != "?"))


def classify(jobs: Iterable[Any], me: RunIdentity, stale_seconds: float,
             now: datetime | None = None) -> EarlierRuns:
    """The listed jobs that belong to this workflow but not to this run, split into dead and live runs."""
    now = now or datetime.now(timezone.utc)
    found = EarlierRuns()
    for job in jobs:
        meta = metadata_of(job)
        if meta.get(WORKFLOW_KEY) != me.workflow or meta.get(RUN_KEY) == me.run:
            continue
        created = getattr(job, "creation_time", None)
        beat = parse_heartbeat(meta.get(HEARTBEAT_KEY, ""))
        age = (now - beat).total_seconds() if beat is not None else None
        dead = why_dead(meta, me, stale_seconds, now, created)
        orphan = OrphanJob(job.id, meta.get(RUN_KEY, "?"), meta.get(HOST_KEY, "?"), dead, age)
        (found.dead if dead else found.live).append(orphan)
    return found


def terminate_reason(me: RunIdentity) -> str:
    """What the other run's user reads as the job's terminateReason (Batch keeps at most 64 characters here)."""
    return f"ended by run {me.run} on {me.host}"[:64]


def end_earlier_runs(batch, me: RunIdentity, stale_seconds: float, *, keep: bool, delete: bool, logger,
                     on_dead_run: Callable[[str], None] | None = None) -> EarlierRuns:
    """One line for each active job of another run of this workflow. A dead run's job is terminated (its tasks
    with it) and, when `delete`, deleted — unless `keep`; a live run's job is left alone. `on_dead_run(run token)`
    is called once per dead run whose jobs were all ended (e.g. to remove what that run left in storage)."""
    try:
        found = classify(batch.list_active_jobs(ORPHAN_FILTER, ORPHAN_SELECT), me, stale_seconds)
    except Exception as e:  # the run itself does not need this; say why earlier jobs may still be active
        logger.warning(f"{e}; active jobs of earlier runs of this workflow, if any, were not ended")
        return EarlierRuns()
    for job in found.live:
        age = f"heartbeat {age_text(job.heartbeat_age)} ago" if job.heartbeat_age is not None else \
            "no heartbeat: judged by its creation time"
        logger.warning(
            f"azbatch: Batch job {job.id} belongs to a live run of this workflow (run {job.run} on host {job.host}, "
            f"{age}); left alone (it is ended only once its heartbeat is {age_text(stale_seconds)} old)"
        )
    failed_runs = set()
    for job in found.dead:
        if keep:
            logger.warning(
                f"azbatch: Batch job {job.id} of an earlier run ({job.run} on host {job.host}: {job.dead}) of this "
                "workflow is still active; kept because of --azbatch-keep-orphans (its tasks compete with this run "
                "for the pool's slots)"
            )
            continue
        logger.warning(
            f"azbatch: Batch job {job.id} of an earlier run ({job.run} on host {job.host}: {job.dead}) of this "
            "workflow is still active; terminating it and its tasks (--azbatch-keep-orphans keeps them)"
        )
        try:
            batch.terminate_job(job.id, terminate_reason(me))
            if delete:
                batch.delete_job(job.id)
        except Exception as e:
            failed_runs.add(job.run)
            logger.warning(str(e))
    if on_dead_run is not None and not keep:
        for run in found.dead_runs:
            if run not in failed_runs:
                on_dead_run(run)
    return found
