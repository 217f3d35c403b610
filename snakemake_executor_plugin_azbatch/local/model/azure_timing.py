"""How long pools take to change: `PoolTiming` for `--timing fast` (nodes at once) or `azure` (Azure's delays), every
figure multiplied by `--time-scale`. Sources of the figures: docs/local-service.md, "Timing like Azure".

Batch documents no allocation or start-up time of a node, only the bound a resize must meet (resizeTimeout, 15
minutes by default); the ranges below are what we chose (see the docs table), drawn from one seeded generator so a
run repeats with the same `--seed`."""

from __future__ import annotations

import random

from ..service_config import ServiceConfig

# Seconds, before scaling. Chosen (undocumented): a resize's VMs come after ALLOCATION_SECONDS, each node then boots
# for BOOT_SECONDS before it joins (its start task, if any, then takes its real time).
ALLOCATION_SECONDS = (60.0, 180.0)
BOOT_SECONDS = (60.0, 150.0)
# Documented: samples take about a minute to reach autoscale formulas (batch-automatic-scaling); a Spot VM's
# Preempt scheduled event comes at least 30 s ahead (scheduled-events).
SAMPLE_DELAY_SECONDS = 60.0
EVICTION_NOTICE_SECONDS = 30.0


class PoolTiming:
    """The delays of one service: drawn per resize (allocation) and per node (boot), fixed for the rest."""

    def __init__(self, config: ServiceConfig) -> None:
        self.azure = config.timing == "azure"
        self.scale = config.time_scale
        self._rng = random.Random(f"timing-{config.seed}")
        self.sample_period = config.autoscale_sample_seconds * self.scale
        self.sample_delay = (SAMPLE_DELAY_SECONDS if self.azure else 0.0) * self.scale
        self.eviction_notice = (EVICTION_NOTICE_SECONDS if self.azure else 0.0) * self.scale

    def _draw(self, bounds: tuple[float, float]) -> float:
        return self._rng.uniform(*bounds) * self.scale if self.azure else 0.0

    def allocation_delay(self) -> float:
        return self._draw(ALLOCATION_SECONDS)

    def boot_delay(self) -> float:
        return self._draw(BOOT_SECONDS)

    def evaluation_interval(self, interval_seconds: float) -> float:
        """A pool's autoScaleEvaluationInterval as the service waits it (validated unscaled, as Batch does)."""
        return interval_seconds * self.scale
