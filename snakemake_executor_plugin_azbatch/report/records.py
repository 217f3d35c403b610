"""One record per task attempt, built from what the run already knows: the submission (rule, Snakemake job id,
slots) and the task as Batch lists it in the status rounds (creationTime, executionInfo, nodeInfo). No request
of its own."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Iterable

from ..staging.usage_probe import NodeUsage

# Batch's results, plus what a task that never completed is reported as.
SUCCESS = "success"
FAILURE = "failure"
NOT_STARTED = "not started"  # still queued (active) when the run ended
UNFINISHED = "unfinished"  # running when the run ended and never reported as completed


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "").lower()


@dataclass(slots=True)  # one per task: 20,000 of them with a __dict__ each cost about 20 MiB more
class TaskAttempt:
    """A Batch task: one attempt of one Snakemake job (Snakemake's --retries submit a new task per attempt).

    Times are Batch's (UTC). `requeues` counts Batch's own requeues of this task (node preempted or lost): its
    `started` is the last start, so its queue wait includes the time lost to the requeue."""

    task_id: str
    batch_job: str
    rule: str
    jobid: str
    attempt: int
    pool: str
    slots: int
    submitted: datetime | None
    node: str | None = None
    node_type: str = ""  # dedicated | low-priority | unknown: as the node told (usage_probe), else at the end
    started: datetime | None = None
    ended: datetime | None = None
    exit_code: int | None = None
    result: str = NOT_STARTED
    failure: str = ""  # Batch's failureInfo code
    retries: int = 0
    requeues: int = 0
    threads: int = 1  # what the rule asked for (Snakemake's threads, mem_mb, runtime)
    mem_mb: float | None = None
    runtime_limit: float | None = None  # seconds
    user_cpu: float | None = None  # seconds: Batch's task statistics, else the node's measurement
    kernel_cpu: float | None = None
    cpu_from: str = ""  # "batch" | "node" | ""
    peak_rss_mib: float | None = None  # the rule's processes at their peak, measured on the node (usage_probe)
    peak_tree_mib: float | None = None  # with the node's Snakemake
    adopted: str = ""  # taken from a dead run (adoption/): "running" or "finished" when taken
    saved_seconds: float = 0.0  # how long it had run on a node when taken: compute not repeated

    @property
    def queue_wait(self) -> float | None:
        if self.submitted is None or self.started is None:
            return None
        return max(0.0, (self.started - self.submitted).total_seconds())

    @property
    def run_time(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, (self.ended - self.started).total_seconds())

    @property
    def succeeded(self) -> bool:
        return self.result == SUCCESS and self.exit_code in (None, 0)

    @property
    def failed(self) -> bool:
        return self.result == FAILURE or (self.result == SUCCESS and self.exit_code not in (None, 0))

    @property
    def cpu_seconds(self) -> float | None:
        if self.user_cpu is None:
            return None
        return self.user_cpu + (self.kernel_cpu or 0.0)

    @property
    def core_hours(self) -> float:
        return self.slots * (self.run_time or 0.0) / 3600


ATTEMPT_FIELDS = [f.name for f in fields(TaskAttempt)]


def update_from_task(attempt: TaskAttempt, task: Any) -> None:
    """Copy what Batch reports about a task (an azure.batch BatchTask, possibly with a $select) into `attempt`."""
    created = getattr(task, "creation_time", None)
    if created is not None:
        attempt.submitted = created
    slots = getattr(task, "required_slots", None)
    if slots:
        attempt.slots = int(slots)
    node = getattr(task, "node_info", None)
    if node is not None and getattr(node, "node_id", None):
        attempt.node = node.node_id
        attempt.pool = getattr(node, "pool_id", None) or attempt.pool
    info = getattr(task, "execution_info", None)
    state = _enum(getattr(task, "state", None))
    stats = getattr(task, "task_statistics", None)
    if stats is not None and getattr(stats, "user_cpu_time", None) is not None:
        attempt.user_cpu = stats.user_cpu_time.total_seconds()
        attempt.kernel_cpu = stats.kernel_cpu_time.total_seconds() if stats.kernel_cpu_time else 0.0
        attempt.cpu_from = "batch"
    if info is not None:
        attempt.started = getattr(info, "start_time", None) or attempt.started
        attempt.retries = int(getattr(info, "retry_count", 0) or 0)
        attempt.requeues = int(getattr(info, "requeue_count", 0) or 0)
    if state == "completed" and info is not None:
        attempt.ended = getattr(info, "end_time", None)
        attempt.exit_code = getattr(info, "exit_code", None)
        attempt.result = _enum(getattr(info, "result", None)) or FAILURE
        failure = getattr(info, "failure_info", None)
        attempt.failure = str(getattr(failure, "code", "") or "") if failure is not None else ""
    elif state in ("running", "preparing"):
        attempt.result = UNFINISHED
    elif state == "active":
        # Requeued: back in the queue, so a start seen before no longer holds.
        attempt.result, attempt.started, attempt.node = NOT_STARTED, None, None


@dataclass(frozen=True)
class Requested:
    """What a job asked for: Snakemake's threads, mem_mb and runtime (seconds)."""

    threads: int = 1
    mem_mb: float | None = None
    runtime_limit: float | None = None

    @classmethod
    def of(cls, job: Any) -> "Requested":
        def number(name: str) -> float | None:
            try:
                value = job.resources.get(name)
            except Exception:
                return None
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        runtime = number("runtime")  # minutes in Snakemake
        return cls(int(getattr(job, "threads", 1) or 1), number("mem_mb"), runtime * 60 if runtime else None)


class RunRecorder:
    """Attempts of one run, keyed by Batch task id; fed from the submission and the status thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[str, TaskAttempt] = {}

    def submitted(
        self, task_id: str, batch_job: str, pool: str, rule: str, jobid: Any, attempt: int, slots: int,
        asked: Requested | None = None, adopted: str = "", saved_seconds: float = 0.0,
    ) -> None:
        asked = asked or Requested()
        record = TaskAttempt(
            task_id=task_id, batch_job=batch_job, rule=rule, jobid=str(jobid), attempt=int(attempt or 1),
            pool=pool, slots=int(slots or 1), submitted=datetime.now(timezone.utc),
            threads=asked.threads, mem_mb=asked.mem_mb, runtime_limit=asked.runtime_limit,
            adopted=adopted, saved_seconds=saved_seconds,
        )
        with self._lock:
            self._attempts[task_id] = record

    def withdraw(self, task_id: str) -> None:
        """A task deleted before it ran (replaced by another)."""
        with self._lock:
            self._attempts.pop(task_id, None)

    def observe(self, tasks: Iterable[Any]) -> None:
        """Tasks as a status round (or the final listing) returned them; tasks of other runs are ignored."""
        with self._lock:
            for task in tasks:
                record = self._attempts.get(getattr(task, "id", None) or "")
                if record is not None:
                    update_from_task(record, task)

    def unfinished(self) -> list[TaskAttempt]:
        """Tasks submitted (or adopted) that no status round has seen completed."""
        with self._lock:
            return [a for a in self._attempts.values() if a.result not in (SUCCESS, FAILURE)]

    def unfinished_jobs(self) -> set[str]:
        """Batch jobs with a task not yet seen completed."""
        with self._lock:
            return {a.batch_job for a in self._attempts.values() if a.result not in (SUCCESS, FAILURE)}

    def measured(self, usages: Iterable[tuple[str, NodeUsage]]) -> None:
        """The nodes' measurements (usage_probe): node kind as the node knew it while the task ran, peak memory,
        and CPU where Batch gave no statistics. A finished measurement beats a `running` one."""
        with self._lock:
            for task_id, usage in usages:
                a = self._attempts.get(task_id)
                if a is None:
                    continue
                if usage.node_kind:
                    a.node_type = usage.node_kind
                if not usage.complete:
                    continue
                a.peak_rss_mib, a.peak_tree_mib = usage.rule_peak_mib, usage.tree_peak_mib
                if a.cpu_from != "batch":
                    a.user_cpu, a.kernel_cpu, a.cpu_from = usage.user_seconds, usage.kernel_seconds, "node"

    def set_node_types(self, pool: str, dedicated: dict[str, bool]) -> None:
        """Node kinds from the node list at the end, for tasks whose node never told (killed before it measured);
        a node gone by then leaves `unknown`."""
        with self._lock:
            for a in self._attempts.values():
                if a.node and a.pool.lower() == pool.lower() and a.node_type in ("", "unknown"):
                    value = dedicated.get(a.node)
                    a.node_type = "unknown" if value is None else "dedicated" if value else "low-priority"

    def attempts(self) -> list[TaskAttempt]:
        """Copies, in submission order."""
        with self._lock:
            return [TaskAttempt(**{name: getattr(a, name) for name in ATTEMPT_FIELDS}) for a in self._attempts.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._attempts)
