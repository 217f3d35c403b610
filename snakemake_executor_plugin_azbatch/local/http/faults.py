"""Seeded fault injection for the local Batch API: a fraction of requests is answered with a transient error.

`fail_status` is one status (500, 503 or 429) or several (`--fail-status 429,500,503`): each faulted request
then gets one of them, drawn uniformly, so a client meets the mix real Batch answers with under load.

The HTTP layer asks `FaultInjector.pick()` before executing each API request (never for /_local/...). A picked
request is answered with the fault and NOT executed, so a client retry is always safe — that is what clients must
cope with on real Batch (azure-core's RetryPolicy retries 500/503 and honours Retry-After on 429/503).
Draws come from `random.Random(config.seed)`, so a run with the same seed and request sequence repeats.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from ..service_config import ServiceConfig, fault_statuses


@dataclass(frozen=True)
class Fault:
    status: int
    code: str
    message: str
    retry_after: int | None  # seconds, sent as Retry-After


_FAULTS = {
    500: Fault(500, "InternalError", "Injected fault: the server hit an internal error. Please retry the request.", None),
    503: Fault(503, "ServerBusy", "Injected fault: the server is busy. Please retry the request.", 1),
    429: Fault(429, "TooManyRequests", "Injected fault: too many requests. Retry after the Retry-After delay.", 1),
}


class FaultInjector:
    def __init__(self, config: ServiceConfig) -> None:
        statuses = fault_statuses(config.fail_status)
        if not 0.0 <= config.fail_fraction <= 1.0:
            raise ValueError("--fail-fraction must be between 0 and 1")
        self.fraction = config.fail_fraction
        self.faults = [_FAULTS[status] for status in statuses]
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()
        self.injected = 0

    def pick(self) -> Fault | None:
        """The fault to answer this request with, or None to execute it normally."""
        if self.fraction <= 0.0:
            return None
        with self._lock:
            if self._random.random() >= self.fraction:
                return None
            self.injected += 1
            # One status alone draws nothing more, so a single-status run repeats as it did before mixes existed.
            return self.faults[0] if len(self.faults) == 1 else self._random.choice(self.faults)
