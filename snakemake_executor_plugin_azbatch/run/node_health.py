"""Nodes that cannot run the run's tasks: a failed job preparation task (Batch then keeps the job's tasks `active`
and never schedules them on that node again) or a failed start task (node state `starttaskfailed`). Without this a
run whose bootstrap cannot succeed waits forever.

At most once per `interval` (not per task): one Jobs_ListPreparationAndReleaseTaskStatus per Batch job and one
Nodes_ListNodes per pool. The failed task's stdout/stderr ends are read from the node (log_tails) and saved
under the log directory. When every node of a job's pool has failed, the job is dead: `check` returns its message
(exit code, failure, stderr tail). When only some have, one warning per node with the same detail.
Unusable and preempted nodes are node_states.py's: `check` runs every status round (no request of its own unless
progress is off) and ends a job whose pool had no usable node for --azbatch-unusable-wait seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..azure_api.azure_sdk import enum_text, error_text, redact
from ..staging.log_tails import last_lines, node_file_tail
from .node_states import NodeStates

FAILED_NODE_STATES = ("starttaskfailed",)


@dataclass(frozen=True)
class NodeFailure:
    pool_id: str
    node_id: str
    what: str  # "job preparation task" | "start task" | "node"
    exit_code: int | None
    failure: str  # Batch's failureInfo, or the node state
    stderr_tail: str
    log_dir: Path | None

    def describe(self) -> str:
        text = f"the {self.what} failed on node {self.node_id} (exit code {self.exit_code})"
        if self.failure:
            text += f": {self.failure}"
        if self.log_dir:
            text += f"; its logs are in {self.log_dir}"
        return text


def _failure_text(info: Any) -> str:
    failure = getattr(info, "failure_info", None)
    if failure is None:
        return ""
    return f"{enum_text(failure.category)} {failure.code}: {failure.message or ''}".strip()


class NodeHealth:
    def __init__(self, client: Callable[[], Any], logger, log_root: Path, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, *, unusable_wait: float):
        self.client = client
        self.logger = logger
        self.log_root = log_root
        self.interval = interval
        self.clock = clock
        self.last_check: float | None = None
        self.dead: dict[str, str] = {}  # Batch job id -> why none of its nodes can run its tasks
        self.warned: set[tuple[str, str]] = set()  # (pool or job, node) already warned about
        self.failures: dict[tuple[str, str, str], NodeFailure] = {}  # logs are fetched once per failure
        self.states = NodeStates(client, logger, unusable_wait, clock)  # unusable and preempted nodes

    def due(self) -> bool:
        now = self.clock()
        if self.last_check is not None and now - self.last_check < self.interval:
            return False
        self.last_check = now
        return True

    def check(self, jobs_by_pool: dict[str, str]) -> dict[str, str]:
        """Batch job id -> message, for jobs newly found dead. Called every status round: node states from the
        counts already fetched; preparation and start tasks at most every `interval`."""
        newly_dead = {}
        self.states.refresh(list(jobs_by_pool), max_age=self.interval)
        for pool_id, job_id in jobs_by_pool.items():
            message = self.states.dead.get(pool_id.lower())
            if message and job_id not in self.dead:
                self.dead[job_id] = newly_dead[job_id] = message
        if not self.due():
            return newly_dead
        for pool_id, job_id in jobs_by_pool.items():
            if job_id in self.dead:
                continue
            try:
                message = self._check_job(pool_id, job_id)
            except Exception as e:  # a failed look is retried next interval; never stops the status rounds
                self.logger.debug(f"azbatch: checking the nodes of pool {pool_id} failed: {error_text(e)}")
                continue
            if message:
                self.dead[job_id] = newly_dead[job_id] = message
        return newly_dead

    def _check_job(self, pool_id: str, job_id: str) -> str | None:
        client = self.client()
        nodes = list(client.list_nodes(pool_id, select=["id", "state", "startTaskInfo"]))
        if not nodes:
            return None  # an empty or growing pool: progress reports the wait
        failed: dict[str, NodeFailure] = {}
        for node in nodes:
            state = enum_text(node.state)
            if state in FAILED_NODE_STATES:
                failed[node.id] = self._start_task_failure(pool_id, node, state)
        for status in client.list_job_preparation_and_release_task_status(job_id):
            info = status.job_preparation_task_execution_info
            if info is None or enum_text(info.state) != "completed" or enum_text(info.result) != "failure":
                continue
            if status.node_id not in failed:
                failed[status.node_id] = self._prep_failure(pool_id, job_id, status.node_id, info)
        if not failed:
            return None
        if len(failed) < len(nodes):
            for failure in failed.values():
                if (job_id, failure.node_id) not in self.warned:
                    self.warned.add((job_id, failure.node_id))
                    self.logger.warning(
                        f"azbatch: pool {pool_id}: {failure.describe()}; tasks of {job_id} run on its other nodes"
                        + self._tail(failure)
                    )
            return None
        first = sorted(failed.values(), key=lambda f: f.node_id)[0]
        others = f" (and on {len(failed) - 1} more node(s))" if len(failed) > 1 else ""
        return redact(
            f"azbatch: no node of pool {pool_id} can run the tasks of Batch job {job_id}: {first.describe()}{others}"
            + self._tail(first)
        )

    @staticmethod
    def _tail(failure: NodeFailure) -> str:
        return f"\nLast lines of its stderr:\n{failure.stderr_tail}\n" if failure.stderr_tail else ""

    def _start_task_failure(self, pool_id: str, node, state: str) -> NodeFailure:
        info = getattr(node, "start_task_info", None)
        key = (pool_id, node.id, "start")
        if key not in self.failures:
            if state == "starttaskfailed" and info is not None:
                log_dir = self.log_root / pool_id / node.id / "start-task"
                tail = self._fetch(pool_id, node.id, "startup", log_dir)
                self.failures[key] = NodeFailure(pool_id, node.id, "start task", getattr(info, "exit_code", None),
                                                 _failure_text(info), tail, log_dir)
            else:
                self.failures[key] = NodeFailure(pool_id, node.id, "node", None, f"node state {state}", "", None)
        return self.failures[key]

    def _prep_failure(self, pool_id: str, job_id: str, node_id: str, info) -> NodeFailure:
        key = (job_id, node_id, "prep")
        if key not in self.failures:
            root = getattr(info, "task_root_directory", None) or f"workitems/{job_id}/job-1"
            log_dir = self.log_root / job_id / node_id / "preparation-task"
            tail = self._fetch(pool_id, node_id, root.strip("/"), log_dir)
            self.failures[key] = NodeFailure(pool_id, node_id, "job preparation task", info.exit_code,
                                             _failure_text(info), tail, log_dir)
        return self.failures[key]

    def _fetch(self, pool_id: str, node_id: str, directory: str, log_dir: Path) -> str:
        """stdout.txt and stderr.txt of a task directory on the node, saved; the stderr tail (or stdout's when
        stderr is empty)."""
        tails = {}
        for name in ("stdout.txt", "stderr.txt"):
            path = f"{directory}/{name}"
            client = self.client()
            try:
                data = node_file_tail(lambda: client.get_node_file_properties(pool_id, node_id, path),
                                      lambda **kw: client.download_node_file(pool_id, node_id, path, **kw))
            except Exception as e:
                self.logger.debug(f"azbatch: reading {path} on node {node_id} failed: {error_text(e)}")
                continue
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / name).write_bytes(data)
            tails[name] = last_lines(data)
        return redact(tails.get("stderr.txt") or tails.get("stdout.txt") or "")


UPLOAD_ERRORS_FILE = "fileuploaderr.txt"


def upload_errors(client, batch_job: str, task_id: str, log_dir: Path, logger) -> tuple[str, Path | None]:
    """A task whose output files did not upload (failureInfo FileUpload*): the node's fileuploaderr.txt (its last MiB:
    its properties, then a ranged Tasks_GetTaskFile), SAS signatures redacted, saved under `log_dir`; its last lines and the saved path."""
    try:
        data = node_file_tail(lambda: client.get_task_file_properties(batch_job, task_id, UPLOAD_ERRORS_FILE),
                              lambda **kw: client.download_task_file(batch_job, task_id, UPLOAD_ERRORS_FILE, **kw))
    except Exception as e:  # a task gone with its node: the failure info alone still fails the job
        logger.debug(f"azbatch: reading {UPLOAD_ERRORS_FILE} of task {task_id} failed: {error_text(e)}")
        return "", None
    text = redact(data.decode(errors="replace"))
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / UPLOAD_ERRORS_FILE
    path.write_text(text)
    return last_lines(text), path
