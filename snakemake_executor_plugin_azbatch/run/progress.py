"""Live progress from Batch's own counters: every interval one task-counts request per Batch job
(Jobs_GetJobTaskCounts) and one pool node-counts request for all the run's pools (Pools_ListPoolNodeCounts), never a
request per task. One line per pool is printed when the counts change, and at least every 30 s while tasks wait
or run, from a thread of its own so that slow status rounds do not delay it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from azure.core.exceptions import ResourceNotFoundError

from ..azure_api.azure_sdk import error_text, unreachable

HEARTBEAT_SECONDS = 30.0
WARN_AFTER_FAILURES = 3
STOP_WAIT_SECONDS = 5.0
# Node states folded into the line's categories (BatchNodeCounts attribute names).
STARTING_STATES = ("creating", "starting", "waiting_for_start_task", "rebooting", "reimaging", "upgrading_os")
UNUSABLE_STATES = ("unusable", "start_task_failed", "unknown", "offline")


def quiet_progress(workflow: Any) -> bool:
    """--quiet (progress, or all) silences the progress lines; the executor interface does not expose it, the
    workflow does."""
    from snakemake.settings.enums import Quietness

    quiet = getattr(getattr(workflow, "output_settings", None), "quiet", None) or ()
    return Quietness.PROGRESS in quiet or Quietness.ALL in quiet


@dataclass(frozen=True)
class TaskCounts:
    active: int = 0
    running: int = 0
    completed: int = 0
    succeeded: int = 0
    failed: int = 0

    @classmethod
    def from_sdk(cls, result: Any) -> "TaskCounts":
        counts = getattr(result, "task_counts", result)
        return cls(*(int(getattr(counts, name, 0) or 0) for name in ("active", "running", "completed", "succeeded", "failed")))

    def __add__(self, other: "TaskCounts") -> "TaskCounts":
        return TaskCounts(self.active + other.active, self.running + other.running, self.completed + other.completed,
                          self.succeeded + other.succeeded, self.failed + other.failed)

    def text(self) -> str:
        return (f"tasks {self.active} active, {self.running} running, {self.completed} completed "
                f"({self.succeeded} succeeded, {self.failed} failed)")


@dataclass(frozen=True)
class NodeCounts:
    total: int = 0
    idle: int = 0
    running: int = 0
    starting: int = 0
    unusable: int = 0  # every state that cannot run tasks (UNUSABLE_STATES)
    preempted: int = 0
    unusable_state: int = 0  # state `unusable` only (node_states reports these)

    @classmethod
    def from_sdk(cls, counts: Any) -> "NodeCounts":
        def n(name: str) -> int:
            return int(getattr(counts, name, 0) or 0)

        return cls(
            total=n("total"), idle=n("idle"), running=n("running"),
            starting=sum(n(s) for s in STARTING_STATES), unusable=sum(n(s) for s in UNUSABLE_STATES),
            preempted=n("preempted"), unusable_state=n("unusable"),
        )

    def text(self, kind: str) -> str:
        if not self.total:
            return f"0 {kind}"
        parts = [f"{self.idle} idle", f"{self.running} running", f"{self.starting} starting", f"{self.unusable} unusable"]
        if kind == "low-priority" or self.preempted:
            parts.append(f"{self.preempted} preempted")
        return f"{self.total} {kind} ({', '.join(parts)})"


def progress_line(
    pools: list[str], tasks: dict[str, TaskCounts | None], nodes: dict[str, tuple[NodeCounts, NodeCounts] | None],
    listed: bool = False, waiting: dict[str, str] | None = None,
) -> str:
    """`azbatch: progress: pool P: tasks ...; nodes ...` with ' | ' between pools; '?' where a count is missing
    (`listed`: the node counts were listed, so a pool missing from them does not exist: said so); `waiting`: what
    a pool waits for (resize_watch.py), after its nodes."""
    segments = []
    for pool in pools:
        counts = tasks.get(pool)
        task_text = counts.text() if counts else "tasks ?"
        node_pair = nodes.get(pool.lower())
        missing = "? (Batch lists no such pool)" if listed else "?"
        node_text = f"{node_pair[0].text('dedicated')}, {node_pair[1].text('low-priority')}" if node_pair else missing
        wait_text = (waiting or {}).get(pool)
        segments.append(f"pool {pool}: {task_text}; nodes {node_text}" + (f"; {wait_text}" if wait_text else ""))
    return "azbatch: progress: " + " | ".join(segments)


class ProgressGate:
    """Prints when the line changes, and repeats it after `heartbeat` seconds while tasks wait or run."""

    def __init__(self, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.heartbeat = heartbeat
        self.last_line: str | None = None
        self.last_time = 0.0

    def should_print(self, line: str, busy: bool, now: float) -> bool:
        if line != self.last_line or (busy and now - self.last_time >= self.heartbeat):
            self.last_line, self.last_time = line, now
            return True
        return False


class ProgressMonitor:
    """Polls the counts every `interval` seconds while started; `jobs()` gives the run's {pool id: Batch job id},
    `older()` its other Batch jobs still to end, {pool id: [Batch job id]}: earlier generations (link_renewal.py)
    and dead runs' jobs it follows (adoption/), whose tasks count with the pool's (one more request each)."""

    def __init__(
        self, client: Any, jobs: Callable[[], dict[str, str]], interval: float,
        emit: Callable[[str], None], warn: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
        observe_nodes: Callable[[dict[str, tuple[NodeCounts, NodeCounts]]], None] | None = None,
        waiting: Callable[[str, int | None, bool], str | None] | None = None,
        older: Callable[[], dict[str, list[str]]] | None = None,
    ) -> None:
        """`observe_nodes({pool id: (dedicated, low-priority)})` is given every node count fetched (node_states);
        `waiting(pool, nodes, tasks waiting)` says what a pool waits for (resize_watch.ResizeWatch.waiting_text)."""
        self.client = client
        self.jobs = jobs
        self.older = older
        self.interval = interval
        self.emit = emit
        self.warn = warn
        self.clock = clock
        self.observe_nodes = observe_nodes
        self.waiting = waiting
        self.gate = ProgressGate()
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="azbatch-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops polling; a request still under way is not waited for long (its answer is dropped)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_WAIT_SECONDS)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """One poll: query, and print the line if the gate lets it through."""
        jobs = self.pool_jobs()
        if not jobs:
            return
        line, busy = self.poll(jobs)
        if line and not self._stop.is_set() and self.gate.should_print(line, busy, self.clock()):
            self.emit(line)

    def pool_jobs(self) -> dict[str, list[str]]:
        """Every Batch job of the run still to end, by pool (its current job first)."""
        merged = {pool: [job] for pool, job in self.jobs().items()}
        names = {pool.lower(): pool for pool in merged}
        for pool, jobs in (self.older() if self.older is not None else {}).items():
            listed = merged.setdefault(names.setdefault(pool.lower(), pool), [])
            listed += [job for job in jobs if job not in listed]
        return merged

    def poll(self, jobs: dict[str, list[str]]) -> tuple[str | None, bool]:
        tasks: dict[str, TaskCounts | None] = {}
        errors = []
        for pool, pool_jobs in jobs.items():
            for job in pool_jobs:
                try:
                    counts = TaskCounts.from_sdk(self.client.get_job_task_counts(job))
                except ResourceNotFoundError:
                    continue  # deleted at the end of the run (or outside it); the status round reports it
                except Exception as e:
                    errors.append(e)
                    continue
                tasks[pool] = counts + tasks[pool] if tasks.get(pool) else counts
            tasks.setdefault(pool, None)
        nodes: dict[str, tuple[NodeCounts, NodeCounts] | None] = {}
        listed = False
        try:
            query = " or ".join(f"poolId eq '{pool}'" for pool in jobs)
            for item in self.client.list_pool_node_counts(filter=query):
                nodes[str(item.pool_id).lower()] = (NodeCounts.from_sdk(item.dedicated), NodeCounts.from_sdk(item.low_priority))
            listed = True
        except Exception as e:
            errors.append(e)
        if self.observe_nodes is not None and nodes:
            self.observe_nodes({pool: nodes[pool.lower()] for pool in jobs if pool.lower() in nodes})
        self._note_errors(errors)
        if all(t is None for t in tasks.values()) and not nodes:
            return None, False
        busy = any(t is not None and (t.active or t.running) for t in tasks.values())
        return progress_line(list(jobs), tasks, nodes, listed, self._waiting(jobs, tasks, nodes)), busy

    def _waiting(self, jobs: dict[str, str], tasks: dict[str, TaskCounts | None],
                 nodes: dict[str, tuple[NodeCounts, NodeCounts] | None]) -> dict[str, str]:
        texts = {}
        for pool in jobs if self.waiting is not None else ():
            pair = nodes.get(pool.lower())
            counts = tasks.get(pool)
            text = self.waiting(pool, pair[0].total + pair[1].total if pair else None,
                                bool(counts and counts.active))
            if text:
                texts[pool] = text
        return texts

    def _note_errors(self, errors: list[Exception]) -> None:
        # An unreachable endpoint is the outage watch's to report (outage.py: once, and again when it is back).
        errors = [e for e in errors if not unreachable(e)]
        if not errors or self._stop.is_set():
            self.failures = 0
            return
        self.failures += 1
        if self.failures == WARN_AFTER_FAILURES:
            self.warn(f"azbatch: progress counts unavailable ({error_text(errors[0])}); tasks are still tracked")
