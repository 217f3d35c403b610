"""Thin wrapper over `azure.batch.BatchClient`: preflight pool checks, job lifecycle, bulk task submission
(≤ 100 tasks per request) and one paged list of completed tasks per status round."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Container, Iterable, Iterator, TypeVar

from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline.policies import RetryPolicy, SansIOHTTPPolicy
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)

from .azure_sdk import (
    CONNECT_TIMEOUT_KWARGS,
    PLUGIN_USER_AGENT,
    enum_text,
    error_code,
    error_text,
    preflight_kwargs,
    redact,
    retry_kwargs,
    unreachable,
)
from ..config import Config
from ..settings.executor_settings import SettingsError
from .credentials import explained
from ..pools.pool_info import PoolInfo
from .pool_preflight import pool_info, read_failure

MAX_TASKS_PER_REQUEST = 100
MAX_REQUEST_BYTES = 900_000  # Batch rejects task collections over 1 MB; leave room for the envelope
# creationTime, nodeInfo and requiredSlots feed the run report (no extra request per task).
COMPLETED_TASK_FIELDS = [
    "id", "state", "stateTransitionTime", "executionInfo", "creationTime", "nodeInfo", "requiredSlots", "stats",
]
# Batch hands out a task's statistics (CPU times) with `stats` in $select; $expand=stats too, for a service that
# reads only that: about 400 bytes more per completed task listed, no request more.
TASK_EXPAND = ["stats"]


def request_chunks(bodies: list[dict], max_bytes: int = MAX_REQUEST_BYTES) -> list[list[dict]]:
    """Consecutive chunks of at most 100 tasks whose serialized size stays under Batch's 1 MB request limit."""
    return [chunk for _, chunk, _ in task_collections((("", body, None) for body in bodies), max_bytes)]


T = TypeVar("T")


def task_collections(
    items: Iterable[tuple[str, dict, T]], max_bytes: int = MAX_REQUEST_BYTES
) -> Iterator[tuple[str, list[dict], list[T]]]:
    """(Batch job id, task body, payload) one at a time → (Batch job id, bodies, payloads) of one add-collection
    request, yielded as soon as that job's request is full (100 tasks, or the next body would pass `max_bytes`);
    the rest at the end. A payload is whatever the caller needs back with the request's results."""
    pending: dict[str, tuple[list[dict], list[T], int]] = {}
    for job_id, body, payload in items:
        size = len(compact_json(body).encode("utf-8")) + 1
        chunk, payloads, total = pending.get(job_id) or ([], [], 0)
        if chunk and (len(chunk) == MAX_TASKS_PER_REQUEST or total + size > max_bytes):
            yield job_id, chunk, payloads
            chunk, payloads, total = [], [], 0
        chunk.append(body)
        payloads.append(payload)
        pending[job_id] = (chunk, payloads, total + size)
    for job_id, (chunk, payloads, _) in pending.items():
        if chunk:
            yield job_id, chunk, payloads


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# What the run watch's pool check selects: the pool's state, and its allocation for resize_watch.py.
POOL_WATCH_FIELDS = ["id", "state", "allocationState", "allocationStateTransitionTime", "vmSize",
                     "targetDedicatedNodes", "targetLowPriorityNodes", "currentDedicatedNodes",
                     "currentLowPriorityNodes", "resizeErrors", "enableAutoScale", "autoScaleEvaluationInterval",
                     "autoScaleRun"]

class CompactJsonPolicy(SansIOHTTPPolicy):
    """The SDK serializes request bodies with json.dumps' default ", " and ": " separators; sent without them,
    a task collection is about 2 % smaller (one space per key and per item). Same JSON, same ASCII escaping."""

    def on_request(self, request) -> None:
        http_request = request.http_request
        body = http_request.content
        if not isinstance(body, str) or "json" not in (http_request.headers.get("Content-Type") or ""):
            return
        try:
            compact = compact_json(json.loads(body))
        except ValueError:
            return
        if len(compact) < len(body):
            http_request.set_bytes_body(compact.encode("utf-8"))  # also sets Content-Length (signed by Shared Key)


class BatchRetryPolicy(RetryPolicy):
    """azure-core retries POST only on 500/503/504; Batch answers throttling with 429 (+ Retry-After) on POSTs
    too. Our POSTs are safe to repeat: a repeated create reports JobExists / TaskExists, which we accept.

    azure-core reads the methods it may retry from the request option `retry_on_methods` in `configure_retries`
    (a public method); a request that sets the option itself keeps its value. The option is not in azure-core's
    docstrings, so tests/test_batch_retry.py pins the behaviour this relies on."""

    RETRY_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST", "PATCH"})

    def configure_retries(self, options):
        options.setdefault("retry_on_methods", self.RETRY_METHODS)
        return super().configure_retries(options)


