"""What the report says about the run besides its attempts (`RunInfo`), shared by the page and summary.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..config import Prices
from .node_hours import PoolHours, Sample


@dataclass
class RunInfo:
    """What the page says about the run besides its attempts."""

    run_token: str
    workdir: str
    outcome: str  # succeeded | failed | cancelled
    batch_jobs: dict[str, str]  # pool id -> Batch job id
    slots_per_node: dict[str, int]  # pool id -> taskSlotsPerNode
    price_core_hour: Prices | None = None
    price_node_hour: Prices | None = None
    log_root: Path | None = None  # .snakemake/azbatch/logs (absolute)
    generated: datetime | None = None
    notes: list[str] = field(default_factory=list)
    pool_hours: list[PoolHours] = field(default_factory=list)  # billed node-hours (node_hours.py)
    cores_per_node: dict[str, int] = field(default_factory=dict)  # pool id (lower) -> the VM size's cores
    pool_samples: dict[str, list[Sample]] = field(default_factory=dict)  # pool id -> its node counts over time
