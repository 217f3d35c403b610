"""Node states no Batch API call sets, for rehearsing what Batch does to nodes on its own (loopback, no auth, like
`/_local/metrics`): `POST /_local/pools/{poolId}/nodes/{nodeId}/state` with `{"state": "unusable"}` (optionally
`"errors": [{"code": ..., "message": ...}]`, Batch's BatchNodeError shape) or `{"state": "idle"}` to recover it.

Batch documents an `unusable` node as one tasks cannot be scheduled to (it still costs money); without `errors` Batch
cannot reach the VM and keeps trying to recover it, with errors (disk full, application package or container download
failed) it does not recover it by itself. The answer is the node as Nodes_GetNode would show it.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from ..model.errors import BatchError
from .http_messages import Response, error_body, json_response

PATH = re.compile(r"^/_local/pools/([^/]+)/nodes/([^/]+)/state/?$", re.IGNORECASE)
STATES = ("unusable", "idle")


def _problem(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode(), content_type="application/json")


def _errors(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(e, dict) and isinstance(e.get("code"), str) for e in value):
        raise ValueError('"errors" must be a list of {"code": ..., "message": ...} objects (BatchNodeError)')
    return [{k: v for k, v in e.items() if k in ("code", "message", "errorDetails")} for e in value]


def node_state_response(method: str, path: str, body: bytes, state: Any) -> Response | None:
    """The answer for a /_local/ node-state request, or None when `path` is not one (other /_local/ endpoints)."""
    match = PATH.match(path.partition("?")[0])
    if match is None:
        return None
    if method != "POST":
        return _problem(405, 'use POST with {"state": "unusable"} or {"state": "idle"}')
    try:
        payload = json.loads(body or b"{}")
        wanted = str(payload.get("state", "")).lower()
        if wanted not in STATES:
            raise ValueError(f'"state" must be one of {", ".join(STATES)}')
        errors = _errors(payload.get("errors"))
    except (ValueError, AttributeError, RecursionError) as err:
        return _problem(400, f"bad node state request: {err}")
    try:
        node = state.set_node_state(unquote(match.group(1)), unquote(match.group(2)), wanted, errors)
    except BatchError as err:
        return json_response(err.status, error_body(err))
    return json_response(200, node)
