"""HTTP layer of the local Batch service: routes → `BatchState` calls, Batch headers, error bodies, OData, paging,
task/node file endpoints, Shared Key auth, fault injection and metrics.

Contract: Microsoft's Batch REST API 2025-06-01.21.0 (older api-versions are accepted too, as the Azure CLI sends
them). Every API request goes: fault injection → Shared Key → api-version → route → handler. `/_local/metrics` and
`/_local/health` need no auth and are not counted.

Choices where Batch leaves room:
- Lists are ordered by (creationTime, id) — or id / name where there is no creationTime — and `odata.nextLink`
  carries `$skiptoken` = the last key returned, so a link stays valid while entities come and go.
- String comparisons in `$filter` ignore case (IDs are case-insensitive on Batch).
- `ocp-range` answers 200 with the requested bytes (the spec allows only 200); a plain HTTP `Range` answers 206.
- A task file path may use '/' or '\\' as separator; paths leaving the task directory are not found.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http.server
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from .config import LOOPBACK_HOSTS, ServiceConfig
from .faults import Fault, FaultInjector
from .metrics import Metrics
from .model import BatchError, BatchState
from .odata import ODataError, apply_select, parse_filter, parse_select
from .shared_key import AuthenticationError, ReceivedRequest, SharedKeyVerifier

log = logging.getLogger(__name__)

API_VERSION = "2025-06-01.21.0"
_API_VERSION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.\d+\.\d+)?$")
_OLDEST_API_DATE = "2016-07-01"
_NEWEST_API_DATE = API_VERSION.split(".")[0]

JSON_CONTENT_TYPE = "application/json; odata=minimalmetadata"
MAX_BODY_BYTES = 1024 * 1024  # Batch refuses bodies over 1 MB (RequestBodyTooLarge)
_DISCARD_LIMIT = 64 * 1024 * 1024  # larger bodies are not even read: the connection is closed
MAX_RESULTS = 1000
MAX_TASKS_PER_COLLECTION = 100
_STREAM_CHUNK = 256 * 1024

LOCAL_PREFIX = "/_local/"
ERROR_METADATA = "Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
_CONDITION_NOT_MET = "The condition specified using HTTP conditional header(s) is not met."
UNKNOWN_OPERATION = "Unknown"

# Node states (BatchNodeState, lower-case) → BatchNodeCounts property names.
_NODE_COUNT_FIELDS = {
    name.lower(): name
    for name in (
        "creating", "idle", "offline", "preempted", "rebooting", "reimaging", "running", "starting",
        "startTaskFailed", "leavingPool", "unknown", "unusable", "waitingForStartTask", "deallocated",
        "deallocating", "upgradingOS",
    )
}


# ------------------------------------------------------------------------------------------------ messages


@dataclass
class Request:
    method: str
    raw_path: str  # as received, percent-encoded, without query
    raw_query: str
    query: dict[str, str]  # lower-cased names, first value, decoded
    headers: Any  # http.client.HTTPMessage (case-insensitive get)
    body: bytes
    base_url: str  # scheme://host:port the client used
    params: dict[str, str] = field(default_factory=dict)  # decoded path parameters

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.strip() if isinstance(value, str) else None

    def json_body(self, what: str) -> Any:
        if not self.body.strip():
            raise BatchError(400, "InvalidRequestBody", f"The request body is empty; send the {what} as JSON.")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BatchError(
                400, "InvalidRequestBody", f"The request body is not valid JSON ({exc}); send the {what} as JSON.",
            ) from None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = None
    file: tuple[Path, int, int] | None = None  # (path, offset, length) streamed after the headers

    @property
    def body_length(self) -> int:
        return self.file[2] if self.file else len(self.body)


def json_response(status: int, payload: dict[str, Any], headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, list(headers), JSON_CONTENT_TYPE)


def error_response(request_base: str, error: BatchError, extra_headers: Iterable[tuple[str, str]] = ()) -> Response:
    payload = {"odata.metadata": f"{request_base}/$metadata#{ERROR_METADATA}", **error.to_body()}
    return json_response(error.status, payload, extra_headers)


def _query_error(name: str, value: str, reason: str, code: str = "InvalidQueryParameterValue") -> BatchError:
    return BatchError(
        400,
        code,
        f"Value for the query parameter {name} is invalid: {reason}",
        {"QueryParameterName": name, "QueryParameterValue": value[:200], "Reason": reason},
    )


# ------------------------------------------------------------------------------------------------ time helpers

_ISO_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$", re.IGNORECASE)


def parse_iso(value: str) -> datetime | None:
    m = _ISO_RE.match(value or "")
    if not m:
        return None
    fraction = (m.group(2) or ".0")[:7].ljust(2, "0")
    zone = (m.group(3) or "Z").upper().replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(m.group(1) + fraction + zone).astimezone(timezone.utc)
    except ValueError:
        return None


def http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise BatchError(
            400, "InvalidHeaderValue", f"The date header value {value[:64]!r} is not an RFC 1123 date.",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _sort_key(item: dict[str, Any]) -> list[str]:
    created = parse_iso(str(item.get("creationTime", "")))
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S.%f") if created else ""
    ident = (
        item.get("id") or item.get("name") or item.get("nodeId") or item.get("poolId")
        or item.get("nodeAgentSKUId") or ""
    )
    return [stamp, str(ident).lower()]


# ------------------------------------------------------------------------------------------------ routing

Handler = Callable[["BatchApi", Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    handler: Handler


_SEGMENT = r"([^/]+)"
_ROUTES: list[Route] = []


def route(method: str, template: str, operation: str) -> Callable[[Handler], Handler]:
    """Register a handler for METHOD on a path template; `{}` is one path segment, `{*}` the rest of the path."""
    regex = "^" + re.escape(template).replace(r"\{\*\}", "(.+)").replace(r"\{\}", _SEGMENT) + "$"
    pattern = re.compile(regex, re.IGNORECASE)

    def register(handler: Handler) -> Handler:
        _ROUTES.append(Route(method, pattern, operation, handler))
        return handler

    return register


def match_route(method: str, path: str) -> tuple[Route | None, list[str], list[str]]:
    """(route, raw path groups, methods allowed on this path)."""
    allowed: list[str] = []
    for candidate in _ROUTES:
        m = candidate.pattern.match(path)
        if not m:
            continue
        if candidate.method == method:
            return candidate, list(m.groups()), [candidate.method]
        allowed.append(candidate.method)
    return None, [], allowed


# ------------------------------------------------------------------------------------------------ the API


class BatchApi:
    """The Batch operations over one `BatchState`; each handler turns a Request into a Response."""

    def __init__(self, state: BatchState, config: ServiceConfig):
        self.state = state
        self.config = config

    # -- shared pieces ------------------------------------------------------------------------------------

    @staticmethod
    def metadata(request: Request, name: str) -> str:
        return f"{request.base_url}/$metadata#{name}"

    @staticmethod
    def entity_headers(entity: dict[str, Any], *, created: bool = False) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if entity.get("eTag"):
            headers.append(("ETag", str(entity["eTag"])))
        modified = parse_iso(str(entity.get("lastModified", "")))
        if modified:
            headers.append(("Last-Modified", http_date(modified)))
        if created and entity.get("url"):
            headers += [("DataServiceId", entity["url"]), ("Location", entity["url"])]
        return headers

    @staticmethod
    def check_conditions(request: Request, etag: str | None, modified: datetime | None, *, read: bool) -> Response | None:
        """If-Match / If-None-Match / If-(Un)Modified-Since: 412 ConditionNotMet, or 304 on reads."""
        if_match = request.header("If-Match")
        if if_match and if_match != "*" and if_match.strip('"') != (etag or "").strip('"'):
            raise BatchError(412, "ConditionNotMet", _CONDITION_NOT_MET)
        if_none_match = request.header("If-None-Match")
        if if_none_match and (if_none_match == "*" or if_none_match.strip('"') == (etag or "").strip('"')):
            if read:
                return Response(304)
            raise BatchError(412, "ConditionNotMet", _CONDITION_NOT_MET)
        modified_s = modified.replace(microsecond=0) if modified else None
        since = _parse_http_date(request.header("If-Modified-Since"))
        if since and modified_s and modified_s <= since:
            if read:
                return Response(304)
            raise BatchError(412, "ConditionNotMet", "The resource has not been modified since the given time.")
        unmodified = _parse_http_date(request.header("If-Unmodified-Since"))
        if unmodified and modified_s and modified_s > unmodified:
            raise BatchError(412, "ConditionNotMet", "The resource has been modified since the given time.")
        return None

    def entity(self, request: Request, entity: dict[str, Any], metadata_name: str) -> Response:
        not_modified = self.check_conditions(
            request, entity.get("eTag"), parse_iso(str(entity.get("lastModified", ""))), read=True
        )
        headers = self.entity_headers(entity)
        if not_modified:
            not_modified.headers = headers
            return not_modified
        body = dict(entity)
        select = request.query.get("$select")
        if select:
            body = apply_select(body, self._select_names(select))
        return json_response(200, {"odata.metadata": self.metadata(request, f"{metadata_name}/@Element"), **body}, headers)

    @staticmethod
    def _select_names(select: str) -> list[str]:
        try:
            return parse_select(select)
        except ODataError as exc:
            raise _query_error("$select", select, str(exc)) from None

    def listing(self, request: Request, items: list[dict[str, Any]], metadata_name: str) -> Response:
        """Filter, order, page and project a list; `odata.nextLink` is absolute and carries `$skiptoken`."""
        raw_max = request.query.get("maxresults")
        max_results = MAX_RESULTS
        if raw_max is not None:
            try:
                max_results = int(raw_max)
            except ValueError:
                raise _query_error("maxresults", raw_max, "must be a whole number from 1 to 1000") from None
            if not 1 <= max_results <= MAX_RESULTS:
                raise _query_error("maxresults", raw_max, "must be from 1 to 1000", "OutOfRangeQueryParameterValue")
        filter_text = request.query.get("$filter")
        if filter_text:
            try:
                predicate = parse_filter(filter_text)
            except ODataError as exc:
                raise _query_error("$filter", filter_text, str(exc)) from None
            items = [item for item in items if predicate(item)]
        select = request.query.get("$select")
        names = self._select_names(select) if select else None

        items = sorted(items, key=_sort_key)
        token = request.query.get("$skiptoken")
        if token:
            after = _decode_token(token)
            items = [item for item in items if _sort_key(item) > after]
        page, more = items[:max_results], len(items) > max_results
        payload: dict[str, Any] = {
            "odata.metadata": self.metadata(request, metadata_name),
            "value": [apply_select(item, names) if names else item for item in page],
        }
        if more:
            payload["odata.nextLink"] = _next_link(request, _encode_token(_sort_key(page[-1])))
        return json_response(200, payload)

    # -- applications -------------------------------------------------------------------------------------

    @route("GET", "/applications", "Applications_ListApplications")
    def list_applications(self, request: Request) -> Response:
        return self.listing(request, self.state.list_applications(), "applications")

    @route("GET", "/applications/{}", "Applications_GetApplication")
    def get_application(self, request: Request) -> Response:
        return self.entity(request, self.state.get_application(request.params["applicationId"]), "applications")

    # -- pools and nodes ----------------------------------------------------------------------------------

    @route("GET", "/pools", "Pools_ListPools")
    def list_pools(self, request: Request) -> Response:
        return self.listing(request, self.state.list_pools(), "pools")

    @route("GET", "/pools/{}", "Pools_GetPool")
    def get_pool(self, request: Request) -> Response:
        return self.entity(request, self.state.get_pool(request.params["poolId"]), "pools")

    @route("HEAD", "/pools/{}", "Pools_PoolExists")
    def pool_exists(self, request: Request) -> Response:
        try:
            pool = self.state.get_pool(request.params["poolId"])
        except BatchError as exc:
            if exc.status == 404:
                return Response(404)
            raise
        return Response(200, headers=self.entity_headers(pool))

    @route("GET", "/pools/{}/nodes", "Nodes_ListNodes")
    def list_nodes(self, request: Request) -> Response:
        return self.listing(request, self.state.list_nodes(request.params["poolId"]), "nodes")

    @route("GET", "/pools/{}/nodes/{}", "Nodes_GetNode")
    def get_node(self, request: Request) -> Response:
        node = self.state.get_node(request.params["poolId"], request.params["nodeId"])
        return self.entity(request, node, "nodes")

    @route("GET", "/nodecounts", "Pools_ListPoolNodeCounts")
    def list_node_counts(self, request: Request) -> Response:
        results = []
        for pool in self.state.list_pools():
            dedicated = dict.fromkeys(_NODE_COUNT_FIELDS.values(), 0)
            for node in self.state.list_nodes(pool["id"]):
                name = _NODE_COUNT_FIELDS.get(str(node.get("state", "unknown")).lower(), "unknown")
                dedicated[name] += 1
            dedicated["total"] = sum(dedicated.values())
            low_priority = dict.fromkeys([*_NODE_COUNT_FIELDS.values(), "total"], 0)
            results.append({"poolId": pool["id"], "dedicated": dedicated, "lowPriority": low_priority})
        return self.listing(request, results, "poolnodecounts")

    @route("GET", "/supportedimages", "Pools_ListSupportedImages")
    def list_supported_images(self, request: Request) -> Response:
        images: dict[str, dict[str, Any]] = {}
        for pool in self.state.list_pools():
            vm = pool.get("virtualMachineConfiguration") or {}
            sku = vm.get("nodeAgentSKUId")
            if sku and vm.get("imageReference"):
                key = json.dumps([sku, vm["imageReference"]], sort_keys=True)
                images[key] = {
                    "nodeAgentSKUId": sku,
                    "imageReference": vm["imageReference"],
                    "osType": "linux",
                    "verificationType": "verified",
                }
        return self.listing(request, list(images.values()), "supportedimages")

    @route("GET", "/pools/{}/nodes/{}/files", "Nodes_ListNodeFiles")
    def list_node_files(self, request: Request) -> Response:
        root, base = self._node_files_root(request)
        return self.listing(request, _list_files(root, base, _recursive(request)), "files")

    @route("GET", "/pools/{}/nodes/{}/files/{*}", "Nodes_GetNodeFile")
    def get_node_file(self, request: Request) -> Response:
        return self._node_file(request, send_body=True)

    @route("HEAD", "/pools/{}/nodes/{}/files/{*}", "Nodes_GetNodeFileProperties")
    def get_node_file_properties(self, request: Request) -> Response:
        return self._node_file(request, send_body=False)

    def _node_file(self, request: Request, *, send_body: bool) -> Response:
        root, base = self._node_files_root(request)
        return _file_response(request, root, request.params["filePath"], base, send_body=send_body)

    def _node_files_root(self, request: Request) -> tuple[Path, str]:
        node = self.state.get_node(request.params["poolId"], request.params["nodeId"])  # PoolNotFound / NodeNotFound
        return Path(self.state.node_dir(request.params["poolId"], request.params["nodeId"])), f"{node['url']}/files"

    # -- jobs ---------------------------------------------------------------------------------------------

    @route("GET", "/jobs", "Jobs_ListJobs")
    def list_jobs(self, request: Request) -> Response:
        return self.listing(request, self.state.list_jobs(), "jobs")

    @route("POST", "/jobs", "Jobs_CreateJob")
    def create_job(self, request: Request) -> Response:
        body = request.json_body("job")
        job = self.state.create_job(body)
        return Response(201, headers=self.entity_headers(job, created=True))

    @route("GET", "/jobs/{}", "Jobs_GetJob")
    def get_job(self, request: Request) -> Response:
        return self.entity(request, self.state.get_job(request.params["jobId"]), "jobs")

    @route("PATCH", "/jobs/{}", "Jobs_UpdateJob")
    def update_job(self, request: Request) -> Response:
        changes = request.json_body("job changes")
        if not isinstance(changes, dict):
            raise BatchError(400, "InvalidRequestBody", "The job changes must be a JSON object.")
        job = self.state.get_job(request.params["jobId"])
        self.check_conditions(request, job.get("eTag"), parse_iso(str(job.get("lastModified", ""))), read=False)
        job = self.state.update_job(request.params["jobId"], changes)
        return Response(200, headers=[*self.entity_headers(job), ("DataServiceId", job.get("url", ""))])

    @route("DELETE", "/jobs/{}", "Jobs_DeleteJob")
    def delete_job(self, request: Request) -> Response:
        job = self.state.get_job(request.params["jobId"])
        self.check_conditions(request, job.get("eTag"), parse_iso(str(job.get("lastModified", ""))), read=False)
        self.state.delete_job(request.params["jobId"])
        return Response(202, headers=[("DataServiceId", job.get("url", ""))])

    @route("POST", "/jobs/{}/terminate", "Jobs_TerminateJob")
    def terminate_job(self, request: Request) -> Response:
        reason = None
        if request.body.strip():
            options = request.json_body("terminate options")
            if not isinstance(options, dict):
                raise BatchError(400, "InvalidRequestBody", "The terminate options must be a JSON object.")
            reason = options.get("terminateReason")
            if reason is not None and not isinstance(reason, str):
                raise BatchError(
                    400, "InvalidPropertyValue", "terminateReason must be a string.", {"PropertyName": "terminateReason"}
                )
        job = self.state.get_job(request.params["jobId"])
        self.check_conditions(request, job.get("eTag"), parse_iso(str(job.get("lastModified", ""))), read=False)
        self.state.terminate_job(request.params["jobId"], reason)
        job = self.state.get_job(request.params["jobId"])
        return Response(202, headers=[*self.entity_headers(job), ("DataServiceId", job.get("url", ""))])

    @route("GET", "/jobs/{}/taskcounts", "Jobs_GetJobTaskCounts")
    def job_task_counts(self, request: Request) -> Response:
        counts = self.state.job_task_counts(request.params["jobId"])
        return json_response(200, {"odata.metadata": self.metadata(request, "taskcounts/@Element"), **counts})

    @route("GET", "/jobs/{}/jobpreparationandreleasetaskstatus", "Jobs_ListJobPreparationAndReleaseTaskStatus")
    def job_prep_release_status(self, request: Request) -> Response:
        items = self.state.job_prep_release_status(request.params["jobId"])
        return self.listing(request, items, "jobpreparationandreleasetaskstatuslist")

    # -- tasks --------------------------------------------------------------------------------------------

    @route("POST", "/jobs/{}/tasks", "Tasks_CreateTask")
    def create_task(self, request: Request) -> Response:
        task = self.state.add_task(request.params["jobId"], request.json_body("task"))
        return Response(201, headers=self.entity_headers(task, created=True))

    @route("GET", "/jobs/{}/tasks", "Tasks_ListTasks")
    def list_tasks(self, request: Request) -> Response:
        return self.listing(request, self.state.list_tasks(request.params["jobId"]), "tasks")

    @route("POST", "/jobs/{}/addtaskcollection", "Tasks_CreateTaskCollection")
    def add_task_collection(self, request: Request) -> Response:
        group = request.json_body("task collection")
        if not isinstance(group, dict):
            raise BatchError(400, "InvalidRequestBody", 'The task collection must be a JSON object {"value": [...]}.')
        if "value" not in group:
            raise BatchError(
                400, "MissingRequiredProperty", "The task collection has no 'value' list of tasks.",
                {"PropertyName": "value"},
            )
        tasks = group["value"]
        if not isinstance(tasks, list):
            raise BatchError(
                400, "InvalidPropertyValue", "The task collection's 'value' must be a list of tasks.",
                {"PropertyName": "value"},
            )
        if len(tasks) > MAX_TASKS_PER_COLLECTION:
            raise BatchError(
                413,
                "RequestBodyTooLarge",
                f"The collection has {len(tasks)} tasks; at most {MAX_TASKS_PER_COLLECTION} may be added per request.",
            )
        results = self.state.add_task_collection(request.params["jobId"], tasks)
        return json_response(200, {"odata.metadata": self.metadata(request, "taskaddresult"), "value": results})

    @route("GET", "/jobs/{}/tasks/{}", "Tasks_GetTask")
    def get_task(self, request: Request) -> Response:
        return self.entity(request, self.state.get_task(request.params["jobId"], request.params["taskId"]), "tasks")

    @route("DELETE", "/jobs/{}/tasks/{}", "Tasks_DeleteTask")
    def delete_task(self, request: Request) -> Response:
        task = self.state.get_task(request.params["jobId"], request.params["taskId"])
        self.check_conditions(request, task.get("eTag"), parse_iso(str(task.get("lastModified", ""))), read=False)
        self.state.delete_task(request.params["jobId"], request.params["taskId"])
        return Response(200)

    @route("POST", "/jobs/{}/tasks/{}/terminate", "Tasks_TerminateTask")
    def terminate_task(self, request: Request) -> Response:
        job_id, task_id = request.params["jobId"], request.params["taskId"]
        task = self.state.get_task(job_id, task_id)
        self.check_conditions(request, task.get("eTag"), parse_iso(str(task.get("lastModified", ""))), read=False)
        self.state.terminate_task(job_id, task_id)
        task = self.state.get_task(job_id, task_id)
        return Response(204, headers=[*self.entity_headers(task), ("DataServiceId", task.get("url", ""))])

    @route("GET", "/jobs/{}/tasks/{}/files", "Tasks_ListTaskFiles")
    def list_task_files(self, request: Request) -> Response:
        root, base = self._task_files_root(request)
        return self.listing(request, _list_files(root, base, _recursive(request)), "files")

    @route("GET", "/jobs/{}/tasks/{}/files/{*}", "Tasks_GetTaskFile")
    def get_task_file(self, request: Request) -> Response:
        root, base = self._task_files_root(request)
        return _file_response(request, root, request.params["filePath"], base, send_body=True)

    @route("HEAD", "/jobs/{}/tasks/{}/files/{*}", "Tasks_GetTaskFileProperties")
    def get_task_file_properties(self, request: Request) -> Response:
        root, base = self._task_files_root(request)
        return _file_response(request, root, request.params["filePath"], base, send_body=False)

    def _task_files_root(self, request: Request) -> tuple[Path, str]:
        job_id, task_id = request.params["jobId"], request.params["taskId"]
        task = self.state.get_task(job_id, task_id)  # JobNotFound / TaskNotFound first
        root = self.state.task_dir(job_id, task_id)
        if root is None or not Path(root).is_dir():
            raise BatchError(
                409,
                "TaskFilesUnavailable",
                f"The task is {task.get('state', 'not started')} and has no files on a node yet.",
            )
        return Path(root), f"{task['url']}/files"


# Path parameter names per route template segment position, so handlers read request.params by spec name.
_PARAM_NAMES: dict[str, list[str]] = {
    "Applications_GetApplication": ["applicationId"],
    "Pools_GetPool": ["poolId"],
    "Pools_PoolExists": ["poolId"],
    "Nodes_ListNodes": ["poolId"],
    "Nodes_GetNode": ["poolId", "nodeId"],
    "Nodes_ListNodeFiles": ["poolId", "nodeId"],
    "Nodes_GetNodeFile": ["poolId", "nodeId", "filePath"],
    "Nodes_GetNodeFileProperties": ["poolId", "nodeId", "filePath"],
    "Jobs_GetJob": ["jobId"],
    "Jobs_UpdateJob": ["jobId"],
    "Jobs_DeleteJob": ["jobId"],
    "Jobs_TerminateJob": ["jobId"],
    "Jobs_GetJobTaskCounts": ["jobId"],
    "Jobs_ListJobPreparationAndReleaseTaskStatus": ["jobId"],
    "Tasks_CreateTask": ["jobId"],
    "Tasks_ListTasks": ["jobId"],
    "Tasks_CreateTaskCollection": ["jobId"],
    "Tasks_GetTask": ["jobId", "taskId"],
    "Tasks_DeleteTask": ["jobId", "taskId"],
    "Tasks_TerminateTask": ["jobId", "taskId"],
    "Tasks_ListTaskFiles": ["jobId", "taskId"],
    "Tasks_GetTaskFile": ["jobId", "taskId", "filePath"],
    "Tasks_GetTaskFileProperties": ["jobId", "taskId", "filePath"],
}


# ------------------------------------------------------------------------------------------------ paging


def _encode_token(key: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode("utf-8")).decode("ascii").rstrip("=")


def _decode_token(token: str) -> list[str]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise _query_error("$skiptoken", token, "not a continuation token from odata.nextLink; restart the listing")
    return key


def _next_link(request: Request, token: str) -> str:
    params = [(name, value) for name, value in parse_qs(request.raw_query, keep_blank_values=False).items()]
    kept = [(name, values[0]) for name, values in params if name.lower() != "$skiptoken"]
    kept.append(("$skiptoken", token))
    return f"{request.base_url}{request.raw_path}?{urlencode(kept, quote_via=quote)}"


# ------------------------------------------------------------------------------------------------ files


def _recursive(request: Request) -> bool:
    raw = request.query.get("recursive")
    if raw is None or raw == "":
        return False
    if raw.lower() not in ("true", "false"):
        raise _query_error("recursive", raw, "must be true or false")
    return raw.lower() == "true"


def _file_properties(info: os.stat_result) -> dict[str, Any]:
    created = datetime.fromtimestamp(info.st_ctime, timezone.utc)
    modified = datetime.fromtimestamp(info.st_mtime, timezone.utc)
    properties: dict[str, Any] = {
        "creationTime": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "lastModified": modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "contentLength": str(0 if stat.S_ISDIR(info.st_mode) else info.st_size),
        "fileMode": f"0{info.st_mode:o}",
    }
    if not stat.S_ISDIR(info.st_mode):
        properties["contentType"] = "application/octet-stream"
    return properties


def _list_files(root: Path, base_url: str, recursive: bool) -> list[dict[str, Any]]:
    """BatchNodeFile entries under root: its top level, or everything below it when recursive."""
    entries: list[dict[str, Any]] = []
    root = Path(root)
    if not root.is_dir():
        return entries
    if recursive:
        walker: Iterable[Path] = (
            Path(dirpath) / name
            for dirpath, dirnames, filenames in os.walk(root)
            for name in sorted(dirnames) + sorted(filenames)
        )
    else:
        walker = sorted(root.iterdir())
    real_root = root.resolve()
    for path in walker:
        try:
            real = path.resolve(strict=True)
            info = real.stat()
        except (OSError, RuntimeError):
            continue  # vanished while listing, or a dangling / looping symlink
        if real != real_root and real_root not in real.parents:
            continue  # a symlink out of the directory: neither listed nor served
        name = path.relative_to(root).as_posix()
        entries.append(
            {
                "name": name,
                "url": f"{base_url}/{quote(name, safe='/')}",
                "isDirectory": stat.S_ISDIR(info.st_mode),
                "properties": _file_properties(info),
            }
        )
    return entries


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(value: str, size: int, header: str) -> tuple[int, int]:
    """(offset, length) for `bytes=a-b`, `bytes=a-` or `bytes=-n`; 400 when malformed, 416 when unsatisfiable."""
    m = _RANGE_RE.match(value.strip().replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        raise BatchError(
            400, "InvalidHeaderValue", f"The {header} header {value[:64]!r} is not of the form bytes=START-END.",
            {"HeaderName": header, "HeaderValue": value[:64]},
        )
    if not m.group(1):  # suffix: the last n bytes
        length = min(int(m.group(2)), size)
        return size - length, length
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if end < start:
        raise BatchError(
            400, "InvalidHeaderValue", f"The {header} header {value[:64]!r} ends before it starts.",
            {"HeaderName": header, "HeaderValue": value[:64]},
        )
    if start >= size:
        raise BatchError(416, "InvalidRange", f"The range starts at byte {start} but the file has {size} bytes.")
    return start, min(end, size - 1) - start + 1


def _resolve_file(root: Path, file_path: str) -> Path:
    relative = unquote(file_path).replace("\\", "/").strip("/")
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    not_found = BatchError(
        404, "FileNotFound", f"The file {relative[:256]!r} does not exist.", {"FilePath": relative[:256]}
    )
    if not parts or ".." in parts:
        raise not_found
    root = Path(root).resolve()
    target = root.joinpath(*parts)
    try:
        resolved = target.resolve(strict=True)
    except (OSError, RuntimeError):
        raise not_found from None
    if resolved != root and root not in resolved.parents:
        raise not_found  # a symlink leading out of the directory
    return resolved


def _file_response(request: Request, root: Path, file_path: str, base_url: str, *, send_body: bool) -> Response:
    path = _resolve_file(root, file_path)
    info = path.stat()
    is_dir = stat.S_ISDIR(info.st_mode)
    modified = datetime.fromtimestamp(info.st_mtime, timezone.utc)
    name = path.relative_to(Path(root).resolve()).as_posix()
    etag = f"0x{info.st_mtime_ns:X}"
    headers = [
        ("ETag", etag),
        ("Last-Modified", http_date(modified)),
        ("ocp-creation-time", http_date(datetime.fromtimestamp(info.st_ctime, timezone.utc))),
        ("ocp-batch-file-isdirectory", "true" if is_dir else "false"),
        ("ocp-batch-file-url", f"{base_url}/{quote(name, safe='/')}"),
        ("ocp-batch-file-mode", f"0{info.st_mode:o}"),
    ]
    not_modified = BatchApi.check_conditions(request, etag, modified, read=True)
    if not_modified:
        not_modified.headers = headers
        return not_modified
    size = 0 if is_dir else info.st_size
    if not send_body:
        # HEAD: Content-Length describes the file, no body follows.
        return Response(200, headers=[*headers, ("Content-Length", str(size))], content_type="application/octet-stream")
    if is_dir:
        raise BatchError(
            400, "InvalidUri", f"{name!r} is a directory; list its files with GET .../files?recursive=true instead.",
        )
    status, offset, length = 200, 0, size
    ocp_range, http_range = request.header("ocp-range"), request.header("Range")
    if ocp_range or http_range:
        header = "ocp-range" if ocp_range else "Range"
        offset, length = _byte_range(ocp_range or http_range or "", size, header)
        headers.append(("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}" if length else f"bytes */{size}"))
        if not ocp_range:
            status = 206  # plain HTTP semantics for plain Range
    return Response(status, headers=headers, content_type="application/octet-stream", file=(path, offset, length))


# ------------------------------------------------------------------------------------------------ HTTP server


def _base_url(host_header: str | None, config: ServiceConfig) -> str:
    """Where links point: the host the client used when it is a loopback name, else the configured URL."""
    host = (host_header or "").strip()
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if host and name in LOOPBACK_HOSTS:
        scheme = "https" if config.account_url.startswith("https:") else "http"
        return f"{scheme}://{host}"
    return (config.account_url or f"http://{config.host}:{config.port}").rstrip("/")


def _api_version_error(value: str | None) -> BatchError | None:
    if value is None or value == "":
        return BatchError(
            400,
            "MissingRequiredQueryParameter",
            f"The query parameter api-version is required, e.g. ?api-version={API_VERSION}.",
            {"QueryParameterName": "api-version"},
        )
    m = _API_VERSION_RE.match(value)
    if not m or not _OLDEST_API_DATE <= m.group(1) <= _NEWEST_API_DATE:
        return _query_error(
            "api-version", value, f"unsupported version; the local service speaks Batch API versions up to {API_VERSION}"
        )
    return None


class BatchRequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # seconds a kept-alive connection may sit idle before its thread lets it go
    server: "BatchHTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — base class signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- request ------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is too large to read (the connection is then closed)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > _DISCARD_LIMIT:
                    self.close_connection = True
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise BatchError(
                400, "InvalidHeaderValue", "The Content-Length header is not a whole number.",
                {"HeaderName": "Content-Length"},
            ) from None
        if length > _DISCARD_LIMIT:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        body_error: BatchError | None = None
        try:
            body = self._read_body()
        except BatchError as exc:
            body, body_error = b"", exc
        except (ValueError, OSError):  # a broken chunked body or a dropped connection
            body, self.close_connection = b"", True
            body_error = BatchError(400, "InvalidRequestBody", "The request body could not be read.")
        if body is None:
            body_error = BatchError(
                413, "RequestBodyTooLarge",
                f"The request body is larger than {MAX_BODY_BYTES} bytes; send fewer tasks per request.",
            )
        if raw_path.lower().startswith(LOCAL_PREFIX):
            self._send(self._local(raw_path.lower()), None, b"")
            return
        server = self.server
        path = raw_path.rstrip("/") or "/"
        found, groups, allowed = match_route(self.command, path)
        operation = found.operation if found else UNKNOWN_OPERATION
        base_url = _base_url(self.headers.get("Host"), server.config)
        request = Request(
            self.command,
            raw_path,
            raw_query,
            {k.lower(): v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()},
            self.headers,
            body or b"",
            base_url,
        )
        response = self._respond(request, found, groups, allowed, body_error)
        self._send(response, operation, request.body)

    def _respond(
        self, request: Request, found: Route | None, groups: list[str], allowed: list[str], body_error: BatchError | None
    ) -> Response:
        server = self.server
        fault = server.faults.pick()
        if fault:
            return _fault_response(request.base_url, fault)
        try:
            try:
                server.verifier.verify(
                    ReceivedRequest(request.method, request.raw_path, request.raw_query, tuple(request.headers.items()))
                )
            except AuthenticationError as exc:
                raise BatchError(
                    exc.status,
                    "AuthenticationFailed",
                    "Server failed to authenticate the request. Make sure the value of the Authorization header is "
                    "formed correctly including the signature.",
                    {"AuthenticationErrorDetail": exc.detail},
                ) from None
            api_error = _api_version_error(request.query.get("api-version"))
            if api_error:
                raise api_error
            if body_error:
                raise body_error
            if len(request.body) > MAX_BODY_BYTES:
                raise BatchError(
                    413, "RequestBodyTooLarge",
                    f"The request body is larger than {MAX_BODY_BYTES} bytes; send fewer tasks per request.",
                )
            if found is None:
                if allowed:
                    raise BatchError(
                        405,
                        "UnsupportedHttpVerb",
                        f"The local Batch service does not support {request.method} on {request.raw_path}; "
                        f"it supports {', '.join(sorted(set(allowed)))}.",
                    )
                raise BatchError(
                    400, "InvalidUri",
                    f"{request.method} {request.raw_path} does not match any operation of the local Batch service.",
                )
            names = _PARAM_NAMES.get(found.operation, [])
            # IDs are one decoded segment; filePath stays raw (it may span segments) and is decoded when resolved.
            request.params = {
                name: value if name == "filePath" else unquote(value) for name, value in zip(names, groups)
            }
            return found.handler(server.api, request)
        except BatchError as exc:
            return error_response(request.base_url, exc)
        except Exception:  # a bug in the service: answer like Batch does, keep the traceback in the log
            log.exception("internal error handling %s %s", request.method, request.raw_path)
            return error_response(
                request.base_url,
                BatchError(500, "InternalError", "The local Batch service hit an internal error; see its log."),
            )

    def _local(self, path: str) -> Response:
        if path.rstrip("/") == "/_local/metrics":
            return Response(200, json.dumps(self.server.metrics.snapshot()).encode(), content_type="application/json")
        if path.rstrip("/") == "/_local/health":
            return Response(200, b'{"status":"ok"}', content_type="application/json")
        return Response(404, b'{"error":"unknown /_local endpoint; try /_local/metrics or /_local/health"}',
                        content_type="application/json")

    # -- response -----------------------------------------------------------------------------------------

    def _send(self, response: Response, operation: str | None, request_body: bytes) -> None:
        head_only = self.command == "HEAD"
        if operation is not None:
            # Recorded before anything is written, so a client that reads the metrics right after this response
            # already sees it counted. Counts the planned body; a client that hangs up early is not subtracted.
            planned = 0 if head_only else response.body_length
            self.server.metrics.record_batch(operation, response.status, len(request_body), planned)
        try:
            self.send_response(response.status)
            self.send_header("request-id", str(uuid.uuid4()))
            self.send_header("DataServiceVersion", "3.0")
            client_request_id = self.headers.get("client-request-id") or self.headers.get("x-ms-client-request-id")
            if client_request_id and (self.headers.get("return-client-request-id") or "").lower() == "true":
                self.send_header("client-request-id", client_request_id)
            explicit_length = any(name.lower() == "content-length" for name, _ in response.headers)
            for name, value in response.headers:
                self.send_header(name, value)
            if response.content_type and (response.body or response.file or head_only):
                self.send_header("Content-Type", response.content_type)
            if not explicit_length:
                self.send_header("Content-Length", "0" if head_only and not response.file else str(response.body_length))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head_only:
                if response.file:
                    self._stream_file(*response.file)
                else:
                    self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream_file(self, path: Path, offset: int, length: int) -> int:
        sent = 0
        with open(path, "rb") as handle:
            handle.seek(offset)
            while sent < length:
                chunk = handle.read(min(_STREAM_CHUNK, length - sent))
                if not chunk:
                    break  # the file shrank; the client sees a short body
                self.wfile.write(chunk)
                sent += len(chunk)
        if sent < length:
            self.close_connection = True
        return sent


def _fault_response(base_url: str, fault: Fault) -> Response:
    headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
    return error_response(base_url, BatchError(fault.status, fault.code, fault.message), headers)


class BatchHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        state: BatchState,
        config: ServiceConfig,
        metrics: Metrics,
        faults: FaultInjector,
    ) -> None:
        self.state = state
        self.config = config
        self.metrics = metrics
        self.faults = faults
        self.verifier = SharedKeyVerifier(config.account_name, config.account_key)
        self.api = BatchApi(state, config)
        super().__init__(address, BatchRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # the client went away; nothing to answer
        log.exception("unhandled error serving %s", client_address)


class _BatchHTTPServerV6(BatchHTTPServer):
    address_family = socket.AF_INET6


def make_server(
    state: BatchState, config: ServiceConfig, metrics: Metrics, faults: FaultInjector
) -> http.server.ThreadingHTTPServer:
    """The Batch API server bound to (config.host, config.port) — loopback only; call serve_forever() to run."""
    host = config.host
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"host {host!r}: the local Batch service listens on loopback only; use 127.0.0.1")
    address = "127.0.0.1" if host == "localhost" else host
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"host {host!r} is not a loopback address; use 127.0.0.1")
    server_class = _BatchHTTPServerV6 if ":" in address else BatchHTTPServer
    return server_class((address, config.port), state, config, metrics, faults)
