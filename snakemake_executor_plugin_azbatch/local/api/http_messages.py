"""HTTP messages of the local Batch service: `Request`, `Response`, JSON bodies and Batch error bodies.

Only this layer turns a `BatchError` into the wire's error body (`error_body`, `error_response`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.errors import BatchError, InvalidQueryParameterValue, InvalidRequestBody

JSON_CONTENT_TYPE = "application/json; odata=minimalmetadata"
# Deepest nesting of arrays and objects a request body may have: the default MaxDepth of .NET's JSON readers
# (System.Text.Json, Newtonsoft.Json), which Batch's front end is built on; Batch documents no limit of its own.
MAX_JSON_DEPTH = 64
ERROR_METADATA = "Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"


@dataclass
class Request:
    method: str
    raw_path: str  # as received, percent-encoded, without query
    raw_query: str
    query: dict[str, str]  # lower-cased names, first value, decoded
    headers: Any  # http.client.HTTPMessage or any mapping with a case-insensitive get
    body: bytes
    base_url: str  # scheme://host:port the client used
    params: dict[str, str] = field(default_factory=dict)  # path parameters by spec name

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.strip() if isinstance(value, str) else None

    def json_body(self, what: str) -> dict[str, Any]:
        if not self.body.strip():
            raise InvalidRequestBody(f"The request body is empty; send the {what} as JSON.")
        too_deep = InvalidRequestBody(
            f"The request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels; send the {what} as JSON."
        )
        try:
            value = json.loads(self.body, parse_constant=_no_constant, parse_float=_finite_float)
        except RecursionError:
            raise too_deep from None
        except ValueError as exc:  # not UTF-8, not JSON, NaN / Infinity, an integer of thousands of digits
            raise InvalidRequestBody(f"The request body is not valid JSON ({exc}); send the {what} as JSON.") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise too_deep
        if not isinstance(value, dict):  # every Batch request body is an object
            raise InvalidRequestBody(f"The request body is a JSON {type(value).__name__}; send the {what} as a JSON object.")
        return value

    def metadata(self, name: str) -> str:
        return f"{self.base_url}/$metadata#{name}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = None
    file: tuple[Path, int, int] | None = None  # (path, offset, length) streamed after the headers
    operation: str | None = None  # the spec's operation id, set by dispatch (for metrics)
    injected_fault: bool = False  # answered by fault injection, not executed (metrics count these apart)

    @property
    def body_length(self) -> int:
        return self.file[2] if self.file else len(self.body)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


def json_response(status: int, payload: dict[str, Any], headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, list(headers), JSON_CONTENT_TYPE)


def error_body(error: BatchError) -> dict[str, Any]:
    """The BatchError JSON shape (without odata.metadata)."""
    body: dict[str, Any] = {"code": error.code, "message": {"lang": "en-US", "value": error.message}}
    if error.values:
        body["values"] = [{"key": k, "value": v} for k, v in error.values.items()]
    return body


def error_response(base_url: str, error: BatchError, extra_headers: Iterable[tuple[str, str]] = ()) -> Response:
    payload = {"odata.metadata": f"{base_url}/$metadata#{ERROR_METADATA}", **error_body(error)}
    return json_response(error.status, payload, extra_headers)


def query_error(name: str, value: str, reason: str, error: type[BatchError] = InvalidQueryParameterValue) -> BatchError:
    return error(
        f"Value for the query parameter {name} is invalid: {reason}",
        {"QueryParameterName": name, "QueryParameterValue": value[:200], "Reason": reason},
    )
