"""What the executor calls: record submissions and the tasks its status rounds list, run the live progress, and at
the end of the run (success, failure or cancel) write the report. Batch requests of its own: the progress counts,
at most one task list per Batch job at the end (only when tasks were still unaccounted for) and one node list per
pool used (dedicated or low-priority)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..azure_api.azure_sdk import error_text
from ..azure_api.batch_client import COMPLETED_TASK_FIELDS, TASK_EXPAND
from ..run.progress import ProgressMonitor
from ..config import Config
from . import RunInfo, write_report
from ..staging import usage_probe
from .node_hours import NodeHours
from .records import Requested, RunRecorder

NODE_FIELDS = ["id", "isDedicated"]


def _preload_figure_libraries() -> None:
    try:
        from . import timeline  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except Exception:
        pass  # write_report notes a missing matplotlib itself


class RunReporting:
    def __init__(
        self, *, client: Callable[[], Any], logger: logging.Logger | Any, config: Config, run_token: str,
        workdir: str, log_root: Path, jobs: Callable[[], dict[str, str]], quiet: bool = False,
        observe_nodes: Callable[[dict], None] | None = None,
        usage_blobs: Callable[[str], list[str]] | None = None,
        waiting: Callable[[str, int | None, bool], str | None] | None = None,
        older_jobs: Callable[[], dict[str, list[str]]] | None = None,
    ) -> None:
        """`client()` gives the azure.batch BatchClient; `jobs()` the run's {pool id: Batch job id} so far,
        `older_jobs()` its other Batch jobs still to end by pool (progress counts their tasks too);
        `observe_nodes` gets the node counts progress fetches; `usage_blobs(prefix)` lists the run's container
        (the nodes' measurements, read once at the end)."""
        self.usage_blobs = usage_blobs
        self.node_hours = NodeHours()  # fed by node_states with every node count the run fetches
        self.client = client
        self.logger = logger
        self.config = config
        self.run_token = run_token
        self.workdir = Path(workdir)
        self.log_root = log_root if log_root.is_absolute() else self.workdir / log_root
        self.jobs = jobs
        self.recorder = RunRecorder()
        self.cancelled = False
        self.progress: ProgressMonitor | None = None
        if not quiet and config.report.progress_interval > 0:
            self.progress = ProgressMonitor(
                client(), jobs, config.report.progress_interval, emit=logger.info, warn=logger.warning,
                observe_nodes=observe_nodes, waiting=waiting, older=older_jobs,
            )

    @property
    def directory(self) -> Path:
        base = Path(self.config.report.directory)
        return (base if base.is_absolute() else self.workdir / base) / self.run_token

    # ---- during the run ------------------------------------------------------------------------------------
    def task_submitted(self, job: Any, task_id: str, batch_job: str, pool: str, slots: int,
                       adopted: Any = None) -> None:
        """`adopted`: the dead run's task (adoption/dead_tasks.DeadTask) the job took instead of submitting."""
        rule = job.name
        first = not len(self.recorder)
        taken = ("finished" if adopted.finished else "running") if adopted is not None else ""
        saved = adopted.compute_seconds(datetime.now(timezone.utc)) if adopted is not None else 0.0
        self.recorder.submitted(task_id, batch_job, pool, rule, job.jobid, getattr(job, "attempt", 1), slots,
                                Requested.of(job), taken, saved)
        if first:
            self.node_hours.run_started()
        if first and self.config.report.write:
            # matplotlib takes a second or two to import; do it while tasks run, not when the run ends.
            threading.Thread(target=_preload_figure_libraries, name="azbatch-report-import", daemon=True).start()
        if self.progress is not None:
            self.progress.start()

    def task_replaced(self, old_id: str, job: Any, task_id: str, batch_job: str, pool: str, slots: int) -> None:
        """A waiting task deleted and added again with fresh links (link_renewal.py): one attempt, the new task."""
        self.recorder.withdraw(old_id)
        self.task_submitted(job, task_id, batch_job, pool, slots)

    def tasks_listed(self, tasks: list[Any]) -> None:
        self.recorder.observe(tasks)

    def run_cancelled(self) -> None:
        self.cancelled = True

    # ---- end of the run -------------------------------------------------------------------------------------
    def stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    def job_terminated(self, batch_job: str, since: datetime | None) -> None:
        """Before the job is deleted: one listing of the tasks that changed since the last completed one the
        status rounds saw (all tasks if none was seen), when some of its tasks were never seen completed."""
        if not self.config.report.write or batch_job not in self.recorder.unfinished_jobs():
            return
        query = None
        if since is not None:
            query = f"stateTransitionTime ge datetime'{since.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"
        try:
            self.recorder.observe(self.client().list_tasks(batch_job, filter=query, select=COMPLETED_TASK_FIELDS,
                                                           expand=TASK_EXPAND))
        except Exception as e:
            self.logger.debug(f"azbatch: run report: listing tasks of {batch_job} failed: {error_text(e)}")

    def _measurements(self, notes: list[str]) -> None:
        """The nodes' measurements: one listing of the run's `usage/` blobs (5,000 names per request)."""
        if self.usage_blobs is None:
            return
        try:
            names = self.usage_blobs(usage_probe.LISTING_PREFIX)
        except Exception as e:
            notes.append(f"Peak memory and node kinds as the nodes measured them are missing (listing them "
                         f"failed: {error_text(e)}).")
            return
        self.recorder.measured(p for p in map(usage_probe.parse_blob, names) if p is not None)

    def _node_types(self, notes: list[str]) -> None:
        """One node list per pool with a task whose node never told its kind (killed before it measured)."""
        pools = {a.pool for a in self.recorder.attempts() if a.node and a.node_type in ("", "unknown")}
        for pool in sorted(pools):
            try:
                nodes = self.client().list_nodes(pool, select=NODE_FIELDS)
                self.recorder.set_node_types(pool, {n.id: bool(n.is_dedicated) for n in nodes})
            except Exception as e:
                self.recorder.set_node_types(pool, {})
                notes.append(f"Node types of pool {pool} unknown (listing its nodes failed: {error_text(e)}).")

    def outcome(self) -> str:
        if self.cancelled:
            return "cancelled"
        last: dict[tuple[str, str], Any] = {}
        for a in self.recorder.attempts():
            key = (a.rule, a.jobid)
            if key not in last or a.attempt >= last[key].attempt:
                last[key] = a
        return "succeeded" if all(a.succeeded for a in last.values()) else "failed"

    def finish(self, slots_per_node: dict[str, int], cores_per_node: dict[str, int] | None = None) -> Path | None:
        """Write the report (if any task was submitted) and print its path; never raises. `cores_per_node`: the
        pools' VM sizes' cores, where known (core-hours of billed node-hours)."""
        self.stop_progress()
        if not len(self.recorder) or not self.config.report.write:
            return None
        try:
            notes: list[str] = []
            now = datetime.now(timezone.utc)
            self._measurements(notes)
            self._node_types(notes)
            notes += adoption_notes(self.recorder.attempts())
            run = RunInfo(
                run_token=self.run_token, workdir=str(self.workdir), outcome=self.outcome(),
                batch_jobs=dict(self.jobs()), slots_per_node=slots_per_node,
                price_core_hour=self.config.report.price_core_hour,
                price_node_hour=self.config.report.price_node_hour,
                log_root=self.log_root, generated=now, notes=notes, pool_hours=self.node_hours.hours(now),
                cores_per_node={pool.lower(): cores for pool, cores in (cores_per_node or {}).items() if cores},
                pool_samples={h.pool: self.node_hours.samples(h.pool) for h in self.node_hours.hours(now)},
            )
            path = write_report(self.recorder.attempts(), run, self.directory)
        except Exception as e:  # the report must never cost the run its clean shutdown
            self.logger.warning(f"azbatch: writing the run report failed: {error_text(e)}")
            return None
        self.logger.info(f"azbatch: run report: {path}")
        return path


def adoption_notes(attempts: list[Any]) -> list[str]:
    """What adoption saved, when this run took tasks of a dead run (adoption/)."""
    adopted = [a for a in attempts if a.adopted]
    if not adopted:
        return []
    finished = sum(a.adopted == "finished" for a in adopted)
    saved = sum(a.saved_seconds * a.slots for a in adopted) / 3600
    return [f"{len(adopted)} task(s) adopted from a dead run ({len(adopted) - finished} running and {finished} "
            f"finished when taken; column `adopted` of tasks.tsv): {saved:.4f} slot-hours of compute they had "
            "done were not repeated."]
