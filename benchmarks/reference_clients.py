"""Reference clients: the Batch request patterns of the two anchors, replayed with the azure-batch SDK.

They do not reimplement the anchors; they make the same Batch requests the anchors make for the same tasks, so
requests, bytes and wall time can be compared on one service and one workload. What each anchor requests was
read from their sources: snakemake-executor-plugin-azure-batch 0.3.0 (commit ce1f23e, September 2024) and Nextflow
at commit 2aad02f (August 2026):

* snakemake-executor-plugin-azure-batch (`snakemake_executor_plugin_azure_batch/__init__.py`): one job
  (`maxTaskRetryCount` 0); one add-task request per Snakemake job (`run_job`); every status round, for *each*
  active job: a pool get (resize errors), a node list (unusable nodes, start-task failures) and a task get, through
  Snakemake's status rate limiter (`--max-status-checks-per-second`, default 10; the pool get takes one permit,
  the node list and task get another); for each completed task, stdout.txt and stderr.txt are downloaded (task
  file get); at the end the job is deleted (here with SDK 15's begin_delete_job, whose completion poll adds one
  job get that its azure-batch 14 job delete does not make). Not replayed: it creates (and deletes) its own pool
  through the management API, which this comparison leaves out (the pool exists), and its storage plugin's blob
  traffic.
* Nextflow's Azure Batch executor (`plugins/nf-azure`, `AzBatchService` / `AzBatchTaskHandler`): a pool get the
  first time a pool is used; one job per process and pool (`maxWallClockTime` 30 days by default); one add-task
  request per task; every polling round, one task get per active task (its state is cached for 1 s, so
  `checkIfRunning` and `checkIfCompleted` in one round share it); for each completed task one more task get (exit
  code) and, when it succeeded, a task delete (`deleteTasksOnCompletion` unset); at the end a job get and a job
  update setting `onAllTasksComplete` to `terminatejob`. Its file staging (azcopy in the task wrapper) is left out.

Both submit sequentially and poll every `interval` seconds: the same interval as this plugin's status rounds in
the comparison (the anchors' own defaults are 10 s: Snakemake's --seconds-between-status-checks and Nextflow's
Azure pollInterval), so the figures differ only by the request pattern.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Callable

from azure.batch import BatchClient
from azure.batch import models as batch_models

# The add-task fields a replay copies from a task this plugin created (REST names).
_CREATE_FIELDS = (
    "id", "displayName", "exitConditions", "commandLine", "containerSettings", "resourceFiles", "outputFiles",
    "environmentSettings", "affinityInfo", "constraints", "requiredSlots", "userIdentity",
    "multiInstanceSettings", "dependsOn", "applicationPackageReferences", "authenticationTokenSettings",
)


# The job fields a replay copies from the job this plugin created: its tasks need the job preparation task (it
# unpacks the run's sources on each node) and the job's common environment (the task prefix), so without them
# the replayed tasks would fail.
_JOB_FIELDS = ("jobPreparationTask", "jobReleaseTask", "commonEnvironmentSettings", "usesTaskDependencies")


def captured_job(client: BatchClient, job_id: str) -> dict[str, Any]:
    """The add-job fields (REST names) the plugin's tasks rely on, from the job it created."""
    rest = client.get_job(job_id).as_dict()
    return {k: rest[k] for k in _JOB_FIELDS if rest.get(k) is not None}


def captured_tasks(client: BatchClient, job_id: str) -> list[dict[str, Any]]:
    """The add-task bodies of a job's tasks (as this plugin submitted them), to replay the same work."""
    bodies = []
    for task in client.list_tasks(job_id):
        rest = task.as_dict()
        bodies.append({k: rest[k] for k in _CREATE_FIELDS if rest.get(k) is not None})
    return sorted(bodies, key=lambda body: body["id"])


@dataclass
class Replay:
    client: str
    job_id: str
    tasks: int
    wall_s: float
    rounds: int
    failed: int
    first_failure: str = ""  # execution info of the first failed task, to say why


def _failure(task: batch_models.BatchTask) -> str:
    info = task.execution_info
    return f"task {task.id}: {info.as_dict() if info else 'no execution info'}"


