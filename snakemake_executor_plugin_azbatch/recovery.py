"""Crash recovery: which workflow and run a Batch job belongs to, and ending the active jobs an earlier run of the
same workflow left behind (a run killed with SIGKILL, a laptop that died, a dropped SSH session).

Every Batch job the plugin creates carries metadata: `azbatch-workflow` (a hash of the submitting host and the
working directory: the same workflow checkout on the same machine), `azbatch-run` (the run token) and
`azbatch-host`. Batch's List Jobs `$filter` cannot test metadata (it takes `id` with startswith/eq/..., `state`,
times), so one paged list of active jobs whose id starts with the plugin's `sm-` fills the gap, with `$select`
`id,metadata`; the metadata is compared here. Active jobs are capped by the account's active-job quota, so the
list is short.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterable

WORKFLOW_KEY = "azbatch-workflow"
RUN_KEY = "azbatch-run"
HOST_KEY = "azbatch-host"
JOB_ID_PREFIX = "sm-"  # task_spec.job_id starts every Batch job id with it
ORPHAN_FILTER = f"state eq 'active' and startswith(id, '{JOB_ID_PREFIX}')"


def workflow_key(workdir: str, host: str | None = None) -> str:
    """Same machine, same working directory: the same workflow (16 hex digits; neither path nor host is sent)."""
    host = host if host is not None else socket.gethostname()
    digest = hashlib.sha256(f"{host}\0{os.path.realpath(workdir)}".encode("utf-8")).hexdigest()
    return digest[:16]


def job_metadata(key: str, run_token: str, host: str | None = None) -> list[dict[str, str]]:
    host = host if host is not None else socket.gethostname()
    return [
        {"name": WORKFLOW_KEY, "value": key},
        {"name": RUN_KEY, "value": run_token},
        {"name": HOST_KEY, "value": host[:256]},
    ]


@dataclass(frozen=True)
class OrphanJob:
    id: str
    run: str
    host: str


def _metadata(job: Any) -> dict[str, str]:
    items = getattr(job, "metadata", None) or []
    return {str(getattr(m, "name", "")): str(getattr(m, "value", "")) for m in items}


def orphans_among(jobs: Iterable[Any], key: str, run_token: str) -> list[OrphanJob]:
    """The listed jobs that belong to this workflow but not to this run."""
    found = []
    for job in jobs:
        meta = _metadata(job)
        if meta.get(WORKFLOW_KEY) == key and meta.get(RUN_KEY) != run_token:
            found.append(OrphanJob(job.id, meta.get(RUN_KEY, "?"), meta.get(HOST_KEY, "?")))
    return found


def end_earlier_runs(batch, key: str, run_token: str, *, keep: bool, delete: bool, logger) -> list[OrphanJob]:
    """Say so in one line for each active job of an earlier run of this workflow; unless `keep`, terminate it
    (which terminates its tasks) and, unless `delete` is False, delete it. Returns the jobs found."""
    try:
        orphans = orphans_among(batch.list_active_jobs(ORPHAN_FILTER, ["id", "metadata"]), key, run_token)
    except Exception as e:  # the run itself does not need this; say why earlier jobs may still be active
        logger.warning(f"{e}; active jobs of earlier runs of this workflow, if any, were not ended")
        return []
    for orphan in orphans:
        if keep:
            logger.warning(
                f"azbatch: Batch job {orphan.id} of an earlier run ({orphan.run}) of this workflow is still active; "
                "kept because of --azbatch-keep-orphans (its tasks compete with this run for the pool's slots)"
            )
            continue
        logger.warning(
            f"azbatch: Batch job {orphan.id} of an earlier run ({orphan.run}) of this workflow is still active; "
            "terminating it and its tasks (--azbatch-keep-orphans keeps them)"
        )
        try:
            batch.terminate_job(orphan.id, "ended by a later run of the same workflow")
            if delete:
                batch.delete_job(orphan.id)
        except Exception as e:
            logger.warning(str(e))
    return orphans
