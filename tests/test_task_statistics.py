"""Batch's task statistics (`stats`) on the local service: what a task's processes really used (rusage of its
process tree), summed over retries, handed out only with `$expand=stats` or `stats` in `$select`, as Batch does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError
from support.batch_jobs import fresh_job
from support.waiting import wait_for

WAIT_SECONDS = 60
# About 1.5 s of one CPU in user mode, then 0.3 s asleep: CPU well below the wall clock.
BURN = "python3 -c \"import time\nt=time.process_time()\nwhile time.process_time()-t<1.5: sum(range(100000))\ntime.sleep(0.3)\""


@pytest.fixture
def client(local_service: Any) -> BatchClient:
    return local_service.batch_client()


@pytest.fixture
def job(client: BatchClient, local_service: Any) -> Iterator[str]:
    with fresh_job(client, local_service.pool_id, "stats") as job_id:
        yield job_id


def _completed(client: BatchClient, job_id: str, task_id: str) -> m.BatchTask:
    return wait_for(lambda: (t := client.get_task(job_id, task_id)).state == "completed" and t, WAIT_SECONDS,
                    f"task {task_id} completed")


def _seconds(duration: Any) -> float:
    return duration.total_seconds()


def test_a_task_reports_the_cpu_its_processes_used_only_when_asked(client: BatchClient, job: str) -> None:
    client.create_task(job, m.BatchTaskCreateOptions(id="burn", command_line=f"/bin/bash -c '{BURN}'"))
    plain = _completed(client, job, "burn")
    assert plain.task_statistics is None  # not without $expand=stats, as Batch
    stats = client.get_task(job, "burn", expand=["stats"]).task_statistics
    assert 1.3 <= _seconds(stats.user_cpu_time) <= 3.0  # the grandchild python's loop, through bash's wait
    assert _seconds(stats.kernel_cpu_time) < 1.0
    assert _seconds(stats.wall_clock_time) >= _seconds(stats.user_cpu_time) + 0.2  # the sleep is no CPU
    assert _seconds(stats.wait_time) >= 0
    (listed,) = client.list_tasks(job, select=["id", "stats"])  # $select alone gives them too
    assert listed.task_statistics.user_cpu_time == stats.user_cpu_time
    (expanded,) = client.list_tasks(job, expand=["stats"])
    assert expanded.task_statistics.user_cpu_time == stats.user_cpu_time
    (without,) = client.list_tasks(job, select=["id", "state"])
    assert without.task_statistics is None


def test_statistics_sum_the_retries(client: BatchClient, job: str) -> None:
    client.create_task(job, m.BatchTaskCreateOptions(
        id="retried", command_line=f"/bin/bash -c '{BURN}; exit 3'",
        constraints=m.BatchTaskConstraints(max_task_retry_count=1)))
    task = _completed(client, job, "retried")
    assert task.execution_info.retry_count == 1
    stats = client.get_task(job, "retried", expand=["stats"]).task_statistics
    assert _seconds(stats.user_cpu_time) >= 2.8  # two attempts of 1.5 s each


def test_expand_takes_only_stats(client: BatchClient, job: str) -> None:
    with pytest.raises(HttpResponseError) as err:
        list(client.list_tasks(job, expand=["nodeInfo"]))
    assert err.value.status_code == 400 and "$expand" in str(err.value)
