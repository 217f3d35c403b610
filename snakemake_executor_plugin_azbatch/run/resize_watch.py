"""What a run waits for while its pools get nodes: a resize under way, the next autoscale evaluation, a resize that
stopped at a quota or for want of capacity. Without it a run on Azure sits for minutes at "0 nodes" and a quota
stop is silent (the pool just stays smaller).

Costs no request of its own: run_watch.py's pool check (one Pools_GetPool per pool every 30 s, or the heartbeat
interval when shorter) selects the allocation fields too and hands the pool here (`observe`); progress.py asks
`waiting_text` for its line. A resize error is said once per pool and set of codes (warning, with the `az` command
to see it and what to do); the run goes on with the nodes it got. Only a pool whose resize stopped at a core quota
with no node at all can never run a task (nothing frees the quota while the run waits): `observe` returns the one
line that ends the run. A Spot shortage (AllocationFailed) is waited out: the pool's autoscale formula tries again at
each evaluation."""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from ..azure_api.azure_sdk import enum_text, redact

QUOTA_CODES = ("AccountCoreQuotaReached", "AccountLowPriorityCoreQuotaReached", "AccountSpotCoreQuotaReached")
_SIZE_RE = re.compile(r"^standard_([a-z]+?)(\d+)(?:-\d+)?([a-z]*)(?:_v(\d+))?$")


def quota_family(vm_size: str) -> str:
    """The name Batch's core quotas give a VM size's family: standard_d4s_v3 → standardDSv3Family."""
    m = _SIZE_RE.match((vm_size or "").strip().lower())
    if not m:
        return f"of {vm_size}"
    series, _, features, version = m.groups()
    return f"standard{series.upper()}{features.upper()}{'v' + version if version else ''}Family"


@dataclass(frozen=True)
class PoolAllocation:
    """The allocation fields of one Pools_GetPool answer."""

    id: str
    steady: bool
    since: datetime | None  # allocationStateTransitionTime: when the resize (or the steady state) began
    vm_size: str
    target: tuple[int, int]  # (dedicated, Spot)
    current: tuple[int, int]
    errors: tuple[tuple[str, str], ...]  # (code, message) of resizeErrors
    autoscale: bool
    interval_seconds: float | None
    evaluated: datetime | None  # autoScaleRun.timestamp

    @classmethod
    def from_sdk(cls, pool: Any) -> "PoolAllocation":
        def count(name: str) -> int:
            return int(getattr(pool, name, 0) or 0)

        interval = getattr(pool, "auto_scale_evaluation_interval", None)
        run = getattr(pool, "auto_scale_run", None)
        return cls(
            id=str(pool.id), steady=enum_text(getattr(pool, "allocation_state", None)) == "steady",
            since=getattr(pool, "allocation_state_transition_time", None), vm_size=str(pool.vm_size or ""),
            target=(count("target_dedicated_nodes"), count("target_low_priority_nodes")),
            current=(count("current_dedicated_nodes"), count("current_low_priority_nodes")),
            errors=tuple((str(e.code), str(e.message or "")) for e in getattr(pool, "resize_errors", None) or []),
            autoscale=bool(getattr(pool, "enable_auto_scale", False)),
            interval_seconds=interval.total_seconds() if interval is not None else None,
            evaluated=getattr(run, "timestamp", None) if run is not None else None,
        )


def minutes(seconds: float) -> str:
    return f"{max(0, round(seconds))} s" if seconds < 90 else f"{math.ceil(seconds / 60)} min"


def stop_reason(pool: PoolAllocation) -> str:
    """`core quota for family F reached at 2 of 3 dedicated nodes (AccountCoreQuotaReached)` and the like."""
    reasons = []
    for code, message in pool.errors:
        if code == "AccountCoreQuotaReached":
            reasons.append(f"core quota for family {quota_family(pool.vm_size)} (or the account's dedicated cores) "
                           f"reached at {pool.current[0]} of {pool.target[0]} dedicated nodes ({code})")
        elif code in QUOTA_CODES:
            reasons.append(f"Spot core quota reached at {pool.current[1]} of {pool.target[1]} Spot nodes ({code})")
        elif code == "AllocationFailed":
            reasons.append(f"Azure could not allocate the nodes, {pool.current[0] + pool.current[1]} of "
                           f"{pool.target[0] + pool.target[1]} came ({code}: {message.rstrip('.')})")
        else:
            reasons.append(f"{code}: {message.rstrip('.')}")
    return "; ".join(reasons)


