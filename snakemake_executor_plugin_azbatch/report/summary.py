"""What the report's tables say, computed from the attempts: per rule, per node, totals and the cost estimate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from statistics import mean
from typing import Iterable

from ..config import Prices
from .records import NOT_STARTED, UNFINISHED, TaskAttempt

NODE_TYPES = ("dedicated", "low-priority")


@dataclass
class Group:
    """Attempts of one rule, one node, or the whole run."""

    name: str
    attempts: list[TaskAttempt] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.attempts)

    @property
    def succeeded(self) -> int:
        return sum(a.succeeded for a in self.attempts)

    @property
    def failed(self) -> int:
        return sum(a.failed for a in self.attempts)

    @property
    def not_run(self) -> int:
        return sum(a.result in (NOT_STARTED, UNFINISHED) for a in self.attempts)

    @property
    def requeues(self) -> int:
        return sum(a.requeues for a in self.attempts)

    def _values(self, name: str) -> list[float]:
        return [v for v in (getattr(a, name) for a in self.attempts) if v is not None]

    @property
    def mean_queue_wait(self) -> float | None:
        values = self._values("queue_wait")
        return mean(values) if values else None

    @property
    def max_queue_wait(self) -> float | None:
        return max(self._values("queue_wait"), default=None)

    @property
    def mean_run_time(self) -> float | None:
        values = self._values("run_time")
        return mean(values) if values else None

    @property
    def max_run_time(self) -> float | None:
        return max(self._values("run_time"), default=None)

    @property
    def core_hours(self) -> float:
        return sum(a.core_hours for a in self.attempts)


def by_rule(attempts: Iterable[TaskAttempt]) -> list[Group]:
    groups: dict[str, Group] = {}
    for a in attempts:
        groups.setdefault(a.rule, Group(a.rule)).attempts.append(a)
    return sorted(groups.values(), key=lambda g: g.name)


def by_node(attempts: Iterable[TaskAttempt]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for a in attempts:
        if a.node:
            groups.setdefault((a.pool, a.node), Group(f"{a.pool}/{a.node}")).attempts.append(a)
    return [groups[key] for key in sorted(groups)]


def span(attempts: Iterable[TaskAttempt]) -> tuple[datetime | None, datetime | None]:
    """First submission and last end (or start) among the attempts."""
    attempts = list(attempts)
    starts = [a.submitted for a in attempts if a.submitted]
    ends = [t for a in attempts for t in (a.ended, a.started) if t]
    return (min(starts) if starts else None, max(ends) if ends else None)


@dataclass(frozen=True)
class CostLine:
    unit: str  # "core-hour" | "node-hour"
    node_type: str  # dedicated | low-priority
    hours: float
    price: float

    @property
    def cost(self) -> float:
        return self.hours * self.price


def usage_hours(attempts: Iterable[TaskAttempt], slots_per_node: dict[str, int]) -> dict[str, dict[str, float]]:
    """{"core-hour"|"node-hour": {dedicated|low-priority: hours}}. A task occupies slots/slots-per-node of a node;
    tasks on nodes of unknown type count as dedicated (the dearer, so the estimate stays an upper bound)."""
    hours = {unit: dict.fromkeys(NODE_TYPES, 0.0) for unit in ("core-hour", "node-hour")}
    per_node = {pool.lower(): max(1, n) for pool, n in slots_per_node.items()}
    for a in attempts:
        kind = "low-priority" if a.node_type == "low-priority" else "dedicated"
        hours["core-hour"][kind] += a.core_hours
        hours["node-hour"][kind] += a.core_hours / per_node.get(a.pool.lower(), 1)
    return hours


def cost_lines(
    attempts: Iterable[TaskAttempt], slots_per_node: dict[str, int],
    price_core_hour: Prices | None, price_node_hour: Prices | None,
) -> list[CostLine]:
    """One line per priced unit and node type; empty without prices."""
    hours = usage_hours(attempts, slots_per_node)
    lines = []
    for unit, prices in (("core-hour", price_core_hour), ("node-hour", price_node_hour)):
        if prices is None:
            continue
        for kind, price in (("dedicated", prices.dedicated), ("low-priority", prices.low_priority)):
            lines.append(CostLine(unit, kind, hours[unit][kind], price))
    return lines
