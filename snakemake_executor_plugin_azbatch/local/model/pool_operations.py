"""The account's pool, node and application operations (Pools_*, Nodes_*, Applications_*): a part of `BatchState`;
pools that change are `pool_management.PoolManager`'s, their REST shapes `pool_views`'s."""

from __future__ import annotations

import copy
from pathlib import Path

from .errors import (
    ApplicationNotFound,
    InvalidPropertyValue,
    NodeNotFound,
    OperationInvalidForCurrentState,
    PoolBeingDeleted,
    PoolBeingResized,
    PoolExists,
    PoolNotFound,
    PoolQuotaReached,
)
from .pool_records import NodeRecord, PoolRecord
from .pool_validation import check_formula, check_interval, check_pool_body, check_resize_body
from .pool_views import applications_view, node_counts_view, node_view, pool_view
from .timestamps import iso_now, new_etag

# What a client sends that the service sets itself: never taken from a body.
RUNTIME_FIELDS = ("url", "eTag", "lastModified", "creationTime", "state", "executionInfo", "stats")
POOL_RUNTIME_FIELDS = (*RUNTIME_FIELDS, "allocationState", "resizeErrors", "autoScaleRun",
                       "currentDedicatedNodes", "currentLowPriorityNodes")


class PoolOperations:
    """Pool, node and application operations; a part of `batch_state.BatchState` (its records, lock, pool manager)."""

    def _pool(self, pool_id: str) -> PoolRecord:
        pool = self.records.pools.get(str(pool_id).lower())
        if pool is None:
            raise PoolNotFound()
        return pool

    def list_pools(self) -> list[dict]:
        with self.records.lock:
            return [pool_view(self.records, p) for p in self.records.pools.values()]

    def get_pool(self, pool_id: str) -> dict:
        with self.records.lock:
            return pool_view(self.records, self._pool(pool_id))

    def _changeable_pool(self, pool_id: str) -> PoolRecord:
        pool = self._pool(pool_id)
        if pool.state == "deleting":
            raise PoolBeingDeleted()
        return pool

    def add_pool(self, body: dict) -> dict:
        """Pools_AddPool: nodes join through the backend as the scheduler thread resizes the pool."""
        request = check_pool_body(body, self.config.autoscale_min_interval)
        problem = self.node_system.stand_in_problem(body["virtualMachineConfiguration"]["imageReference"])
        if problem:
            raise InvalidPropertyValue(problem, {"PropertyName": "virtualMachineConfiguration.imageReference"})
        with self.records.lock:
            if request.id.lower() in self.records.pools:
                raise PoolExists()
            if not self.pool_manager.capacity.pool_quota_left(len(self.records.pools)):
                raise PoolQuotaReached(f"The account has reached its quota of {self.config.quotas.pools} pools "
                                       "(azbatch-local --quota pools=N).")
            now = iso_now()
            spec = {k: copy.deepcopy(v) for k, v in body.items() if k not in POOL_RUNTIME_FIELDS}
            pool = PoolRecord(request.id, request.slots, request.dedicated, now, new_etag(), node_fill_type=request.fill_type,
                              target_low_priority=request.low_priority, spec=spec,
                              resize_timeout=body.get("resizeTimeout") or "PT15M", autoscale_interval=request.interval,
                              vm_size=body.get("vmSize"), start_task=copy.deepcopy(body.get("startTask")),
                              container_configuration=copy.deepcopy(
                                  (body.get("virtualMachineConfiguration") or {}).get("containerConfiguration")))
            if request.program is not None:
                pool.autoscale_formula = request.program.text
            self.pool_manager.create(pool, request.program)
            return pool_view(self.records, pool)

    def delete_pool(self, pool_id: str) -> None:
        with self.records.lock:
            self.pool_manager.delete(self._changeable_pool(pool_id))

    def resize_pool(self, pool_id: str, body: dict) -> None:
        dedicated, low_priority, option = check_resize_body(body)
        with self.records.lock:
            pool = self._changeable_pool(pool_id)
            if pool.autoscale_formula:
                raise OperationInvalidForCurrentState("The pool has autoscale enabled; disable it before resizing.")
            if pool.allocation_state != "steady":
                raise PoolBeingResized()
            self.pool_manager.resize(pool, dedicated, low_priority, option)

    def stop_pool_resize(self, pool_id: str) -> None:
        with self.records.lock:
            self.pool_manager.stop_resize(self._changeable_pool(pool_id))

    def enable_pool_autoscale(self, pool_id: str, body: dict) -> None:
        program = check_formula((body or {}).get("autoScaleFormula"))
        interval = check_interval((body or {}).get("autoScaleEvaluationInterval"), self.config.autoscale_min_interval)
        with self.records.lock:
            pool = self._changeable_pool(pool_id)
            if not pool.autoscale_formula and pool.allocation_state != "steady":
                raise PoolBeingResized("A resize is in progress; enable autoscale once the pool is steady.")
            self.pool_manager.enable_autoscale(pool, program, interval)

    def disable_pool_autoscale(self, pool_id: str) -> None:
        with self.records.lock:
            self.pool_manager.disable_autoscale(self._changeable_pool(pool_id))

    def evaluate_pool_autoscale(self, pool_id: str, body: dict) -> dict:
        program = check_formula((body or {}).get("autoScaleFormula"))
        with self.records.lock:
            pool = self._changeable_pool(pool_id)
            if not pool.autoscale_formula:
                raise OperationInvalidForCurrentState(
                    "Autoscale is not enabled on the pool; Batch evaluates formulas only on autoscale pools.")
            return self.pool_manager.evaluate_only(pool, program)

    def _node(self, pool_id: str, node_id: str) -> NodeRecord:
        node = self.records.find_node(self._pool(pool_id).id, str(node_id))
        if node is None:
            raise NodeNotFound()
        return node

    def list_nodes(self, pool_id: str) -> list[dict]:
        with self.records.lock:
            return [node_view(self.records, n) for n in self._pool(pool_id).nodes]

    def get_node(self, pool_id: str, node_id: str) -> dict:
        with self.records.lock:
            return node_view(self.records, self._node(pool_id, node_id))

    def node_dir(self, pool_id: str, node_id: str) -> Path:
        with self.records.lock:
            return self._node(pool_id, node_id).layout.root

    def set_node_state(self, pool_id: str, node_id: str, state: str, errors: list[dict] | None = None) -> dict:
        """Outside the Batch API (node_admin): mark a node `unusable` (with BatchNodeErrors) or `idle` again."""
        with self.records.lock:
            node = self._node(pool_id, node_id)
            if state == "unusable":
                self.pool_manager.set_unusable(node, errors)
            else:
                self.pool_manager.set_usable(node)
            return node_view(self.records, node)

    def list_node_counts(self) -> list[dict]:
        with self.records.lock:
            return [node_counts_view(pool) for pool in self.records.pools.values()]

    def list_applications(self) -> list[dict]:
        return list(applications_view(self.config.app_packages).values())

    def get_application(self, app_id: str) -> dict:
        app = applications_view(self.config.app_packages).get(str(app_id).lower())
        if app is None:
            raise ApplicationNotFound()
        return app
