"""The adaptive status interval: short while tasks complete (their successors become ready and Snakemake wants to
know soon), growing while nothing changes (a long-running task needs no second-by-second polling), bounded both
ways. The same idea as the Snakemake SLURM plugin's status checks, which space out when nothing happens."""

from __future__ import annotations

from dataclasses import dataclass

GROWTH = 1.5
DEFAULT_MAX_FACTOR = 10
DEFAULT_MAX_SECONDS = 60.0


def default_maximum(minimum: float) -> float:
    return max(minimum, min(DEFAULT_MAX_SECONDS, minimum * DEFAULT_MAX_FACTOR))


@dataclass
class AdaptiveInterval:
    minimum: float
    maximum: float
    current: float = 0.0

    def __post_init__(self) -> None:
        self.maximum = max(self.minimum, self.maximum)
        self.current = self.minimum

    def after_round(self, completed: int) -> float:
        """The wait before the next round, given how many tasks this round found completed."""
        if completed:
            self.current = self.minimum
        else:
            self.current = min(self.maximum, self.current * GROWTH)
        return self.current
