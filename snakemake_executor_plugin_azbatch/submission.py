"""Task submission for many ready jobs: task-collection requests (≤ 100 tasks, < 1 MB each) for every Batch job,
sent by a bounded number of threads at once, as Batch's guidance for large jobs suggests (parallel add-collection
calls rather than one after another)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .azure_sdk import error_text
from .batch_client import request_chunks
from .outage import OutageExpired


def submit_in_parallel(
    batch, bodies_by_job: dict[str, list[dict]], workers: int, call: Callable = lambda fn: fn()
) -> dict[str, str | None]:
    """Task id → None (added) or a one-line error, for every body. `batch.submit_tasks(job_id, chunk)` sends one
    request for a chunk that `request_chunks` made, through `call` (the run's outage watch repeats it while Batch is
    unreachable: tasks a lost answer had already added come back as TaskExists, i.e. added). OutageExpired
    propagates: the run ends."""
    work = [(job_id, chunk) for job_id, bodies in bodies_by_job.items() for chunk in request_chunks(bodies)]
    results: dict[str, str | None] = {}

    def submit(item: tuple[str, list[dict]]) -> dict[str, str | None]:
        job_id, chunk = item
        try:
            return call(lambda: batch.submit_tasks(job_id, chunk))
        except OutageExpired:
            raise
        except Exception as e:  # one failed request fails its own tasks only
            return {body["id"]: f"task submission failed: {error_text(e)}" for body in chunk}

    if len(work) <= 1 or workers <= 1:
        for item in work:
            results.update(submit(item))
        return results
    with ThreadPoolExecutor(max_workers=min(workers, len(work)), thread_name_prefix="azbatch-submit") as pool:
        for chunk_results in pool.map(submit, work):
            results.update(chunk_results)
    return results
