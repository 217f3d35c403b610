"""The account's active-job quota (Batch answers 409 ActiveJobAndScheduleQuotaReached when it holds as many
active jobs and job schedules as it may, 100-300 by default): wait until another job completes and retry, saying
so, and give up with one line after a limit."""

from __future__ import annotations

import time
from typing import Callable

from .batch_client import BatchService, JobQuotaReached

REPEAT_MESSAGE_SECONDS = 300.0
GIVE_UP_SECONDS = 3600.0


def create_job_waiting(
    batch: BatchService, body: dict, logger, *, interval: float = 15.0, give_up_after: float = GIVE_UP_SECONDS,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Create the job; while the quota is reached, retry every `interval` seconds (one line at first, then every
    few minutes). Raises JobQuotaReached with one line after `give_up_after` seconds."""
    started = clock()
    told = None
    while True:
        try:
            batch.create_job(body)
            if told is not None:
                logger.info(f"azbatch: Batch job {body['id']} created after waiting {clock() - started:.0f} s for the quota")
            return
        except JobQuotaReached:
            waited = clock() - started
            if waited >= give_up_after:
                raise JobQuotaReached(
                    f"azbatch: the Batch account still holds its maximum of active jobs after {waited:.0f} s "
                    "(409 ActiveJobAndScheduleQuotaReached); end or delete finished jobs (`az batch job list "
                    "--query \"[?state=='active'].id\"`) or ask for a higher quota"
                ) from None
            if told is None or clock() - told >= REPEAT_MESSAGE_SECONDS:
                told = clock()
                logger.warning(
                    f"azbatch: the Batch account holds its maximum of active jobs (409 ActiveJobAndScheduleQuotaReached); "
                    f"waiting for one to complete before creating {body['id']} (retrying every {interval:g} s)"
                )
            sleep(interval)
