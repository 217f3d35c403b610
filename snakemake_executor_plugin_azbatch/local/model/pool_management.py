"""Pools that change: creation, deletion, resizing, autoscale, nodes that join and leave, Spot nodes coming back.

`PoolManager` owns these rules; `BatchState` calls it for the REST operations and the scheduler thread calls
`tick()` (under `Records.lock`) to move pools toward their targets. Nodes join through the backend's `start_node`
(`starting` until it reports `node_ready`, then `idle`). Nodes leave when a pool shrinks, as Batch documents per
nodeDeallocationOption: `requeue` (running tasks are stopped and go back to `active`), `terminate` (they complete
with failureInfo TaskEnded), `taskcompletion` (no new tasks; the node goes once its tasks are done) and
`retaineddata` (locally the same as taskcompletion: task data is not retained past the node). Idle and still
starting nodes leave first.

Time and limits: `--timing fast` allocates nodes at once, `azure` after Azure's delays (azure_timing.py), both
scaled by `--time-scale`; the account's quotas and Spot capacity (account_capacity.py) stop a resize part-way with
Batch's resizeErrors; node_allocation.py applies both. `resizeTimeout` is recorded but never reached (the chosen
delays stay well inside its 15-minute default).
- The autoscale evaluation interval's minimum is `ServiceConfig.autoscale_min_interval` (Batch: 5 minutes; tests
  lower it), checked on the interval as given; the service waits interval × time scale. Samples are taken every
  `autoscale_sample_seconds` × time scale and reach formulas after the timing's sample delay; a new pool's first
  evaluation, at creation, sees no sample (as on Batch, whose first sample comes later).
- A pool is capped at `max_pool_nodes` nodes; a larger target is cut there with a resize error
  (AccountCoreQuotaReached / AccountLowPriorityCoreQuotaReached), as a quota would on Batch.
- A node marked unusable (`POST /_local/pools/P/nodes/N/state`, node_admin.py) takes no tasks, as Batch documents;
  the tasks running on it are requeued (Batch's docs say only that tasks cannot be scheduled there; requeueing is
  what its own recovery, a reboot or reimage with the default `requeue` option, does to them). It stays unusable
  until marked `idle` again: Batch does not recover nodes whose errors it knows (application package, container).
- A preempted Spot node (the `preempt_fraction` fault on a task of a Spot node, or a `--spot-shortage`) shows
  `preempted` for `PREEMPTED_NODE_SECONDS` × time scale after its tasks have been requeued (and while Spot
  capacity is short), then starts again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..backends.execution import ExecutionBackend
from ..service_config import ServiceConfig
from ..nodes.node_layout import NodeLayout, node_id_for
from .account_capacity import AccountCapacity
from .autoscale import FormulaEvaluationError, Inputs, evaluate
from .autoscale_parser import Program, parse
from .azure_timing import PoolTiming
from .batch_records import Records
from .lifecycle import TaskLifecycle
from .node_allocation import NodeArrivals
from .pool_records import NodeRecord, PoolRecord
from .timestamps import duration_seconds, iso_now

PREEMPTED_NODE_SECONDS = 1.0
MAX_SAMPLES = 20_000  # a week of Batch's 30-second samples
SAMPLED_COUNTS = ("$ActiveTasks", "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks")


class PoolManager:
    def __init__(self, records: Records, lifecycle: TaskLifecycle, backend: ExecutionBackend,
                 config: ServiceConfig, nodes_root: Path) -> None:
        self.records = records
        self.lifecycle = lifecycle
        self.backend = backend
        self.config = config
        self.nodes_root = nodes_root
        self.started = False  # nodes are started through the backend only once the service runs
        self.timing = PoolTiming(config)
        self.capacity = AccountCapacity(config)
        self.arrivals = NodeArrivals(records, lifecycle, backend, self.timing, self.capacity)

    # ------------------------------------------------------------------ nodes

    def add_node(self, pool: PoolRecord, dedicated: bool) -> NodeRecord:
        index = pool.next_node_index
        pool.next_node_index += 1
        node_id = node_id_for(pool.id, index)
        layout = NodeLayout(pool.id, node_id, self.nodes_root / pool.id / node_id, dedicated)
        now = iso_now()
        node = NodeRecord(layout, index, pool.slots, now, now, dedicated=dedicated, start_task=pool.start_task)
        pool.add_node(node)
        if self.started:
            self.arrivals.node_added(node)
        return node

    def _busy(self, node: NodeRecord) -> bool:
        if node.running_tasks:
            return True
        return any((rec := job.prep_by_node.get(node.id)) is not None and rec.running
                   for job in self.records.jobs.values())

    def _stop_tasks(self, node: NodeRecord, reason: str) -> None:
        for job_key, task_key in sorted(node.running_tasks):
            task = self.records.live_task(job_key, task_key)
            if task is not None and task.kill_reason is None:
                self.lifecycle.kill(task, reason)

    def set_unusable(self, node: NodeRecord, errors: list[dict[str, Any]] | None) -> None:
        """The node cannot run tasks (its `errors`, if any, say why): no new tasks; running ones requeued."""
        node.unusable = list(errors or [])
        node.state_changed()
        self._stop_tasks(node, "requeued")
        self.records.changed.notify_all()

    def set_usable(self, node: NodeRecord) -> None:
        """Recovered: the node takes tasks again."""
        if node.unusable is not None:
            node.unusable = None
            node.state_changed()
            self.records.changed.notify_all()

    # ------------------------------------------------------------------ REST operations (validated input)

    def create(self, pool: PoolRecord, program: Program | None) -> None:
        self.records.pools[pool.id.lower()] = pool
        if program is not None:  # Batch evaluates at creation, before its first 30-second sample of the pool
            self._evaluate_and_apply(pool, program, sample=False)
        self._mark_resizing(pool)

    def delete(self, pool: PoolRecord) -> None:
        """Batch: deleting stops autoscale and resizes to zero, requeueing running tasks; then the pool goes."""
        pool.state = "deleting"
        pool.state_transition_time = iso_now()
        pool.autoscale_formula = None
        self.resize(pool, 0, 0, "requeue")

    def resize(self, pool: PoolRecord, dedicated: int, low_priority: int, option: str) -> None:
        pool.target_nodes, pool.target_low_priority = self._capped(pool, dedicated, low_priority)
        pool.deallocation_option = option
        pool.allocation_due = None  # a new resize: its nodes come after a delay of their own
        pool.touch()
        self._mark_resizing(pool)

    def stop_resize(self, pool: PoolRecord) -> None:
        """Keep the nodes the pool has now: the targets become the current counts."""
        if pool.allocation_state == "resizing":
            pool.set_allocation_state("stopping")
            pool.target_nodes = sum(1 for n in pool.nodes if n.dedicated and n.leaving is None)
            pool.target_low_priority = sum(1 for n in pool.nodes if not n.dedicated and n.leaving is None)
            pool.touch()
            self.records.changed.notify_all()

    def enable_autoscale(self, pool: PoolRecord, program: Program, interval: str | None) -> None:
        pool.autoscale_formula = program.text
        if interval:
            pool.autoscale_interval = interval
        pool.touch()
        self._evaluate_and_apply(pool, program)  # Batch evaluates at once, then every interval from now

    def disable_autoscale(self, pool: PoolRecord) -> None:
        pool.autoscale_formula = None
        pool.touch()

    def evaluate_only(self, pool: PoolRecord, program: Program) -> dict[str, Any]:
        """Pools_EvaluatePoolAutoScale: the AutoScaleRun the formula would give now; nothing is applied."""
        self._sample(pool, force=True)
        run, _ = self._run(pool, program)
        return run

    # ------------------------------------------------------------------ autoscale

    def _inputs(self, pool: PoolRecord) -> Inputs:
        arrived = time.time() - self.timing.sample_delay  # samples reach formulas late, as on Batch
        samples = {name: [s for s in series if s[0] <= arrived] for name, series in pool.samples.items()}
        return Inputs(
            now=time.time(), sample_period=self.timing.sample_period, samples=samples,
            current_dedicated=sum(1 for n in pool.nodes if n.dedicated),
            current_low_priority=sum(1 for n in pool.nodes if not n.dedicated),
            task_slots_per_node=pool.slots, target_dedicated=pool.target_nodes,
            target_low_priority=pool.target_low_priority,
        )

    def _run(self, pool: PoolRecord, program: Program) -> tuple[dict[str, Any], Any]:
        try:
            outcome = evaluate(program, self._inputs(pool))
        except FormulaEvaluationError as err:
            return {"timestamp": iso_now(), "error": {"code": "AutoScalingFormulaEvaluationError",
                                                      "message": str(err)}}, None
        return {"timestamp": iso_now(), "results": outcome.results}, outcome

    def _evaluate_and_apply(self, pool: PoolRecord, program: Program, sample: bool = True) -> None:
        if sample:
            self._sample(pool, force=True)
        pool.autoscale_run, outcome = self._run(pool, program)
        interval = duration_seconds(pool.autoscale_interval) or 900.0
        pool.next_evaluation = time.monotonic() + self.timing.evaluation_interval(interval)
        if outcome is not None and pool.state == "active":
            changed = (outcome.target_dedicated, outcome.target_low_priority) != (
                pool.target_nodes, pool.target_low_priority)
            if changed or (pool.resize_errors and pool.allocation_state == "steady"):  # tried again, as Batch does
                self.resize(pool, outcome.target_dedicated, outcome.target_low_priority, outcome.deallocation_option)
        pool.touch()

    def _sample(self, pool: PoolRecord, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - pool.last_sample < self.timing.sample_period:
            return
        pool.last_sample = now
        counts = dict.fromkeys(SAMPLED_COUNTS, 0.0)
        for job in self.records.jobs.values():
            if job.deleted or job.pool_key != pool.id.lower() or job.state != "active":
                continue
            for task in job.tasks.values():
                if task.state == "active":
                    counts["$ActiveTasks"] += 1
                elif task.state in ("running", "preparing"):
                    counts["$RunningTasks"] += 1
                elif task.rest["executionInfo"].get("result") == "success":
                    counts["$SucceededTasks"] += 1
                else:
                    counts["$FailedTasks"] += 1
        counts["$PendingTasks"] = counts["$ActiveTasks"] + counts["$RunningTasks"]
        stamp = time.time()
        for name, value in counts.items():
            series = pool.samples.setdefault(name, [])
            series.append((stamp, value))
            del series[:-MAX_SAMPLES]

    # ------------------------------------------------------------------ moving toward the targets

    def _capped(self, pool: PoolRecord, dedicated: int, low_priority: int) -> tuple[int, int]:
        limit = self.config.max_pool_nodes
        pool.resize_errors = []
        for count, code in ((dedicated, "AccountCoreQuotaReached"),
                            (low_priority, "AccountLowPriorityCoreQuotaReached")):
            if count > limit:
                pool.resize_errors.append({"code": code, "message": (
                    f"The local service allows at most {limit} nodes of each kind per pool "
                    f"(azbatch-local --max-pool-nodes); {count} were asked for.")})
        return min(dedicated, limit), min(low_priority, limit)

    def _mark_resizing(self, pool: PoolRecord) -> None:
        pool.set_allocation_state("resizing")
        pool.touch()
        self.records.changed.notify_all()

    def tick(self) -> None:
        """Under the lock, from the scheduler thread: samples, due evaluations, nodes joining and leaving."""
        self.arrivals.tick()
        for pool in list(self.records.pools.values()):
            self._restore_preempted(pool)
            if pool.autoscale_formula and pool.state == "active":
                self._sample(pool)
                if time.monotonic() >= pool.next_evaluation:
                    self._evaluate_and_apply(pool, parse(pool.autoscale_formula))
            if pool.allocation_state != "steady" or pool.state == "deleting":
                self._converge(pool)

    def _restore_preempted(self, pool: PoolRecord) -> None:
        for node in pool.nodes:
            if node.preempted_at is not None and not node.running_tasks and self.arrivals.may_restart(node) and (
                    time.monotonic() - node.preempted_at >= PREEMPTED_NODE_SECONDS * self.timing.scale
                    and node.leaving is None):
                node.preempted_at = None
                node.ready = False
                node.state_transition_time = iso_now()
                self.backend.start_node(node.layout)

    def _converge(self, pool: PoolRecord) -> None:
        missing: dict[bool, int] = {}
        for dedicated, target in ((True, pool.target_nodes), (False, pool.target_low_priority)):
            members = [n for n in pool.nodes if n.dedicated == dedicated and n.leaving is None]
            missing[dedicated] = target - len(members)
            # Leaving first: nodes still starting, then idle ones, then the least busy; newest first.
            ordered = sorted(members, key=lambda n: (n.ready, len(n.running_tasks), -n.index))
            for node in ordered[: max(0, len(members) - target)]:
                node.leaving = pool.deallocation_option
                node.state_transition_time = iso_now()
                if node.leaving in ("requeue", "terminate"):
                    self._stop_tasks(node, "requeued" if node.leaving == "requeue" else "terminated")
        for node in [n for n in pool.nodes if n.leaving is not None and not self._busy(n)]:
            pool.remove_node(node)
        allocated = pool.state == "deleting" or self.arrivals.grow(pool, missing, self.add_node)
        if not allocated or any(n.leaving is not None for n in pool.nodes):
            return
        if pool.state == "deleting":
            if self.records.pools.get(pool.id.lower()) is pool:
                del self.records.pools[pool.id.lower()]
        else:
            pool.set_allocation_state("steady")
            pool.touch()
        self.records.changed.notify_all()
