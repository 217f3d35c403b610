"""HTTP messages of the local Batch service: `Request`, `Response`, JSON bodies and Batch error bodies.

Only this layer turns a `BatchError` into the wire's error body (`error_body`, `error_response`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BatchError, InvalidQueryParameterValue, InvalidRequestBody

JSON_CONTENT_TYPE = "application/json; odata=minimalmetadata"
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

    def json_body(self, what: str) -> Any:
        if not self.body.strip():
            raise InvalidRequestBody(f"The request body is empty; send the {what} as JSON.")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequestBody(f"The request body is not valid JSON ({exc}); send the {what} as JSON.") from None

    def metadata(self, name: str) -> str:
        return f"{self.base_url}/$metadata#{name}"


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
