"""Billed node-hours per pool, from the pool node counts the run already fetches (progress every
`--azbatch-progress-interval`, or node_states' own check every 30 s): no request of its own.

A node is billed while it is allocated, whatever its state (starting, idle, running, unusable), except a preempted
Spot node. Between two samples a pool counts the larger of the two (an upper bound at the sampling interval's
resolution: a node that came and went between two samples is missed, one that left just after a sample is
counted until the next). A pool the run created counts from its creation (the first sample's nodes assumed from
then on) to the report, written just before the pool is deleted; another pool likewise from the run's first
submission. Busy node-hours count nodes running a task (Batch's `running` node state)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

KINDS = ("dedicated", "low-priority")


@dataclass(frozen=True)
class Sample:
    at: datetime
    billed: tuple[int, int]  # (dedicated, low-priority) nodes allocated: total less preempted
    busy: tuple[int, int]  # nodes in state running
    up: tuple[int, int]  # nodes that can take tasks (idle or running)


@dataclass
class PoolHours:
    """One pool's node-hours during the run, per kind (dedicated, low-priority)."""

    pool: str
    start: datetime
    end: datetime
    created: bool
    billed: dict[str, float]
    busy: dict[str, float]
    samples: int

    @property
    def billed_total(self) -> float:
        return sum(self.billed.values())

    @property
    def busy_total(self) -> float:
        return sum(self.busy.values())

    @property
    def idle_total(self) -> float:
        return max(0.0, self.billed_total - self.busy_total)


class NodeHours:
    """Fed with every pool node count the run fetches (`observe`, NodeStates' observer); `hours(end)` at the end."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._samples: dict[str, list[Sample]] = {}
        self._names: dict[str, str] = {}
        self._created: dict[str, datetime] = {}
        self._run_start: datetime | None = None

    def run_started(self) -> None:
        """The run's first submission: a pool it did not create counts from here (its nodes were up already)."""
        with self._lock:
            self._run_start = self._run_start or self.clock()

    def pool_created(self, pool: str) -> None:
        with self._lock:
            self._created[pool.lower()] = self.clock()
            self._names.setdefault(pool.lower(), pool)

    def observe(self, counts: dict[str, tuple[Any, Any]]) -> None:
        """{pool id: (dedicated, low-priority) progress.NodeCounts}."""
        now = self.clock()
        with self._lock:
            for pool, (dedicated, spot) in counts.items():
                self._names.setdefault(pool.lower(), pool)
                self._samples.setdefault(pool.lower(), []).append(Sample(
                    now,
                    (max(0, dedicated.total - dedicated.preempted), max(0, spot.total - spot.preempted)),
                    (dedicated.running, spot.running),
                    (dedicated.idle + dedicated.running, spot.idle + spot.running),
                ))

    def samples(self, pool: str) -> list[Sample]:
        with self._lock:
            return list(self._samples.get(pool.lower(), []))

    def hours(self, end: datetime | None = None) -> list[PoolHours]:
        """Node-hours of every pool seen, up to `end` (the report's time)."""
        end = end or self.clock()
        with self._lock:
            keys = sorted(set(self._samples) | set(self._created))
            return [self._pool_hours(key, end) for key in keys]

    def _pool_hours(self, key: str, end: datetime) -> PoolHours:
        samples = self._samples.get(key, [])
        created = self._created.get(key)
        start = created or min([t for t in (samples[0].at if samples else None, self._run_start) if t] or [end])
        billed, busy = [0.0, 0.0], [0.0, 0.0]
        # Steps: [start, first sample] at the first sample's count, then each interval at the larger of its two
        # ends, then the last sample's count until `end`.
        points = [(start, samples[0])] if samples else []
        points += [(s.at, s) for s in samples]
        for (t0, s0), (t1, s1) in zip(points, points[1:] + ([(end, samples[-1])] if samples else [])):
            span = max(0.0, (t1 - t0).total_seconds()) / 3600
            for i in range(2):
                billed[i] += span * max(s0.billed[i], s1.billed[i])
                busy[i] += span * max(s0.busy[i], s1.busy[i])
        return PoolHours(self._names.get(key, key), start, end, created is not None,
                         dict(zip(KINDS, billed)), dict(zip(KINDS, busy)), len(samples))