def advice(pool: PoolAllocation) -> str:
    codes = {code for code, _ in pool.errors}
    see = f"See `az batch pool show --pool-id {pool.id} --query resizeErrors`"
    if codes & set(QUOTA_CODES):
        return (f"{see}; ask for a quota increase (Azure portal: the Batch account's Quotas), choose a VM size "
                "with fewer cores (--azbatch-pool-vm-size), or use the other kind of node (--azbatch-pool-spot)")
    if "AllocationFailed" in codes:
        return (f"{see}; Spot capacity comes back by itself (an autoscale pool tries again at each evaluation), "
                "or use dedicated nodes, another VM size or another region")
    return see


class ResizeWatch:
    def __init__(self, logger, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.logger = logger
        self.clock = clock
        self.lock = threading.Lock()  # the run watch's thread observes, progress's thread reads
        self.pools: dict[str, PoolAllocation] = {}  # pool id (lower) -> its last answer
        self.said: dict[str, frozenset[str]] = {}  # pool id (lower) -> the error codes reported

    def observe(self, pool: PoolAllocation) -> str | None:
        """Remember the pool; say a new resize error once; the line that ends the run when no node can come."""
        key = pool.id.lower()
        with self.lock:
            self.pools[key] = pool
            codes = frozenset(code for code, _ in pool.errors) if pool.steady else frozenset()
            if not pool.steady or codes == self.said.get(key, frozenset()):
                return None
            self.said[key] = codes
        if not codes:
            return None
        if self.never_gets_a_node(pool):
            return redact(f"azbatch: pool {pool.id} can get no node: resize stopped: {stop_reason(pool)}, so its "
                          f"tasks can never run; the run ends and its Batch jobs are terminated. {advice(pool)}; "
                          "then run again")
        goes_on = "the run goes on with the nodes it has" if sum(pool.current) else "its tasks wait until nodes come"
        self.logger.warning(redact(f"azbatch: pool {pool.id}: resize stopped: {stop_reason(pool)}; {goes_on}. "
                                   f"{advice(pool)}"))
        return None

    @staticmethod
    def never_gets_a_node(pool: PoolAllocation) -> bool:
        codes = {code for code, _ in pool.errors}
        return bool(codes) and codes <= set(QUOTA_CODES) and sum(pool.current) == 0 and sum(pool.target) > 0

    def waiting_text(self, pool_id: str, nodes: int | None, tasks_waiting: bool) -> str | None:
        """`resizing: 0 of 3 nodes, requested 2 min ago`; `resize stopped at ...`; `waiting for the next
        autoscale evaluation in ~4 min` (`nodes`: the pool's nodes now, from progress's counts). Times are Azure's:
        on a local service with --time-scale things come sooner than said."""
        with self.lock:
            pool = self.pools.get(pool_id.lower())
        if pool is None:
            return None
        now = self.clock()
        have = sum(pool.current) if nodes is None else nodes
        wanted = sum(pool.target)
        if not pool.steady and have < wanted:
            ago = f", requested {minutes((now - pool.since).total_seconds())} ago" if pool.since else ""
            return f"resizing: {have} of {wanted} nodes{ago}"
        parts = []
        if pool.steady and pool.errors and have < wanted:
            parts.append(f"resize stopped at {have} of {wanted} nodes ({', '.join(c for c, _ in pool.errors)})")
        if pool.autoscale and pool.steady and tasks_waiting and have == 0 and pool.interval_seconds:
            if pool.evaluated is None:
                parts.append("waiting for the first autoscale evaluation")
            else:
                left = (pool.evaluated - now).total_seconds() + pool.interval_seconds
                when = f"in ~{minutes(left)}" if left > 0 else "now"
                parts.append(f"waiting for the next autoscale evaluation {when} "
                             f"(every {minutes(pool.interval_seconds)})")
        return "; ".join(parts) or None
