"""Task submission for many ready jobs: task-collection requests (≤ 100 tasks, < 1 MB each) for every Batch job,
sent by a bounded number of threads at once, as Batch's guidance for large jobs suggests (parallel add-collection
calls rather than one after another).

Streaming: task bodies are built as requests fill and a request's bodies are dropped once it is answered, so at
most `2 × workers` requests' worth of task definitions are alive at a time. Holding all of them at once cost about
100 MiB of the plugin's peak memory when Snakemake handed over 20,000 jobs together."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ..azure_api.azure_sdk import error_text
from ..azure_api.batch_client import task_collections
from .outage import OutageExpired

T = TypeVar("T")
Results = dict[str, "str | None"]  # task id → None (added) or a one-line error


def submit_streaming(
    batch, requests: Iterable[tuple[str, list[dict], list[T]]], workers: int, call: Callable = lambda fn: fn()
) -> Iterator[tuple[str, list[T], Results]]:
    """Sends each request (from `batch_client.task_collections`) with `batch.submit_tasks(job_id, bodies)` through `call` (the run's
    outage watch repeats it while Batch is unreachable: tasks a lost answer had already added come back as
    TaskExists, i.e. added), up to `workers` at a time, and yields (job id, payloads, results) in request order.
    Requests are drawn from `requests` only while fewer than 2 × `workers` are unanswered. OutageExpired
    propagates: the run ends."""

    def submit(job_id: str, bodies: list[dict]) -> Results:
        try:
            return call(lambda: batch.submit_tasks(job_id, bodies))
        except OutageExpired:
            raise
        except Exception as e:  # one failed request fails its own tasks only
            return {body["id"]: f"task submission failed: {error_text(e)}" for body in bodies}

    if workers <= 1:
        for job_id, bodies, payloads in requests:
            yield job_id, payloads, submit(job_id, bodies)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azbatch-submit") as pool:
        in_flight: deque = deque()
        for job_id, bodies, payloads in requests:
            in_flight.append((job_id, payloads, pool.submit(submit, job_id, bodies)))
            del bodies  # the future holds them until answered, no longer
            while len(in_flight) >= 2 * workers:
                job, done, future = in_flight.popleft()
                yield job, done, future.result()
        while in_flight:
            job, done, future = in_flight.popleft()
            yield job, done, future.result()


def submit_in_parallel(
    batch, bodies_by_job: dict[str, list[dict]], workers: int, call: Callable = lambda fn: fn()
) -> Results:
    """Task id → None (added) or a one-line error, for every body (all bodies at hand; see submit_streaming)."""
    items = ((job_id, body, None) for job_id, bodies in bodies_by_job.items() for body in bodies)
    results: Results = {}
    for _, _, chunk_results in submit_streaming(batch, task_collections(items), workers, call):
        results.update(chunk_results)
    return results


class RateLimitHint:
    """`rate_limit_hint` said once per run, from what the workflow exposes (neither the limit nor the ready jobs
    are in the executor interface: read defensively, so another Snakemake only loses the hint)."""

    def __init__(self, workflow: Any, say: Callable[[str], None]) -> None:
        self.workflow, self.say, self.said = workflow, say, False

    def __call__(self, handed: int) -> None:
        if self.said:
            return
        limit = getattr(getattr(self.workflow, "scheduling_settings", None), "max_jobs_per_timespan", None)
        ready = getattr(getattr(self.workflow, "dag", None), "ready_jobs", None)  # without the jobs handed over
        hint = rate_limit_hint(limit, handed, len(ready) if isinstance(ready, (set, frozenset)) else None)
        if hint:
            self.said = True
            self.say(hint)


def rate_limit_hint(limit: Any, handed: int, still_ready: int | None = None) -> str | None:
    """One line when Snakemake's job rate limit (`--max-jobs-per-timespan`, default 100/1s) held jobs back:
    `handed`, the jobs of one `run_jobs` call, reached it while `still_ready` more were ready (None: unknown, then
    reaching the limit is taken as holding back). Each of Snakemake's scheduling rounds costs time in proportion to
    all ready jobs, so a fan-out of n jobs handed over k at a time costs about n²/k of Snakemake's time before the
    last task is submitted (README, large fan-outs)."""
    max_jobs, timespan = getattr(limit, "max_jobs", None), getattr(limit, "timespan", None)
    if not isinstance(max_jobs, int) or not isinstance(timespan, (int, float)) or handed < max_jobs:
        return None
    if still_ready is not None and still_ready <= 0:
        return None
    waiting = f" while {still_ready} more were ready" if still_ready else ""
    return (
        f"azbatch: Snakemake's job rate limit held jobs back (--max-jobs-per-timespan {max_jobs}/{timespan:g}s "
        f"handed over {handed}{waiting}). Batch takes 100 tasks per request and the plugin sends requests in "
        "parallel: for large fan-outs set the limit to about the number of jobs ready at once, e.g. "
        "--max-jobs-per-timespan 20000/1s"
    )
