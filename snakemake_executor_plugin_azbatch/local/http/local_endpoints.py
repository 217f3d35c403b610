"""The service's own endpoints under `/_local/` (loopback, no auth, not counted, never faulted nor dropped in an
outage): metrics, health, the outage switch and node states. Their routes are rows of `routes.ROUTES` like every
Batch operation's; `LocalEndpoints` holds their handlers, by the names the table gives."""

from __future__ import annotations

import json
from typing import Any

from ..api.http_messages import Request, Response
from ..api.node_admin import node_state_response
from ..model.batch_state import BatchState
from .metrics import Metrics
from .outage_switch import OutageSwitch, change_outage, outage_state

_UNKNOWN = b'{"error":"unknown /_local endpoint; try /_local/metrics or /_local/health"}'


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode(), content_type="application/json")


def unknown_local_endpoint() -> Response:
    return Response(404, _UNKNOWN, content_type="application/json")


def local_method_refused(method: str, allowed: list[str]) -> Response:
    return _json(405, {"error": f"{method} is not served here; use {' or '.join(sorted(set(allowed)))}"})


class LocalEndpoints:
    """Handlers of the `/_local/` rows of the route table."""

    def __init__(self, state: BatchState, metrics: Metrics, outage: OutageSwitch | None) -> None:
        self.state, self.metrics, self.outage = state, metrics, outage

    def get_metrics(self, request: Request) -> Response:
        return _json(200, self.metrics.snapshot())

    def get_health(self, request: Request) -> Response:
        return Response(200, b'{"status":"ok"}', content_type="application/json")

    def get_outage(self, request: Request) -> Response:
        return outage_state(self.outage) if self.outage is not None else unknown_local_endpoint()

    def set_outage(self, request: Request) -> Response:
        return change_outage(self.outage, request.body) if self.outage is not None else unknown_local_endpoint()

    def set_node_state(self, request: Request) -> Response:
        return node_state_response(self.state, request.params["poolId"], request.params["nodeId"], request.body)
