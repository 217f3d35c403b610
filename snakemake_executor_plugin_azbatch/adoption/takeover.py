"""Taking over a dead run's tasks: at start one task list per Batch job of a dead run (recovery.py leaves a job
with adoptable tasks active instead of terminating it), at submission a job whose content key matches takes its
task (followed like this run's own, or its outputs downloaded from the dead run's container), and once submission
has handed over every ready job (`settle`) what nobody took is terminated, dead jobs with nothing taken are ended,
and those with something taken are rewritten to this run's identity (so no later run counts them dead while this
one follows them) and ended by this run once their tasks are done. The dead runs' containers stay until this run
ends: adopted outputs are downloaded from them and running adopted tasks upload into them with their own links.

Requests: one paged task list per dead Batch job at start (`$select` of what deciding needs, the links
included), and one Jobs_GetJob (its preparation task's links) per dead job with a waiting task; then one
Tasks_TerminateTask per running task nobody took, one Jobs_UpdateJob per dead job with taken tasks.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Collection

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from ..azure_api.azure_sdk import error_text
from ..run.run_identity import ADOPTED_FROM_KEY, RunIdentity
from ..run.run_watch import RunWatch
from ..staging import Staging
from .content_key import Unkeyable, job_content_key
from .dead_tasks import DeadRunTasks, DeadTask, adopted_lines, dead_task_of, links_expiry

DEAD_TASK_FIELDS = ["id", "state", "creationTime", "displayName", "executionInfo", "outputFiles",
                    "requiredSlots", "resourceFiles", "environmentSettings"]  # the last two: a waiting task's links


class Takeover:
    """The dead runs' tasks this run may take, and what becomes of them. `batch` is the run's BatchService,
    `reporting` the run report's recorder (told of each adopted task), `run_watch` the heartbeat that takes over
    the dead jobs this run follows."""

    def __init__(self, batch: Any, staging: Staging, identity: RunIdentity, reporting: Any, run_watch: RunWatch,
                 logger, snakemake_version: str) -> None:
        self.batch = batch
        self.staging = staging
        self.storage = f"{staging.endpoint}/{staging.container.container_name}"  # in every key: where outputs are
        self.identity = identity
        self.reporting = reporting
        self.run_watch = run_watch
        self.logger = logger
        self.snakemake_version = snakemake_version
        self._files: dict[str, bytes] = {}  # script / notebook files, read once per run
        self._unkeyable: set[str] = set()  # rules said once
        self.found = DeadRunTasks()
        self.pools: dict[str, str] = {}  # dead Batch job -> its pool
        self.settled = False
        self.lock = threading.Lock()

    # ---- at start ----------------------------------------------------------------------------------------------
    def survey(self, job: Any) -> bool:
        """recovery.end_earlier_runs asks about each dead run's job: True leaves it active for adoption (it has a
        task with a content key still running, or finished with success)."""
        ids, tasks = [], []
        try:
            for task in self.batch.client.list_tasks(job.id, select=DEAD_TASK_FIELDS):  # one page held at a time
                ids.append(task.id)
                tasks += [t for t in [dead_task_of(task, job.id, job.container_run, job.host)] if t]
            if any(t.waiting for t in tasks):  # it may yet start on a node that runs the job's preparation first
                prepared = links_expiry(self.batch.client.get_job(job.id, select=["jobPreparationTask"])
                                        .job_preparation_task)
                tasks = [with_job_links(t, prepared) for t in tasks]
        except Exception as e:  # cannot tell: ended as before adoption existed
            self.logger.warning(f"azbatch: reading the tasks of Batch job {job.id} of a dead run failed "
                                f"({error_text(e)}); none of them is adopted")
            return False
        if not tasks:
            return False
        self.found = DeadRunTasks([*self.found.tasks, *tasks], {**self.found.jobs, job.id: ids})
        self.pools[job.id] = job.pool
        return True

    @property
    def dead_runs(self) -> set[str]:
        """Tokens of dead runs whose containers this run reads from (deleted when it ends)."""
        return {t.run for t in self.found.tasks}

    # ---- at submission -----------------------------------------------------------------------------------------
    def key_for(self, job: Any, pairs: list[tuple[str, str]], blobs: dict[str, str], pool_id: str,
                image: str | None) -> str | None:
        """The job's content key (its inputs as staged: (local, node) pairs and their blobs), None when it has none
        (one debug line per rule: its tasks are never adopted)."""
        inputs = {local: self.staging.content_digest(local, blobs[os.path.abspath(local)]) for local, _ in pairs}
        try:
            return job_content_key(job, inputs=inputs, pool_id=pool_id, image=image,
                                   snakemake_version=self.snakemake_version, storage=self.storage,
                                   read_file=self._read)
        except Unkeyable as e:
            if job.name not in self._unkeyable:
                self._unkeyable.add(job.name)
                self.logger.debug(f"azbatch: jobs of {job.name} get no content key, so are never adopted: {e}")
            return None

    def _read(self, path: str) -> bytes:
        if path not in self._files:
            with open(path, "rb") as f:
                self._files[path] = f.read()
        return self._files[path]

    def adopt(self, job: Any, key: str | None, need: timedelta) -> SubmittedJobInfo | None:
        """What the status rounds follow for a job that takes a dead task: that task, in its dead Batch job, its
        outputs read from the dead run's container (`run_container`: that run's token). None: submit the job.
        `need`: how long its links must last once it starts; a waiting task's are watched like the run's own
        (link_renewal.py), a started one's were taken already."""
        task = self.claim(key)
        if task is None:
            return None
        self.reporting.task_submitted(job, task.task_id, task.batch_job, self.pools.get(task.batch_job, ""),
                                      task.slots, adopted=task)
        aux = {"batch_job": task.batch_job, "blob_prefix": task.blob_prefix, "run_container": task.run,
               "adopted": True, "links_expire": task.links_expire, "links_need": need, "started": not task.waiting}
        return SubmittedJobInfo(job, external_jobid=task.task_id, aux=aux)

    def claim(self, key: str | None) -> DeadTask | None:
        """The dead task a job with this content key takes, once; None: submit it."""
        if self.settled or not key:
            return None
        with self.lock:
            return self.found.claim(key)

    def settle(self, ready: Collection | None, end_job: Callable[[str], None], follow: Callable[[str, str], None],
               force: bool = False) -> list[str]:
        """Once every ready job has been handed over (`ready`: Snakemake's jobs ready but not handed over; None
        when unknown) or `force` (the run ends): tasks nobody took are terminated, dead jobs with nothing taken
        ended (`end_job`), the others rewritten to this run, watched and followed (`follow(job, pool)`). One line
        per dead run with taken tasks. Returns the dead jobs this run now follows."""
        if not self.found.jobs or (ready and not force):
            return []  # nothing was found; or a job Snakemake holds back may still take a task
        with self.lock:
            if self.settled:
                return []
            self.settled = True
        followed = self.found.jobs_with_claims()
        for task in self.found.unclaimed_running():
            if task.batch_job in followed:  # the others end with their whole job, below
                self._terminate_task(task)
        for batch_job in self.found.idle_jobs():
            self.logger.info(f"azbatch: no job of this run matches a task of Batch job {batch_job} of a dead run; "
                             "ending it")
            end_job(batch_job)
        now = datetime.now(timezone.utc)
        for batch_job in sorted(followed):
            run = next(t.run for t in self.found.claimed.values() if t.batch_job == batch_job)
            extra = [{"name": ADOPTED_FROM_KEY, "value": run}]
            try:
                self.batch.update_job_metadata(batch_job, [*extra, *self.identity.metadata(now)])
            except Exception as e:  # the heartbeat tries again
                self.logger.debug(f"azbatch: taking over Batch job {batch_job} failed for now: {error_text(e)}")
            self.run_watch.track(batch_job, self.pools.get(batch_job, ""), extra)  # its heartbeat is this run's
            follow(batch_job, self.pools.get(batch_job, ""))
        for line in adopted_lines(self.found.claimed.values()):
            self.logger.info(line)
        return sorted(followed)

    def _terminate_task(self, task: DeadTask) -> None:
        try:
            self.batch.client.terminate_task(task.batch_job, task.task_id)
        except Exception as e:  # it ends with its job, once nothing in it is adopted any more
            self.logger.debug(f"azbatch: terminating task {task.task_id} failed: {error_text(e)}")


def with_job_links(task: DeadTask, job_links: datetime | None) -> DeadTask:
    """A waiting task's links expiry counting its Batch job's preparation links too."""
    if not task.waiting or job_links is None or (task.links_expire is not None and task.links_expire <= job_links):
        return task
    return dataclasses.replace(task, links_expire=job_links)
