"""What the account may still allocate: `--quota` (dedicated cores in total and per VM family, Spot cores, pools) and
Spot capacity (`--spot-shortage`). A resize that meets a limit stops there with the resizeErrors entry Batch reports
(PoolResizeErrorCodes): AccountCoreQuotaReached, AccountLowPriorityCoreQuotaReached, AllocationFailed; a pool beyond
the pool quota is refused at creation (409 PoolQuotaReached, BatchErrorCodeStrings).

As Batch documents, dedicated cores count per VM family and in total, Spot cores only in total; every node of every
pool counts (also the service's own --pool nodes), whatever its state, until it has left the pool. A VM size's family
and cores come from its name (`standard_d4s_v3` → standardDSv3Family, 4 cores); a name that does not parse counts
as one core of a family named after the size (documented choice: the service has no table of every size)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from ..service_config import AccountQuotas, ServiceConfig
from .pool_records import PoolRecord
from .pool_views import vm_size

_SIZE_RE = re.compile(r"^standard_([a-z]+?)(\d+)(?:-\d+)?([a-z]*)(?:_v(\d+))?$")


@dataclass(frozen=True)
class VmShape:
    family: str  # the quota's name, e.g. standardDSv3Family
    cores: int


def vm_shape(size: str) -> VmShape:
    m = _SIZE_RE.match(size.strip().lower())
    if not m:
        return VmShape(f"{size}Family", 1)
    series, cores, features, version = m.groups()
    return VmShape(f"standard{series.upper()}{features.upper()}{'v' + version if version else ''}Family", int(cores))


@dataclass(frozen=True)
class Room:
    nodes: int  # how many more nodes of the kind asked for fit now
    error: dict[str, Any] | None  # the resizeErrors entry when fewer fit than asked


class AccountCapacity:
    def __init__(self, config: ServiceConfig) -> None:
        self.quotas: AccountQuotas = config.quotas
        self.shortage = config.spot_shortage
        self.started = time.monotonic()

    def spot_short(self, now: float | None = None) -> bool:
        if self.shortage is None:
            return False
        elapsed = (time.monotonic() if now is None else now) - self.started
        return self.shortage.after <= elapsed < self.shortage.after + self.shortage.seconds

    def pool_quota_left(self, pools: int) -> bool:
        return self.quotas.pools is None or pools < self.quotas.pools

    def room(self, pools: list[PoolRecord], pool: PoolRecord, dedicated: bool, wanted: int) -> Room:
        shape = vm_shape(vm_size(pool))
        if not dedicated and self.spot_short():
            return Room(0, {"code": "AllocationFailed", "message": (
                "Desired number of Spot nodes could not be allocated: no Spot capacity for "
                f"{shape.family} in the region right now (azbatch-local --spot-shortage)")})
        limits = self._limits(pools, shape, dedicated)
        fits = min([wanted] + [left // shape.cores for _, left in limits])
        if fits >= wanted:
            return Room(wanted, None)
        name = next(label for label, left in limits if left // shape.cores == fits)
        code = "AccountCoreQuotaReached" if dedicated else "AccountLowPriorityCoreQuotaReached"
        return Room(max(0, fits), {"code": code, "message": (
            f"The account has reached its {name} quota: a {vm_size(pool)} node needs {shape.cores} cores "
            f"(azbatch-local --quota)"), "values": [{"name": "Quota", "value": name}]})

    def _limits(self, pools: list[PoolRecord], shape: VmShape, dedicated: bool) -> list[tuple[str, int]]:
        """(quota name, cores left) of every quota a node of this shape and kind counts against."""
        used_total = used_family = 0
        for other in pools:
            other_shape = vm_shape(vm_size(other))
            for node in other.nodes:
                if node.dedicated == dedicated:
                    used_total += other_shape.cores
                    used_family += other_shape.cores if dedicated and other_shape.family == shape.family else 0
        if not dedicated:
            quota = self.quotas.spot_cores
            return [] if quota is None else [("Spot cores", quota - used_total)]
        limits = []
        if self.quotas.dedicated_cores is not None:
            limits.append(("dedicated cores", self.quotas.dedicated_cores - used_total))
        family = self.quotas.family(shape.family)
        if family is not None:
            limits.append((f"{shape.family} cores", family - used_family))
        return limits
