"""Nodes Batch takes out of service while tasks wait: `unusable` (Batch runs no task there: it lost contact with the
VM, the disk is full, an application package or container image failed to download; the node still costs money)
and `preempted` Spot nodes (Batch requeues their tasks). Without this a user sees tasks waiting and not why.

Cheap: it reads the pool node counts progress.py already fetches every interval (with progress off, NodeHealth asks
for one Pools_ListPoolNodeCounts every 30 s); only when the number of unusable nodes changes, one node list
filtered to them (`id,errors`) names them. One warning when they appear and when their number changes; when no
node of a pool can run tasks (all unusable, or unusable and start-task-failed) for `wait` seconds, the pool is dead:
`dead` holds one line for it, and NodeHealth ends the run's Batch job there as it does for failed preparation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..azure_api.azure_sdk import error_text, redact
from .progress import NodeCounts

NAMED_NODES = 3  # node ids (and errors) a line names; more are counted


@dataclass
class PoolWatch:
    unusable: int = 0
    preempted: int = 0
    blocked_since: float | None = None  # since when no node of the pool could run tasks
    detail: str = ""  # the unusable nodes, named


class NodeStates:
    def __init__(self, client: Callable[[], Any], logger, wait: float,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.logger = logger
        self.wait = wait
        self.clock = clock
        self.lock = threading.Lock()  # progress's thread observes, the status thread reads `dead`
        self.pools: dict[str, PoolWatch] = {}  # pool id (lower) -> what was last reported
        self.dead: dict[str, str] = {}  # pool id (lower) -> why the run cannot go on there
        # Counts are due one max_age after the start: progress, when on, brings them sooner, and a request of our
        # own in the first round would only duplicate its first one.
        self.last_observed: float | None = clock()

    def refresh(self, pools: list[str], max_age: float) -> None:
        """One node-count request for `pools` unless counts came in (from progress) within `max_age` seconds."""
        if not pools or (self.last_observed is not None and self.clock() - self.last_observed < max_age):
            return
        query = " or ".join(f"poolId eq '{pool}'" for pool in pools)
        try:
            items = list(self.client().list_pool_node_counts(filter=query))
        except Exception as e:  # asked again next time; never stops the status rounds
            self.logger.debug(f"azbatch: node counts unavailable: {error_text(e)}")
            return
        names = {pool.lower(): pool for pool in pools}
        self.observe({names.get(str(i.pool_id).lower(), str(i.pool_id)): (NodeCounts.from_sdk(i.dedicated),
                      NodeCounts.from_sdk(i.low_priority)) for i in items})

    def observe(self, counts: dict[str, tuple[NodeCounts, NodeCounts]]) -> None:
        """Counts per pool id (dedicated, low-priority), as progress fetched them."""
        with self.lock:
            now = self.clock()
            self.last_observed = now
            for pool, (dedicated, spot) in counts.items():
                self._pool(pool, dedicated, spot, now)

    def _pool(self, pool: str, dedicated: NodeCounts, spot: NodeCounts, now: float) -> None:
        watch = self.pools.setdefault(pool.lower(), PoolWatch())
        total = dedicated.total + spot.total
        unusable = dedicated.unusable_state + spot.unusable_state
        blocked = dedicated.unusable + spot.unusable  # unusable, start task failed, unknown, offline
        all_blocked = bool(total and unusable and blocked == total)
        if unusable != watch.unusable:
            watch.unusable = unusable
            watch.detail = self._unusable_nodes(pool) if unusable else ""
            if unusable:
                self.logger.warning(self._unusable_line(pool, unusable, total, watch.detail, all_blocked))
            else:
                self.logger.info(f"azbatch: pool {pool}: no node is unusable any more")
        preempted = dedicated.preempted + spot.preempted
        if preempted != watch.preempted:
            watch.preempted = preempted
            if preempted:
                self.logger.warning(
                    f"azbatch: pool {pool}: {preempted} node(s) preempted (Spot); Batch requeues their tasks, which "
                    "run again when nodes are available (dedicated nodes are never preempted)"
                )
        if not all_blocked:
            watch.blocked_since = None
        elif watch.blocked_since is None:
            watch.blocked_since = now
        elif now - watch.blocked_since >= self.wait and pool.lower() not in self.dead:
            self.dead[pool.lower()] = redact(
                f"azbatch: no node of pool {pool} could run tasks for {self.wait:.0f} s: {unusable} of {total} "
                f"node(s) unusable ({watch.detail}). See their errors with `az batch node show --pool-id {pool} "
                "--node-id ID`; reboot, reimage or delete them or resize the pool, then run again "
                "(--azbatch-unusable-wait waits longer)"
            )

    def _unusable_line(self, pool: str, unusable: int, total: int, detail: str, all_blocked: bool) -> str:
        if all_blocked:
            then = (f"no node can run tasks now; the run ends unless Batch recovers one within {self.wait:.0f} s "
                    "(--azbatch-unusable-wait)")
        else:
            then = "tasks run on the pool's other nodes"
        return redact(
            f"azbatch: pool {pool}: {unusable} of {total} node(s) unusable ({detail}): Batch runs no tasks there "
            f"and they still cost money; {then}. See `az batch node show --pool-id {pool} --node-id ID`: without "
            "errors Batch lost contact and recovers the node itself, with errors reboot, reimage or delete it"
        )

    def _unusable_nodes(self, pool: str) -> str:
        """`id: CODE message; ...` of the unusable nodes, from one filtered node list ('' when it fails)."""
        try:
            nodes = list(self.client().list_nodes(pool, filter="state eq 'unusable'", select=["id", "errors"]))
        except Exception as e:
            self.logger.debug(f"azbatch: listing the unusable nodes of pool {pool} failed: {error_text(e)}")
            return "node ids unavailable"
        named = []
        for node in nodes[:NAMED_NODES]:
            errors = getattr(node, "errors", None) or []
            why = "; ".join(f"{e.code}: {e.message or ''}".strip() for e in errors) or "no errors reported"
            named.append(f"{node.id}: {why}")
        more = f"; and {len(nodes) - NAMED_NODES} more" if len(nodes) > NAMED_NODES else ""
        return "; ".join(named) + more
