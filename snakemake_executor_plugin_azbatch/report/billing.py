"""What the pools billed (pure): node-hours per pool and kind from node_hours.py, priced with
`--azbatch-price-node-hour` and `--azbatch-price-core-hour` (core-hours = node-hours × the VM size's cores, when
the size is known), and the run's summary.json: billed and busy node-hours, the cost estimate, per-rule
efficiency, in one machine-readable file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import summary
from .efficiency import RuleEfficiency
from .node_hours import KINDS, PoolHours
from .records import TaskAttempt
from .run_info import RunInfo
from .tsv import timestamp

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class BilledLine:
    pool: str
    kind: str  # dedicated | low-priority
    node_hours: float
    busy_node_hours: float
    core_hours: float | None  # None: the pool's VM size (cores) is unknown
    cost: float | None  # None: no price given

    def as_dict(self) -> dict:
        return {"pool": self.pool, "kind": self.kind, "node_hours": round(self.node_hours, 6),
                "busy_node_hours": round(self.busy_node_hours, 6),
                "idle_node_hours": round(max(0.0, self.node_hours - self.busy_node_hours), 6),
                "core_hours": None if self.core_hours is None else round(self.core_hours, 6),
                "cost": None if self.cost is None else round(self.cost, 6)}


def billed_lines(run: RunInfo) -> list[BilledLine]:
    """One line per pool and node kind that had nodes."""
    lines = []
    for hours in run.pool_hours:
        cores = run.cores_per_node.get(hours.pool.lower())
        for i, kind in enumerate(KINDS):
            node_hours = hours.billed[kind]
            if node_hours <= 0 and hours.busy[kind] <= 0:
                continue
            core_hours = node_hours * cores if cores else None
            cost = None
            if run.price_node_hour is not None:
                cost = node_hours * (run.price_node_hour.dedicated, run.price_node_hour.low_priority)[i]
            if run.price_core_hour is not None and core_hours is not None:
                cost = (cost or 0.0) + core_hours * (run.price_core_hour.dedicated, run.price_core_hour.low_priority)[i]
            lines.append(BilledLine(hours.pool, kind, node_hours, hours.busy[kind], core_hours, cost))
    return lines


def _pool(hours: PoolHours) -> dict:
    return {"pool": hours.pool, "created_by_run": hours.created, "from": timestamp(hours.start),
            "to": timestamp(hours.end), "samples": hours.samples,
            "node_hours": {k: round(v, 6) for k, v in hours.billed.items()},
            "busy_node_hours": {k: round(v, 6) for k, v in hours.busy.items()}}


def summary_dict(attempts: list[TaskAttempt], run: RunInfo, rules: list[RuleEfficiency]) -> dict:
    total = summary.Group("all", attempts)
    lines = billed_lines(run)
    costs = [line.cost for line in lines if line.cost is not None]
    occupied = summary.usage_hours(attempts, run.slots_per_node)["node-hour"]
    return {
        "version": SUMMARY_VERSION,
        "run": run.run_token, "outcome": run.outcome, "generated": timestamp(run.generated),
        "tasks": {"attempts": total.count, "succeeded": total.succeeded, "failed": total.failed,
                  "not_finished": total.not_run, "requeues": total.requeues},
        "pools": [_pool(h) for h in run.pool_hours],
        "billed": [line.as_dict() for line in lines],
        "node_hours": round(sum(line.node_hours for line in lines), 6),
        "busy_node_hours": round(sum(line.busy_node_hours for line in lines), 6),
        "task_node_hours": {k: round(v, 6) for k, v in occupied.items()},  # slots × run time ÷ slots per node
        "cost_estimate": round(sum(costs), 6) if costs else None,
        "rules": [r.as_dict() for r in rules],
    }


def write_summary(attempts: list[TaskAttempt], run: RunInfo, rules: list[RuleEfficiency], path: Path) -> Path:
    path.write_text(json.dumps(summary_dict(attempts, run, rules), indent=1) + "\n", encoding="utf-8")
    return path
