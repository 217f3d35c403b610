"""Run report and live progress settings: where reports go, prices for the cost estimate, progress interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings.executor_settings import SettingsError
from .numbers import flag, number
from .values import SettingValues, where


@dataclass(frozen=True)
class Prices:
    """A price per hour for dedicated and for low-priority (Spot) nodes."""

    dedicated: float
    low_priority: float


def prices(name: str, raw) -> Prices | None:
    """PRICE or DEDICATED,LOW_PRIORITY (non-negative numbers) into Prices."""
    if raw in (None, ""):
        return None
    parts = [p.strip() for p in str(raw).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 0 or not math.isfinite(v) for v in values):
        raise SettingsError(
            f"azbatch: {where(name)} {raw!r}: expected a price per hour as DEDICATED[,LOW_PRIORITY], e.g. 0.19,0.04"
        )
    return Prices(values[0], values[-1])


@dataclass(frozen=True)
class ReportConfig:
    """Whether a run report is written and where, the prices for its cost estimate, seconds between live progress
    lines."""

    write: bool
    directory: str
    price_core_hour: Prices | None
    price_node_hour: Prices | None
    progress_interval: float


def resolve_reporting(values: SettingValues) -> ReportConfig:
    interval = number(values, "progress_interval", float, 0)
    return ReportConfig(
        write=not flag(values, "no_report"),
        directory=values.get("report_dir") or values.defaults["report_dir"],
        price_core_hour=prices("price_core_hour", values.get("price_core_hour")),
        price_node_hour=prices("price_node_hour", values.get("price_node_hour")),
        progress_interval=values.defaults["progress_interval"] if interval is None else interval,
    )
