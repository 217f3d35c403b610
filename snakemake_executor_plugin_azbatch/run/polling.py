"""The adaptive status interval: short while tasks complete (their successors become ready and Snakemake wants to
know soon), growing while nothing changes (a long-running task needs no second-by-second polling), bounded both
ways. The same idea as the Snakemake SLURM plugin's status checks, which space out when nothing happens."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urlparse

GROWTH = 1.5
DEFAULT_MAX_FACTOR = 10
DEFAULT_MAX_SECONDS = 60.0


def default_maximum(minimum: float) -> float:
    return max(minimum, min(DEFAULT_MAX_SECONDS, minimum * DEFAULT_MAX_FACTOR))


def is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def first_interval(setting: float | None, snakemake_seconds: float, account_url: str) -> float:
    """--azbatch-status-interval, else Snakemake's --seconds-between-status-checks (at least 1 s); a loopback
    account is the local service: rounds are cheap there, and quick feedback matters."""
    if setting is not None:
        return setting
    return 1.0 if is_loopback(account_url) else max(1.0, snakemake_seconds)


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


SLEEP_STEP_SECONDS = 0.5


async def sleep_interval(
    interval: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Sleep until `interval()` seconds have passed since the call, re-reading it every short step.

    Snakemake's status thread begins its first sleep before the executor's __post_init__ has set the interval (it
    would sleep Snakemake's default 10 s); re-reading lets that first round, and any shortened interval, come on time.
    """
    start = clock()
    while (remaining := start + interval() - clock()) > 0:
        await sleep(min(SLEEP_STEP_SECONDS, remaining))
