"""Validate Batch REST responses against Microsoft's OpenAPI spec for api-version 2025-06-01.21.0.

The spec is read from its structural extract inside the repository (`tests/reference/`, written by
`tools/extract_batch_spec.py` from Microsoft's BatchService-2025-06-01.21.0.json; no prose, same validation).

`SpecValidationPolicy` is an azure-core policy for `BatchClient(..., per_call_policies=[...])`; raw HTTP tests use
`validate_response(method, url, status, body_bytes)`. Both raise AssertionError naming the operation, the status and
the JSON path of the first mismatch.

Stricter than the spec text on purpose: every object schema that lists `properties` and does not say otherwise gets
`additionalProperties: false`, so a field the spec does not know fails the test. Enums (x-ms-enum) are enforced,
`date-time`, `duration` and integer ranges are checked. Top-level `odata.metadata` is allowed (Batch always sends it;
the spec does not model it), `odata.nextLink` is part of the list schemas.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

API_VERSION = "2025-06-01.21.0"
UPSTREAM_FILENAME = f"BatchService-{API_VERSION}.json"
TESTS_DIR = Path(__file__).resolve().parents[1]
SPEC_EXTRACT = TESTS_DIR / "reference" / f"batch-spec-{API_VERSION}.extract.json"

_DATE_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_RFC7231_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT$"
)
_DURATION_RE = re.compile(
    r"^-?P(?=\d|T\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"
)


def spec_path(path: Path = SPEC_EXTRACT) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"Batch spec extract not found at {path}: restore it from git, or regenerate it with "
            f"python tools/extract_batch_spec.py PATH/TO/{UPSTREAM_FILENAME}"
        )
    return path


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    return json.loads(spec_path().read_text())


# -- formats ------------------------------------------------------------------------------------------------

FORMAT_CHECKER = jsonschema.FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    m = _DATE_TIME_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    fraction = (m.group(7) or "")[:7]  # "." and at most microseconds, which is all Python parses
    offset = m.group(8).upper().replace("Z", "+00:00")
    datetime.fromisoformat(value[:19].replace("t", "T") + fraction + offset)  # rejects e.g. month 13
    return True


@FORMAT_CHECKER.checks("duration", raises=ValueError)
def _is_duration(value: object) -> bool:
    if isinstance(value, str) and not _DURATION_RE.match(value):
        raise ValueError(f"{value!r} is not an ISO 8601 duration")
    return True


@FORMAT_CHECKER.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMAT_CHECKER.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@FORMAT_CHECKER.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme)


# -- schema preparation -------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _strict_definitions(selected: bool = False) -> dict[str, Any]:
    definitions = load_spec()["definitions"]
    # `properties` is also a *field name* inside some definitions; only rewrite schema objects, i.e. each
    # definition and the schemas below its `properties` / `items` / `additionalProperties`.
    return {name: _strict_schema(schema, selected) for name, schema in definitions.items()}


def _strict_schema(schema: Any, selected: bool = False) -> Any:
    """Close every object schema; with `selected` ($select was sent) also drop `required`, since Batch then
    returns only the selected properties, required or not."""
    if not isinstance(schema, dict):
        return schema
    result = dict(schema)
    if selected:
        result.pop("required", None)
    if isinstance(result.get("properties"), dict):
        result["properties"] = {k: _strict_schema(v, selected) for k, v in result["properties"].items()}
        result.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(result.get(key), dict):
            result[key] = _strict_schema(result[key], selected)
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(result.get(key), list):
            result[key] = [_strict_schema(s, selected) for s in result[key]]
    return result


@lru_cache(maxsize=1)
def _route_table() -> list[tuple[re.Pattern[str], int, dict[str, Any]]]:
    """(regex, number of fixed characters, path item) for every path template, most specific first."""
    routes = []
    for template, item in load_spec()["paths"].items():
        pattern = ""
        fixed = 0
        pieces = re.split(r"(\{[^}]+\})", template)
        for index, piece in enumerate(pieces):
            if piece.startswith("{"):
                # A trailing {filePath} may contain slashes.
                is_last = index == len(pieces) - 1 or (index == len(pieces) - 2 and pieces[-1] == "")
                pattern += "(.+)" if is_last and piece == "{filePath}" else "([^/]+)"
            else:
                pattern += re.escape(piece)
                fixed += len(piece)
        routes.append((re.compile(f"^{pattern}/?$", re.IGNORECASE), fixed, item))
    routes.sort(key=lambda route: (-route[1], route[0].pattern))  # independent of the file's key order
    return routes


def find_operation(method: str, url_or_path: str) -> tuple[str, dict[str, Any]]:
    """(operationId, operation object) for a request; AssertionError if the spec has no such operation."""
    path = urlsplit(url_or_path).path or "/"
    for regex, _fixed, item in _route_table():
        if regex.match(path):
            operation = item.get(method.lower())
            if operation is not None:
                return operation["operationId"], operation
    raise AssertionError(f"{method.upper()} {path}: no operation in the Batch spec matches this request")


def _documented_response(operation_id: str, operation: dict[str, Any], status: int) -> dict[str, Any]:
    responses = operation["responses"]
    response = responses.get(str(status))
    if response is None:
        if 200 <= status < 300 or "default" not in responses:
            raise AssertionError(
                f"{operation_id}: status {status} is not a documented response (documented: {sorted(responses)})"
            )
        response = responses["default"]
    return response


def _response_schema(operation_id: str, operation: dict[str, Any], status: int) -> dict[str, Any] | None:
    """Schema for a status (None: the spec documents no body for it)."""
    return _documented_response(operation_id, operation, status).get("schema")


def validate_headers(operation_id: str, operation: dict[str, Any], status: int, headers: Any) -> None:
    """Documented response headers that are present must have the documented format (and JSON the JSON type)."""
    documented = _documented_response(operation_id, operation, status).get("headers", {})
    lowered = {name.lower(): value for name, value in headers.items()}
    for name, spec in documented.items():
        value = lowered.get(name.lower())
        if value is None:
            continue
        kind = spec.get("format") or spec.get("type")
        ok = {
            "date-time-rfc7231": lambda v: bool(_RFC7231_RE.match(v)),
            "int64": lambda v: v.isdigit(),
            "boolean": lambda v: v.lower() in ("true", "false"),
        }.get(kind, lambda v: True)(value)
        if not ok:
            raise AssertionError(f"{operation_id} {status}: header {name}: {value!r} is not a valid {kind}")


@lru_cache(maxsize=None)
def _validator(schema_json: str, selected: bool = False) -> jsonschema.Draft4Validator:
    schema = _strict_schema(json.loads(schema_json), selected)
    root = {"definitions": _strict_definitions(selected), "allOf": [schema]}
    return jsonschema.Draft4Validator(root, format_checker=FORMAT_CHECKER)


def validate_body(
    operation_id: str, status: int, body: Any, schema: dict[str, Any] | None, selected: bool = False
) -> None:
    """Validate an already-parsed JSON body against `schema` (a response schema from the spec); `selected`: the
    request carried `$select`, so required properties may be absent."""
    if schema is None:
        raise AssertionError(f"{operation_id} {status}: the spec documents no response body, but one was sent")
    if isinstance(body, dict) and "odata.metadata" in body:
        body = dict(body)
        metadata = body.pop("odata.metadata")
        if not isinstance(metadata, str):
            raise AssertionError(f"{operation_id} {status}: odata.metadata must be a string, got {metadata!r}")
    validator = _validator(json.dumps(schema, sort_keys=True), selected)
    errors = sorted(validator.iter_errors(body), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        first = errors[0]
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise AssertionError(f"{operation_id} {status}: response body does not match the spec at {where}: "
                             f"{first.message}{more}")


def validate_response(
    method: str, url: str, status: int, body_bytes: bytes | None, headers: Any | None = None
) -> str:
    """Validate one HTTP response of the Batch API (headers too when given: a mapping of name -> value);
    returns the operationId it was validated as."""
    operation_id, operation = find_operation(method, url)
    schema = _response_schema(operation_id, operation, status)
    if headers is not None:
        validate_headers(operation_id, operation, status, headers)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if body_bytes and schema is not None and schema.get("type") != "file":
            if not content_type.lower().startswith("application/json"):
                raise AssertionError(
                    f"{operation_id} {status}: JSON body sent with Content-Type {content_type!r}, "
                    "expected application/json"
                )
    if schema is not None and schema.get("type") == "file":
        return operation_id
    if method.upper() == "HEAD":
        if body_bytes:
            raise AssertionError(f"{operation_id} {status}: HEAD response carries a body")
        return operation_id
    if not body_bytes or not body_bytes.strip():
        if schema is not None:
            raise AssertionError(f"{operation_id} {status}: the spec documents a JSON body, the response is empty")
        return operation_id
    try:
        body = json.loads(body_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AssertionError(f"{operation_id} {status}: response body is not JSON ({exc})") from None
    selected = any(key.lower() == "$select" for key in parse_qs(urlsplit(url).query))
    validate_body(operation_id, status, body, schema, selected and 200 <= status < 300)
    return operation_id


class SpecValidationPolicy(SansIOHTTPPolicy):
    """Fails the call (AssertionError) when a response does not match the spec; counts what it checked."""

    def __init__(self) -> None:
        super().__init__()
        self.validated: dict[str, int] = {}

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        http_request = request.http_request
        http_response = response.http_response
        operation_id, operation = find_operation(http_request.method, http_request.url)
        schema = _response_schema(operation_id, operation, http_response.status_code)
        if schema is not None and schema.get("type") == "file":
            # Streamed file content: reading it here would consume the stream.
            validate_headers(operation_id, operation, http_response.status_code, http_response.headers)
            self.validated[operation_id] = self.validated.get(operation_id, 0) + 1
            return
        read = getattr(http_response, "read", None)
        body = read() if callable(read) else http_response.body()
        validate_response(
            http_request.method, http_request.url, http_response.status_code, body, http_response.headers
        )
        self.validated[operation_id] = self.validated.get(operation_id, 0) + 1