class RateLimiter:
    """At most `rate` acquisitions in any 1 s window, as Snakemake's status rate limiter (a Throttler)."""

    def __init__(self, rate: float) -> None:
        self.rate = max(1, int(rate))
        self.times: collections.deque[float] = collections.deque()

    def acquire(self) -> None:
        now = time.monotonic()
        while self.times and now - self.times[0] >= 1.0:
            self.times.popleft()
        if len(self.times) >= self.rate:
            time.sleep(1.0 - (now - self.times[0]))
            self.times.popleft()
        self.times.append(time.monotonic())


def _succeeded(task: batch_models.BatchTask) -> bool:
    info = task.execution_info
    return info is not None and str(getattr(info.result, "value", info.result)).lower() == "success"


def _completed(task: batch_models.BatchTask) -> bool:
    return str(getattr(task.state, "value", task.state)).lower() == "completed"


def _submit_one_by_one(client: BatchClient, pool_id: str, job_id: str, constraints: dict[str, Any],
                       job: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
    """One job (with the captured job fields), then one add-task request per task, in order (both anchors submit
    this way)."""
    client.create_job(batch_models.BatchJobCreateOptions(
        {**job, "id": job_id, "poolInfo": {"poolId": pool_id}, "constraints": constraints}))
    for body in tasks:
        client.create_task(job_id, batch_models.BatchTaskCreateOptions(body))


def _poll(tasks: list[dict[str, Any]], interval: float, check_round: Callable[[list[str]], list[str]]) -> int:
    """Status rounds until no task is active: check, then sleep `interval`. Returns the number of rounds."""
    active = [body["id"] for body in tasks]
    rounds = 0
    while active:
        active = check_round(active)
        rounds += 1
        if active:
            time.sleep(interval)
    return rounds


def replay_upstream_snakemake(client: BatchClient, pool_id: str, job: dict[str, Any], tasks: list[dict[str, Any]],
                              job_id: str, interval: float, status_checks_per_second: float = 10) -> Replay:
    """snakemake-executor-plugin-azure-batch's requests for these tasks (see the module docstring)."""
    limiter = RateLimiter(status_checks_per_second)
    failed = 0
    failures: list[str] = []
    start = time.perf_counter()
    _submit_one_by_one(client, pool_id, job_id, {"maxTaskRetryCount": 0}, job, tasks)

    def check_round(active: list[str]) -> list[str]:
        nonlocal failed
        still = []
        for task_id in active:
            limiter.acquire()
            client.get_pool(pool_id)
            limiter.acquire()
            for _ in client.list_nodes(pool_id):
                pass
            task = client.get_task(job_id, task_id)
            if not _completed(task):
                still.append(task_id)
                continue
            for name in ("stderr.txt", "stdout.txt"):
                b"".join(client.download_task_file(job_id, task_id, name))
            if not _succeeded(task):
                failed += 1
                failures.append(_failure(task))
        return still

    rounds = _poll(tasks, interval, check_round)
    client.begin_delete_job(job_id).result()
    return Replay("snakemake-executor-plugin-azure-batch (replayed)", job_id, len(tasks),
                  time.perf_counter() - start, rounds, failed, (failures or [""])[0])


def replay_nextflow(client: BatchClient, pool_id: str, job: dict[str, Any], tasks: list[dict[str, Any]],
                    job_id: str, interval: float) -> Replay:
    """Nextflow's Azure Batch executor's requests for these tasks (see the module docstring)."""
    failed = 0
    failures: list[str] = []
    start = time.perf_counter()
    client.get_pool(pool_id)
    _submit_one_by_one(client, pool_id, job_id, {"maxWallClockTime": "P30D"}, job, tasks)

    def check_round(active: list[str]) -> list[str]:
        nonlocal failed
        still = []
        for task_id in active:
            if not _completed(client.get_task(job_id, task_id)):
                still.append(task_id)
                continue
            task = client.get_task(job_id, task_id)  # the exit code, read once more when the task completes
            if _succeeded(task):
                client.delete_task(job_id, task_id)
            else:
                failed += 1
                failures.append(_failure(task))
        return still

    rounds = _poll(tasks, interval, check_round)
    job = client.get_job(job_id)
    client.update_job(job_id, batch_models.BatchJobUpdateOptions(
        all_tasks_complete_mode="terminatejob", pool_info=job.pool_info,
    ))
    return Replay("Nextflow Azure Batch executor (replayed)", job_id, len(tasks),
                  time.perf_counter() - start, rounds, failed, (failures or [""])[0])
