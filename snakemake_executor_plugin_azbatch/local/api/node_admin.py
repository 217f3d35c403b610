"""Node states no Batch API call sets, for rehearsing what Batch does to nodes on its own (loopback, no auth, like
`/_local/metrics`): `POST /_local/pools/{poolId}/nodes/{nodeId}/state` with `{"state": "unusable"}` (optionally
`"errors": [{"code": ..., "message": ...}]`, Batch's BatchNodeError shape) or `{"state": "idle"}` to recover it.

Batch documents an `unusable` node as one tasks cannot be scheduled to (it still costs money); without `errors` Batch
cannot reach the VM and keeps trying to recover it, with errors (disk full, application package or container download
failed) it does not recover it by itself. The answer is the node as Nodes_GetNode would show it.
"""

from __future__ import annotations

import json
from typing import Any

from ..model.errors import BatchError
from .http_messages import Response, error_body, json_response

STATES = ("unusable", "idle")


def _problem(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode(), content_type="application/json")


def _errors(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(e, dict) and isinstance(e.get("code"), str) for e in value):
        raise ValueError('"errors" must be a list of {"code": ..., "message": ...} objects (BatchNodeError)')
    return [{k: v for k, v in e.items() if k in ("code", "message", "errorDetails")} for e in value]


def node_state_response(state: Any, pool_id: str, node_id: str, body: bytes) -> Response:
    """The answer to `POST /_local/pools/{poolId}/nodes/{nodeId}/state` (a row of the route table)."""
    try:
        payload = json.loads(body or b"{}")
        wanted = str(payload.get("state", "")).lower()
        if wanted not in STATES:
            raise ValueError(f'"state" must be one of {", ".join(STATES)}')
        errors = _errors(payload.get("errors"))
    except (ValueError, AttributeError, RecursionError) as err:
        return _problem(400, f"bad node state request: {err}")
    try:
        node = state.set_node_state(pool_id, node_id, wanted, errors)
    except BatchError as err:
        return json_response(err.status, error_body(err))
    return json_response(200, node)
