"""Batch or storage unreachable mid-run. The tasks keep running on Batch, so the run waits, saying so once in one
line (and again when the endpoint is back); past `--azbatch-outage-tolerance` it ends with one line and its Batch
jobs are terminated (retried for a while; if that fails too, one line says how to do it by hand).

`OutageState` is the pure bookkeeping (what is down since when, the lines to print); `OutageWatch` applies it to
one endpoint: the status rounds report each failed or successful call to it, and `call()` repeats a call (an
upload, a download, a submission) with back-off while the endpoint is unreachable. `Outages` holds the watch of
the Batch account and that of the storage account; once either gives up, both stop waiting."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar

from snakemake_interface_common.exceptions import ApiError

from ..azure_api.azure_sdk import error_text, short_reason, unreachable

T = TypeVar("T")

FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 30.0
TERMINATE_RETRY_SECONDS = 60.0  # how long the end of a run keeps trying to terminate a Batch job that is unreachable
TOLERANCE_SETTING = "--azbatch-outage-tolerance"


class OutageExpired(ApiError):
    """The endpoint stayed unreachable longer than the tolerance; the message is the one line that ends the run.
    (An ApiError, so Snakemake prints it as one line, without a traceback.)"""


def duration(seconds: float) -> str:
    """'45 s', '3 min', '2.5 min'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f}".removesuffix(".0") + " min"


@dataclass
class OutageState:
    """What `what` ("Batch account URL") has been doing: `since` (clock seconds) is None while it answers."""

    what: str
    tolerance: float  # seconds
    since: float | None = None
    since_wall: datetime | None = None
    reason: str = ""

    def down(self, reason: str, started: float, wall_now: datetime, now: float) -> str | None:
        """A call that started at `started` found the endpoint unreachable; the line to print when this begins an
        outage, else None."""
        if self.since is not None:
            return None
        self.since, self.reason = started, reason
        self.since_wall = wall_now - timedelta(seconds=max(0.0, now - started))
        return (
            f"azbatch: {self.what} unreachable since {self.since_wall:%H:%M:%S} ({reason}); tasks keep running on "
            f"Batch; still waiting (giving up after {duration(self.tolerance)})"
        )

    def up(self, now: float) -> str | None:
        """A call succeeded: the line to print when this ends an outage, else None."""
        if self.since is None:
            return None
        seconds, self.since = now - self.since, None
        return f"azbatch: {self.what} reachable again after {duration(seconds)}"

    def expired(self, now: float) -> bool:
        return self.since is not None and now - self.since >= self.tolerance

    def remaining(self, now: float) -> float:
        return self.tolerance if self.since is None else max(0.0, self.since + self.tolerance - now)

    def give_up_line(self, now: float) -> str:
        when = f"{self.since_wall:%H:%M:%S}" if self.since_wall else "?"
        return (
            f"azbatch: {self.what} unreachable for {duration(now - (self.since or now))} (since {when}: "
            f"{self.reason}), longer than {TOLERANCE_SETTING} ({duration(self.tolerance)}); ending the run and "
            "terminating its Batch jobs"
        )


class OutageWatch:
    """One endpoint's outage state, thread-safe, with its lines logged. `ended` is shared by the watches of a run:
    once set (one of them gave up), no call waits any more."""

    def __init__(
        self, what: str, tolerance: float, logger, give_up: Callable[[str], None], ended: threading.Event,
        clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = datetime.now,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.state = OutageState(what, tolerance)
        self.logger = logger
        self.give_up = give_up
        self.ended = ended
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """Whether the last call found the endpoint unreachable (and none has succeeded since)."""
        return self.state.since is not None

    def failed(self, error: BaseException, started: float) -> bool:
        """Note an unreachable endpoint (a call begun at clock time `started`). False once the run gives up: past
        the tolerance, this is the call that ends it."""
        now = self.clock()
        with self._lock:
            line = self.state.down(short_reason(error), started, self.wall(), now)
            expired = self.state.expired(now)
            ending = self.ended.is_set()  # another watch gave up already: nothing more to say
            final = expired and not ending
            if final:
                self.ended.set()
                line = self.state.give_up_line(now)
        if line and not final and not ending:
            self.logger.warning(line)
        self.logger.debug(f"azbatch: {self.state.what} unreachable: {error_text(error)}")
        if final:
            self.give_up(line)
        return not (expired or self.ended.is_set())

    def recovered(self) -> None:
        with self._lock:
            line = self.state.up(self.clock())
        if line:
            self.logger.info(line)

    def call(self, fn: Callable[[], T]) -> T:
        """fn(), repeated with back-off (2 s doubling up to 30 s) while the endpoint is unreachable; OutageExpired
        once the run gives up. Any other error is fn's own and propagates at once."""
        delay = FIRST_RETRY_SECONDS
        started = self.clock()
        while True:
            if self.ended.is_set():
                raise OutageExpired(f"azbatch: the run is ending: {self.state.what} unreachable")
            try:
                result = fn()
            except Exception as e:
                if not unreachable(e):
                    raise
                if not self.failed(e, started):
                    raise OutageExpired(self.state.give_up_line(self.clock())) from None
                with self._lock:
                    left = self.state.remaining(self.clock())
                self.sleep(max(0.5, min(delay, left)))
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                started = self.clock()
                continue
            self.recovered()
            return result


class Outages:
    """The run's two watches: `batch` (the Batch account) and `storage` (the staging storage account)."""

    def __init__(self, batch_url: str, storage_url: str, tolerance_minutes: float, logger,
                 give_up: Callable[[str], None], **clocks: Any) -> None:
        self.ended = threading.Event()
        seconds = tolerance_minutes * 60
        self.batch = OutageWatch(f"Batch account {batch_url}", seconds, logger, give_up, self.ended, **clocks)
        self.storage = OutageWatch(f"storage account {storage_url}", seconds, logger, give_up, self.ended, **clocks)


def terminate_command(job_id: str, account_url: str, account_name: str | None) -> str:
    name = f" --account-name {account_name}" if account_name else ""
    return f"az batch job stop --job-id {job_id} --account-endpoint {account_url}{name}"


def terminate_job_retrying(
    batch, job_id: str, reason: str, logger, *, account_url: str, account_name: str | None,
    budget: float = TERMINATE_RETRY_SECONDS, clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
) -> bool:
    """Terminate the Batch job (which ends its tasks); while Batch is unreachable, try again every few seconds
    for up to `budget` seconds. False (after one error line with the command to run by hand) if it could not."""
    deadline = clock() + budget
    told = False
    while True:
        try:
            batch.terminate_job(job_id, reason)
            return True
        except Exception as e:
            if unreachable(e) and clock() < deadline:
                if not told:
                    told = True
                    logger.warning(
                        f"azbatch: terminating Batch job {job_id}: Batch account {account_url} unreachable "
                        f"({short_reason(e)}); trying again for up to {duration(budget)}"
                    )
                sleep(min(3.0, max(0.5, deadline - clock())))
                continue
            if unreachable(e):
                why = short_reason(e)
            else:  # BatchServiceError says it all in one line; anything else gets its type named
                why = str(e) if str(e).startswith("azbatch: ") else error_text(e)
                why = why.removeprefix("azbatch: ")
            logger.error(
                f"azbatch: could not terminate Batch job {job_id} ({why}); its tasks may still be running: run "
                f"`{terminate_command(job_id, account_url, account_name)}` (the next run of this workflow here "
                "terminates it too, unless --azbatch-keep-orphans)"
            )
            return False
