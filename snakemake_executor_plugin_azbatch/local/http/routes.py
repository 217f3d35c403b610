"""The one route table of the local Batch service: method, path template, the spec's operation id, handler name.

Templates name their path parameters as the spec does: `{jobId}` is one path segment (percent-decoded);
`{filePath:path}` is the rest of the path, kept raw (it may span segments; the file layer decodes it).
Adding a REST operation = one line here, a `BatchApi` method of that name, and the model method it calls. The
service's own `/_local/` endpoints are rows here too, handled by `LocalEndpoints` (no auth, not counted). A request's
route is matched once (`match_route`), before the outage switch and the dispatcher look at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

ROUTES: list[tuple[str, str, str, str]] = [
    # method, template, operation id (metrics, spec), BatchApi handler
    ("GET", "/applications", "Applications_ListApplications", "list_applications"),
    ("GET", "/applications/{applicationId}", "Applications_GetApplication", "get_application"),
    ("GET", "/pools", "Pools_ListPools", "list_pools"),
    ("GET", "/pools/{poolId}", "Pools_GetPool", "get_pool"),
    ("HEAD", "/pools/{poolId}", "Pools_PoolExists", "pool_exists"),
    ("POST", "/pools", "Pools_CreatePool", "create_pool"),
    ("DELETE", "/pools/{poolId}", "Pools_DeletePool", "delete_pool"),
    ("POST", "/pools/{poolId}/resize", "Pools_ResizePool", "resize_pool"),
    ("POST", "/pools/{poolId}/stopresize", "Pools_StopPoolResize", "stop_pool_resize"),
    ("POST", "/pools/{poolId}/enableautoscale", "Pools_EnablePoolAutoScale", "enable_pool_autoscale"),
    ("POST", "/pools/{poolId}/disableautoscale", "Pools_DisablePoolAutoScale", "disable_pool_autoscale"),
    ("POST", "/pools/{poolId}/evaluateautoscale", "Pools_EvaluatePoolAutoScale", "evaluate_pool_autoscale"),
    ("GET", "/nodecounts", "Pools_ListPoolNodeCounts", "list_node_counts"),
    ("GET", "/supportedimages", "Pools_ListSupportedImages", "list_supported_images"),
    ("GET", "/pools/{poolId}/nodes", "Nodes_ListNodes", "list_nodes"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}", "Nodes_GetNode", "get_node"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/files", "Nodes_ListNodeFiles", "list_node_files"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/files/{filePath:path}", "Nodes_GetNodeFile", "get_node_file"),
    ("HEAD", "/pools/{poolId}/nodes/{nodeId}/files/{filePath:path}", "Nodes_GetNodeFileProperties",
     "get_node_file_properties"),
    ("GET", "/jobs", "Jobs_ListJobs", "list_jobs"),
    ("POST", "/jobs", "Jobs_CreateJob", "create_job"),
    ("GET", "/jobs/{jobId}", "Jobs_GetJob", "get_job"),
    ("PATCH", "/jobs/{jobId}", "Jobs_UpdateJob", "update_job"),
    ("DELETE", "/jobs/{jobId}", "Jobs_DeleteJob", "delete_job"),
    ("POST", "/jobs/{jobId}/terminate", "Jobs_TerminateJob", "terminate_job"),
    ("GET", "/jobs/{jobId}/taskcounts", "Jobs_GetJobTaskCounts", "job_task_counts"),
    ("GET", "/jobs/{jobId}/jobpreparationandreleasetaskstatus", "Jobs_ListJobPreparationAndReleaseTaskStatus",
     "job_prep_release_status"),
    ("POST", "/jobs/{jobId}/tasks", "Tasks_CreateTask", "create_task"),
    ("GET", "/jobs/{jobId}/tasks", "Tasks_ListTasks", "list_tasks"),
    ("POST", "/jobs/{jobId}/addtaskcollection", "Tasks_CreateTaskCollection", "add_task_collection"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}", "Tasks_GetTask", "get_task"),
    ("DELETE", "/jobs/{jobId}/tasks/{taskId}", "Tasks_DeleteTask", "delete_task"),
    ("POST", "/jobs/{jobId}/tasks/{taskId}/terminate", "Tasks_TerminateTask", "terminate_task"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/files", "Tasks_ListTaskFiles", "list_task_files"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/files/{filePath:path}", "Tasks_GetTaskFile", "get_task_file"),
    ("HEAD", "/jobs/{jobId}/tasks/{taskId}/files/{filePath:path}", "Tasks_GetTaskFileProperties",
     "get_task_file_properties"),
    # The service's own endpoints (loopback, no auth, not counted, never faulted or dropped): LocalEndpoints.
    ("GET", "/_local/metrics", "Local_GetMetrics", "get_metrics"),
    ("GET", "/_local/health", "Local_GetHealth", "get_health"),
    ("GET", "/_local/outage", "Local_GetOutage", "get_outage"),
    ("POST", "/_local/outage", "Local_SetOutage", "set_outage"),
    ("POST", "/_local/pools/{poolId}/nodes/{nodeId}/state", "Local_SetNodeState", "set_node_state"),
]
LOCAL_PREFIX = "/_local/"
BATCH_ROUTES = [row for row in ROUTES if not row[1].startswith(LOCAL_PREFIX)]  # the Batch API's own operations

_PARAM = re.compile(r"\{(\w+)(:path)?\}")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    operation: str
    handler: str
    pattern: re.Pattern[str]
    raw_params: frozenset[str]  # parameters kept percent-encoded (`:path`)


def compile_route(method: str, template: str, operation: str, handler: str) -> Route:
    regex, raw, pos = "^", set(), 0
    for m in _PARAM.finditer(template):
        regex += re.escape(template[pos:m.start()])
        regex += f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)"
        if m.group(2):
            raw.add(m.group(1))
        pos = m.end()
    regex += re.escape(template[pos:]) + "$"
    return Route(method, template, operation, handler, re.compile(regex, re.IGNORECASE), frozenset(raw))


COMPILED = [compile_route(*row) for row in ROUTES]
UNKNOWN_OPERATION = "Unknown"


@dataclass(frozen=True)
class RouteMatch:
    route: Route | None  # None: no operation has this method and path
    params: dict[str, str]  # path parameters by name
    allowed: list[str]  # methods some route serves on this path
    local: bool  # a /_local/ path: the service's own endpoints, answered without auth and not counted

    @property
    def operation(self) -> str:
        return self.route.operation if self.route else UNKNOWN_OPERATION


def match_route(method: str, path: str) -> RouteMatch:
    """The one lookup of a request's route (`path` without query; a trailing slash does not count)."""
    path = path.rstrip("/") or "/"
    local = (path + "/").lower().startswith(LOCAL_PREFIX)
    allowed: list[str] = []
    for route in COMPILED:
        m = route.pattern.match(path)
        if not m:
            continue
        if route.method == method:
            params = {k: v if k in route.raw_params else unquote(v) for k, v in m.groupdict().items()}
            return RouteMatch(route, params, [route.method], local)
        allowed.append(route.method)
    return RouteMatch(None, {}, allowed, local)
