"""Nodes arriving and Spot nodes evicted on the service's timing (`azure_timing.PoolTiming`) and within the account's
capacity (`account_capacity.AccountCapacity`); a part of `pool_management.PoolManager`, called under the lock.

A resize's nodes come together once its allocation delay has passed, as many as the quotas and Spot capacity allow;
the rest of the target is not allocated and the resize ends (allocationState steady) with the resizeErrors entry,
as Batch reports it: the target stays, the current count is lower. Each node then boots (`starting`) before the
backend starts it. While Spot capacity is short, running Spot nodes get an eviction notice and are preempted once
it has passed (their tasks requeued); they start again when capacity is back."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

from ..backends.execution import ExecutionBackend
from .account_capacity import AccountCapacity
from .azure_timing import PoolTiming
from .batch_records import Records
from .lifecycle import TaskLifecycle
from .pool_records import NodeRecord, PoolRecord
from .timestamps import iso_now


class NodeArrivals:
    def __init__(self, records: Records, lifecycle: TaskLifecycle, backend: ExecutionBackend,
                 timing: PoolTiming, capacity: AccountCapacity) -> None:
        self.records = records
        self.lifecycle = lifecycle
        self.backend = backend
        self.timing = timing
        self.capacity = capacity
        self._booting: list[tuple[float, int, NodeRecord]] = []  # (due, order, node): a heap
        self._order = itertools.count()

    def node_added(self, node: NodeRecord) -> None:
        """A node of a running service: the backend starts it once it has booted."""
        delay = self.timing.boot_delay()
        if delay <= 0:
            self.backend.start_node(node.layout)
        else:
            heapq.heappush(self._booting, (time.monotonic() + delay, next(self._order), node))

    def grow(self, pool: PoolRecord, wanted: dict[bool, int],
             add_node: Callable[[PoolRecord, bool], NodeRecord]) -> bool:
        """Allocate the missing nodes per kind (True: dedicated) once the resize's delay has passed; False while
        it has not."""
        if all(missing <= 0 for missing in wanted.values()):
            return True
        now = time.monotonic()
        if pool.allocation_due is None:
            if self._refused_by_quota(pool, wanted):  # Batch checks its quotas before asking for VMs
                return True
            pool.allocation_due = now + self.timing.allocation_delay()
        if now < pool.allocation_due:
            return False
        for dedicated, missing in wanted.items():
            if missing > 0:
                room = self.capacity.room(list(self.records.pools.values()), pool, dedicated, missing)
                for _ in range(room.nodes):
                    add_node(pool, dedicated)
                self._note(pool, room.error)
        return True

    def _refused_by_quota(self, pool: PoolRecord, wanted: dict[bool, int]) -> bool:
        """No node of any kind asked for fits a quota: the resize ends at once with the quota's errors."""
        rooms = [self.capacity.room(list(self.records.pools.values()), pool, dedicated, missing)
                 for dedicated, missing in wanted.items() if missing > 0]
        if not all(r.nodes == 0 and r.error is not None and r.error["code"] != "AllocationFailed" for r in rooms):
            return False
        for room in rooms:
            self._note(pool, room.error)
        return True

    @staticmethod
    def _note(pool: PoolRecord, error: dict | None) -> None:
        if error is not None and all(e["code"] != error["code"] for e in pool.resize_errors):
            pool.resize_errors.append(error)

    def tick(self) -> None:
        now = time.monotonic()
        while self._booting and self._booting[0][0] <= now:
            _, _, node = heapq.heappop(self._booting)
            if node.leaving is None and self._member(node):
                self.backend.start_node(node.layout)
        if self.capacity.shortage is None:
            return
        short = self.capacity.spot_short()
        for pool in self.records.pools.values():
            for node in pool.nodes:
                if node.dedicated or not node.ready or node.preempted_at is not None or node.leaving is not None:
                    continue
                if not short:
                    node.evict_at = None
                elif node.evict_at is None:
                    node.evict_at = now + self.timing.eviction_notice
                elif now >= node.evict_at:
                    self._preempt(node)

    def may_restart(self, node: NodeRecord) -> bool:
        """A preempted Spot node starts again only while there is Spot capacity."""
        return not self.capacity.spot_short()

    def _member(self, node: NodeRecord) -> bool:
        pool = self.records.pools.get(node.pool_id.lower())
        return pool is not None and node in pool.nodes

    def _preempt(self, node: NodeRecord) -> None:
        node.evict_at = None
        node.preempted_at = time.monotonic()
        node.state_transition_time = iso_now()
        for job_key, task_key in sorted(node.running_tasks):
            task = self.records.live_task(job_key, task_key)
            if task is not None and task.kill_reason is None:
                self.lifecycle.kill(task, "preempted")
        self.records.changed.notify_all()
