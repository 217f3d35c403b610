"""A status round's Batch requests: one list of completed tasks per Batch job, filtered to tasks completed since the
latest completion seen minus a margin (tasks whose completion becomes visible late) and to the jobs still active."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..azure_api.azure_sdk import error_text, unreachable
from ..azure_api.batch_client import BatchService
from ..azure_api.credentials import explain
from ..config import Config
from .outage import Outages
from .run_watch import RunWatch

COMPLETION_MARGIN = timedelta(seconds=60)


class StatusLists:
    """`reporting`: what is told of every listed task (the run report's `tasks_listed`), or None."""

    def __init__(self, config: Config, batch: BatchService, outages: Outages, run_watch: RunWatch, reporting: Any,
                 logger):
        self.config = config
        self.batch = batch
        self.outages = outages
        self.run_watch = run_watch
        self.reporting = reporting
        self.logger = logger
        self.rounds = 0
        self.since: dict[str, datetime] = {}  # Batch job id -> lower bound for the next round's completed-task filter

    def _why(self, e: Exception) -> str:
        # A token that can no longer be renewed (e.g. a revoked secret) is named in one line.
        why = explain(e, f"Batch account {self.config.account.url}", keyed=bool(self.config.account.key))
        return why.removeprefix("azbatch: ") if why else error_text(e)

    async def list_round(self, active: set[tuple[str, str]], rate_limiter) -> tuple[
            dict[tuple[str, str], Any], set[str], int]:
        """`active`: (Batch job, task id) of the tasks followed. ((Batch job, task id) -> completed task, Batch jobs
        gone, how many tasks the lists returned): a task adopted from a dead run's job may share its id with one of
        this run's. An unreachable Batch ends the round (outage.py): every job stays active; another failure keeps
        that Batch job's tasks active."""
        batch_jobs = sorted({batch_job for batch_job, _ in active})
        active_ids = {task_id for _, task_id in active}
        completed: dict[tuple[str, str], Any] = {}
        gone: set[str] = set()
        finished = 0
        self.rounds += 1
        self.logger.debug(f"azbatch: status round {self.rounds}: one task list for each of {len(batch_jobs)} Batch job(s)")
        for batch_job in batch_jobs:
            async with rate_limiter:
                started = time.monotonic()
                try:
                    # Only tasks of jobs still active come back: the margin's repeats are dropped page by page.
                    tasks, latest = await asyncio.to_thread(
                        self.batch.completed_tasks, batch_job, self.since.get(batch_job), active_ids)
                except ResourceNotFoundError:
                    gone.add(batch_job)
                    continue
                except Exception as e:
                    if unreachable(e):  # an outage: all jobs stay active, one line says so (outage.py)
                        self.outages.batch.failed(e, started)
                        break
                    self.logger.warning(f"azbatch: listing tasks of {batch_job} failed, retrying: {self._why(e)}")
                    continue
            self.outages.batch.recovered()
            tasks = [t for t in tasks if (batch_job, t.id) in active]
            for task in tasks:
                completed[(batch_job, task.id)] = task
                if getattr(getattr(task.execution_info, "failure_info", None), "code", None) == "TaskEnded":
                    self.run_watch.poke()  # ended by request: was the whole job terminated outside this run?
            finished += len(tasks)
            if self.reporting is not None:
                self.reporting.tasks_listed(tasks)
            if latest is not None:
                # A margin covers tasks whose completion becomes visible after later ones; its repeats are dropped
                # because only still-active jobs are kept.
                self.since[batch_job] = latest - COMPLETION_MARGIN
        return completed, gone, finished