class BatchServiceError(Exception):
    """A Batch request failed; one line, no secrets."""


class JobQuotaReached(BatchServiceError):
    """409 ActiveJobAndScheduleQuotaReached: the account holds as many active jobs as it may (job_quota.py waits)."""


class BatchService:
    def __init__(self, config: Config, credential_factory: Callable[[], Any], client: BatchClient | None = None):
        self.config = config
        if client is None:
            if config.account.key:
                credential = AzureNamedKeyCredential(config.account.name, config.account.key)
            else:
                credential = credential_factory()
            client = BatchClient(
                config.account.url, credential, retry_policy=BatchRetryPolicy(**retry_kwargs()),
                per_call_policies=[CompactJsonPolicy()], user_agent=PLUGIN_USER_AGENT, **CONNECT_TIMEOUT_KWARGS,
            )
        self.client = client

    # ---- preflight -------------------------------------------------------------------------------------------
    def check_pool(self, pool_id: str, setting: str = "--azbatch-pool-id") -> PoolInfo:
        """The pool exists, is active and has (or can get) nodes; raises SettingsError with one line otherwise."""
        account = self.config.account.url
        try:
            with explained(f"Batch account {account}", keyed=bool(self.config.account.key)):
                pool = self.client.get_pool(pool_id, **preflight_kwargs())
        except SettingsError:
            raise
        except Exception as e:
            raise read_failure(e, pool_id, account, keyed=bool(self.config.account.key), setting=setting) from None
        return pool_info(pool, pool_id, setting)

    # ---- pools the run creates (pool_creation.py builds the body) ---------------------------------------------
    def pool_exists(self, pool_id: str) -> bool:
        try:
            self.client.get_pool(pool_id, select=["id"])
            return True
        except ResourceNotFoundError:
            return False
        except HttpResponseError as e:
            raise SettingsError(f"azbatch: cannot read pool {pool_id!r}: {error_text(e)}") from None

    def create_pool(self, body: dict) -> None:
        try:
            self.client.create_pool(body)
        except ResourceExistsError:
            pass  # a retried create after a lost response
        except HttpResponseError as e:
            hint = ""
            if e.status_code == 403:
                hint = (" (creating pools needs the Azure Batch Data Contributor role on the Batch account; Azure "
                        "Batch Job Submitter is not enough)")
            text = error_text(e)
            registries = (body.get("virtualMachineConfiguration", {}).get("containerConfiguration") or {}).get(
                "containerRegistries") or []
            for secret in (r.get("password") for r in registries):
                if secret:
                    text = text.replace(secret, "***")  # a registry password is never shown, even if echoed
            raise SettingsError(f"azbatch: creating pool {body['id']!r} failed: {text}{hint}") from None

    def delete_pool(self, pool_id: str) -> None:
        """Deletes the pool; waits up to a minute for it to be gone (Batch goes on removing nodes after that)."""
        try:
            self.client.begin_delete_pool(pool_id, polling_interval=1).result(timeout=60)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as e:
            if error_code(e) != "PoolBeingDeleted":
                raise BatchServiceError(f"azbatch: deleting pool {pool_id} failed: {error_text(e)}") from None

    def missing_applications(self, packages) -> list[str]:
        """NAME[:VERSION] of each application package (config.AppPackage) the account does not have."""
        missing = []
        for package in packages:
            try:
                app = self.client.get_application(package.name)
            except ResourceNotFoundError:
                missing.append(package.name)
                continue
            except HttpResponseError:
                continue  # not readable with these rights: Batch names it when a task uses it
            if package.version and package.version not in (getattr(app, "versions", None) or []):
                missing.append(f"{package.name}:{package.version}")
        return missing

    # ---- job lifecycle -----------------------------------------------------------------------------------------
    def create_job(self, body: dict) -> None:
        try:
            self.client.create_job(body)
        except HttpResponseError as e:
            if isinstance(e, ResourceExistsError) and error_code(e) in ("JobExists", ""):
                return  # a retried create after a lost response
            if unreachable(e):
                raise  # an outage: the caller waits it out (outage.py)
            kind = JobQuotaReached if error_code(e) == "ActiveJobAndScheduleQuotaReached" else BatchServiceError
            raise kind(f"azbatch: creating Batch job {body['id']} failed: {error_text(e)}") from None

    def terminate_job(self, job_id: str, reason: str = "snakemake run ended") -> None:
        """Terminates the job, which terminates its running tasks; waits until it is completed."""
        try:
            poller = self.client.begin_terminate_job(job_id, {"terminateReason": reason[:64]}, polling_interval=1)
            poller.result(timeout=120)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as e:
            if unreachable(e):
                raise  # an outage: outage.terminate_job_retrying tries again
            if error_code(e) not in ("JobCompleted", "JobBeingTerminated", "JobBeingDeleted"):
                raise BatchServiceError(f"azbatch: terminating Batch job {job_id} failed: {error_text(e)}") from None

    def update_job_metadata(self, job_id: str, metadata: list[dict[str, str]]) -> None:
        """Jobs_UpdateJob with the whole metadata list (Batch replaces the list); errors are the caller's."""
        self.client.update_job(job_id, {"metadata": metadata})

    def job_end(self, job_id: str) -> tuple[str, str]:
        """(state, terminateReason) of a job ('' for a reason Batch did not give)."""
        job = self.client.get_job(job_id, select=["id", "state", "executionInfo"])
        info = getattr(job, "execution_info", None)
        return enum_text(job.state), str(getattr(info, "termination_reason", None) or "")

    def pool_allocation(self, pool_id: str) -> Any | None:
        """The pool's state and allocation (`POOL_WATCH_FIELDS`, for run_watch / resize_watch), None when it does
        not exist."""
        try:
            return self.client.get_pool(pool_id, select=POOL_WATCH_FIELDS)
        except ResourceNotFoundError:
            return None

    def list_active_jobs(self, query: str, select: list[str]) -> list[Any]:
        """One paged list of jobs (crash recovery looks for earlier runs' jobs with it)."""
        try:
            return list(self.client.list_jobs(filter=query, select=select))
        except HttpResponseError as e:
            raise BatchServiceError(f"azbatch: listing active Batch jobs failed: {error_text(e)}") from None

    def delete_job(self, job_id: str) -> None:
        try:
            poller = self.client.begin_delete_job(job_id, polling_interval=1)
            poller.result(timeout=120)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as e:
            if error_code(e) != "JobBeingDeleted":
                raise BatchServiceError(f"azbatch: deleting Batch job {job_id} failed: {error_text(e)}") from None

    # ---- tasks -------------------------------------------------------------------------------------------------
    def submit_tasks(self, job_id: str, bodies: list[dict]) -> dict[str, str | None]:
        """Adds tasks in requests of at most 100 tasks and under 1 MB. Returns task id → None (added) or a one-line
        error."""
        results: dict[str, str | None] = {}
        for chunk in request_chunks(bodies):
            pending = {body["id"]: body for body in chunk}
            for _ in range(5):  # resubmit only tasks the service answered with a server error
                try:
                    response = self.client.create_task_collection(job_id, {"value": list(pending.values())})
                except HttpResponseError as e:
                    if unreachable(e):
                        raise  # an outage: the caller waits it out and sends the chunk again (outage.py)
                    message = error_text(e)
                    for task_id in pending:
                        results[task_id] = f"task submission rejected: {message}"
                    pending = {}
                    break
                retry = {}
                for item in response.result_values or []:
                    task_id = item.task_id
                    status = enum_text(item.status)
                    error = item.error
                    code = getattr(error, "code", None) if error else None
                    if status == "success" or code == "TaskExists":
                        results[task_id] = None
                    elif status == "servererror" and task_id in pending:
                        retry[task_id] = pending[task_id]
                    else:
                        message = getattr(error, "message", None) if error else None
                        text = getattr(message, "value", None) if message is not None else None
                        details = "; ".join(
                            f"{v.key}: {v.value}" for v in (getattr(error, "error_values", None) or []) if v
                        )
                        results[task_id] = redact(
                            f"Batch rejected task {task_id}: {code or status} {text or ''} {details}".strip()
                        )
                for task_id in pending:
                    if task_id not in retry and task_id not in results:
                        results[task_id] = f"Batch returned no result for task {task_id}"
                pending = retry
                if not pending:
                    break
            for task_id in pending:
                results[task_id] = f"Batch kept answering task {task_id} with server errors"
        return results

    def completed_tasks(
        self, job_id: str, since: datetime | None = None, wanted: Container[str] | None = None
    ) -> tuple[list[Any], datetime | None]:
        """One paged list of the job's completed tasks (COMPLETED_TASK_FIELDS only); with `since`, only those that
        completed at or after it, so a round costs the same late in a long run as early on. Returns the tasks whose
        id is in `wanted` (all without it) and the latest stateTransitionTime of all listed. Filtering page by
        page keeps only the tasks the caller needs: a large run relists thousands of tasks it already has (the
        caller's margin), at several KiB each as SDK models."""
        query = "state eq 'completed'"
        if since is not None:
            stamp = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            query += f" and stateTransitionTime ge datetime'{stamp}'"
        tasks, latest = [], None
        for task in self.client.list_tasks(job_id, filter=query, select=COMPLETED_TASK_FIELDS, expand=TASK_EXPAND):
            stamp = task.state_transition_time
            if stamp is not None and (latest is None or stamp > latest):
                latest = stamp
            if wanted is None or task.id in wanted:
                tasks.append(task)
        return tasks, latest

    def close(self) -> None:
        self.client.close()
