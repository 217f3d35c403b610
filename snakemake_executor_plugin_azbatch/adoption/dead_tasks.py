"""Which of a dead run's tasks a job of this run takes (pure: no network).

A task of a dead run is adoptable when it carries a content key (content_key.py) and is still waiting or running
(followed as this run's own), or completed with success — Batch counts a task whose output upload failed as failed,
so success means its outputs are in the dead run's container (downloaded instead of submitting). A failed task is
never taken: its job is submitted anew. Each task is taken by at most one job; where several tasks share a key (an
earlier attempt failed, a later one runs) the finished one wins, then the one furthest along, then the newest.

A waiting task keeps the dead run's links (its own and its Batch job's preparation links), so it carries when the
first of them expires (`links_expire`, read from their `se=`): the run gives it up for a task of its own before
then (run/link_renewal.py), as it does its own waiting tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

from .content_key import key_from_display_name

_STATE_RANK = {"completed": 3, "running": 2, "preparing": 1, "active": 0}


def _text(value: Any) -> str:
    return str(getattr(value, "value", value) or "").lower()


@dataclass(frozen=True)
class DeadTask:
    """A task a dead run left on Batch that this run may take."""

    batch_job: str
    task_id: str
    key: str
    run: str  # the dead run's token (its container is named by it)
    host: str
    state: str  # active, preparing, running or completed (with success)
    blob_prefix: str  # where its outputs are in the dead run's container: "<first task id>/"
    slots: int = 1
    created: datetime | None = None
    started: datetime | None = None  # on a node
    ended: datetime | None = None
    links_expire: datetime | None = None  # not finished: when the first of its links (a waiting one's job's too) expires

    @property
    def waiting(self) -> bool:
        return self.state == "active"

    @property
    def finished(self) -> bool:
        return self.state == "completed"

    def compute_seconds(self, now: datetime) -> float:
        """Seconds it has run (or ran) on a node: what adopting it saves."""
        if self.started is None:
            return 0.0
        return max(0.0, ((self.ended or now) - self.started).total_seconds())


def blob_prefix_of(task: Any) -> str | None:
    """The task's blob prefix from its output files' destination paths (a task replaced for fresh links keeps the
    first task's prefix, so the id does not tell)."""
    for spec in getattr(task, "output_files", None) or ():
        container = getattr(getattr(spec, "destination", None), "container", None)
        path = str(getattr(container, "path", "") or "")
        head, sep, _ = path.partition("/")
        if sep and head:
            return f"{head}/"
    return None


def link_expiry(url: str | None) -> datetime | None:
    """When a SAS link expires (its `se=`), None for a URL without one."""
    values = parse_qs(urlsplit(url or "").query).get("se")
    if not values:
        return None
    try:
        return datetime.fromisoformat(values[0].replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def links_expiry(body: Any) -> datetime | None:
    """The earliest expiry of the links in a task or preparation task (SDK model): resource files, output
    containers, environment values."""
    urls = [getattr(f, "http_url", None) for f in getattr(body, "resource_files", None) or ()]
    urls += [getattr(getattr(getattr(o, "destination", None), "container", None), "container_url", None)
             for o in getattr(body, "output_files", None) or ()]
    urls += [getattr(e, "value", None) for e in getattr(body, "environment_settings", None) or ()]
    expiries = [e for e in (link_expiry(u) for u in urls if u and "sig=" in u) if e is not None]
    return min(expiries, default=None)


def dead_task_of(task: Any, batch_job: str, run: str, host: str) -> DeadTask | None:
    """A listed task (SDK model) as a DeadTask, or None when it cannot be taken (no key, failed, no outputs)."""
    key = key_from_display_name(getattr(task, "display_name", None))
    state = _text(getattr(task, "state", None))
    prefix = blob_prefix_of(task)
    if key is None or state not in _STATE_RANK or prefix is None:
        return None
    info = getattr(task, "execution_info", None)
    if state == "completed":
        if _text(getattr(info, "result", None)) != "success" or getattr(info, "exit_code", None) not in (None, 0):
            return None
    return DeadTask(batch_job, task.id, key, run, host, state, prefix, int(getattr(task, "required_slots", 1) or 1),
                    getattr(task, "creation_time", None), getattr(info, "start_time", None),
                    getattr(info, "end_time", None), links_expiry(task) if state != "completed" else None)


def _preference(task: DeadTask) -> tuple:
    created = task.created or datetime.min.replace(tzinfo=timezone.utc)
    return _STATE_RANK[task.state], created


@dataclass
class DeadRunTasks:
    """The adoptable tasks of the dead runs found at start, and which of them this run's jobs took."""

    tasks: list[DeadTask] = field(default_factory=list)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # dead Batch job -> every task id listed in it

    def __post_init__(self) -> None:
        self._by_key: dict[str, DeadTask] = {}
        for task in self.tasks:
            best = self._by_key.get(task.key)
            if best is None or _preference(task) > _preference(best):
                self._by_key[task.key] = task
        self.claimed: dict[str, DeadTask] = {}  # task id -> task

    def claim(self, key: str | None) -> DeadTask | None:
        """The task a job with this key takes (at most once), or None: submit as usual."""
        task = self._by_key.pop(key, None) if key else None
        if task is not None:
            self.claimed[task.task_id] = task
        return task

    def unclaimed_running(self) -> list[DeadTask]:
        """Tasks still waiting or running that no job took (to be terminated)."""
        taken = set(self.claimed)
        return [t for t in self.tasks if not t.finished and t.task_id not in taken]

    def jobs_with_claims(self) -> set[str]:
        return {t.batch_job for t in self.claimed.values()}

    def idle_jobs(self) -> list[str]:
        """Dead Batch jobs none of whose tasks was taken: ended at once."""
        busy = self.jobs_with_claims()
        return [job for job in self.jobs if job not in busy]


def run_started(run: str) -> str:
    """When a run started, from its token (`YYYYmmddTHHMMSS-xxxxxx`, UTC), as `2026-12-07 10:02`; '' if unreadable."""
    try:
        return datetime.strptime(run.partition("-")[0], "%Y%m%dT%H%M%S").strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return ""


def adopted_lines(claimed: Iterable[DeadTask]) -> list[str]:
    """One line per dead run whose tasks were taken."""
    runs: dict[str, list[DeadTask]] = {}
    for task in claimed:
        runs.setdefault(task.run, []).append(task)
    lines = []
    for run, tasks in sorted(runs.items()):
        finished, waiting = sum(t.finished for t in tasks), sum(t.waiting for t in tasks)
        started = run_started(run)
        when = f"started {started} UTC" if started else f"{run}"
        counts = f"{len(tasks) - finished - waiting} running, {waiting} waiting" if waiting else \
            f"{len(tasks) - finished} running"
        lines.append(f"azbatch: adopted {counts} and {finished} finished task(s) of the run {when} on host "
                     f"{tasks[0].host}; nothing resubmitted for them")
    return lines
