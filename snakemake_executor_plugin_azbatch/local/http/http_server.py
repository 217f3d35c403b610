"""HTTP layer of the local Batch service: `Dispatcher.dispatch(Request) -> Response` and the socket server around it.

Contract: Microsoft's Batch REST API 2025-06-01.21.0 (older api-versions are accepted too, as the Azure CLI sends
them). Every API request goes: fault injection → Shared Key → api-version → body size → route → handler; any
`BatchError` becomes Batch's error body here. `dispatch` needs no socket, so API tests can run in process.
The route is matched once per request (`routes.match_route`), the service's own `/_local/` endpoints included: they
need no auth and are not counted (`local_endpoints.py`); during a Batch outage (outage_switch.py) API requests are
dropped unanswered. Bodies and time per request are bounded before any of this
(request_body.py); what the socket server refuses itself (request line, headers, verb) is a Batch error body too.
"""

from __future__ import annotations

import http.client
import http.server
import io
import ipaddress
import logging
import re
import socket
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..api.batch_api import BatchApi
from ..api.http_messages import Request, Response, error_response, query_error
from ..auth.shared_key import AuthenticationError, ReceivedRequest, SharedKeyVerifier
from ..service_config import LOOPBACK_HOSTS, BoundEndpoints, ServiceConfig
from ..model.batch_state import BatchState
from ..model.errors import (
    BatchError,
    DynamicError,
    InternalError,
    InvalidHeaderValue,
    InvalidHttpVerb,
    InvalidUri,
    MissingRequiredQueryParameter,
    RequestBodyTooLarge,
    RequestUrlFailedToParse,
    UnsupportedHttpVerb,
)
from .faults import FaultInjector
from .local_endpoints import LocalEndpoints, local_method_refused, unknown_local_endpoint
from .metrics import Metrics
from .outage_switch import OutageSwitch
from .request_body import MAX_BODY_BYTES, REQUEST_SECONDS, TOO_LARGE, DeadlineReader, read_body
from .routes import UNKNOWN_OPERATION, RouteMatch, match_route

log = logging.getLogger(__name__)

API_VERSION = "2025-06-01.21.0"
_API_VERSION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.\d+\.\d+)?$")
_OLDEST_API_DATE = "2016-07-01"
_NEWEST_API_DATE = API_VERSION.split(".")[0]
_STREAM_CHUNK = 256 * 1024
# What the socket server itself refuses (request line, headers, unknown verbs), as Batch error codes.
_PROTOCOL_ERRORS = {400: RequestUrlFailedToParse.code, 414: RequestUrlFailedToParse.code,
                    431: InvalidHeaderValue.code, 505: RequestUrlFailedToParse.code}


def base_url_for(host_header: str | None, endpoints: BoundEndpoints) -> str:
    """Where links point: the host the client used when it is a loopback name, else the bound URL."""
    host = (host_header or "").strip()
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if host and name in LOOPBACK_HOSTS:
        scheme = "https" if endpoints.account_url.startswith("https:") else "http"
        return f"{scheme}://{host}"
    return endpoints.account_url.rstrip("/")


def make_request(method: str, target: str, headers: Any, body: bytes, base_url: str) -> Request:
    """A Request from an HTTP request line's target (path?query)."""
    raw_path, _, raw_query = target.partition("?")
    query = {k.lower(): v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
    return Request(method, raw_path, raw_query, query, headers, body, base_url)


def check_api_version(value: str | None) -> None:
    if value is None or value == "":
        raise MissingRequiredQueryParameter(
            f"The query parameter api-version is required, e.g. ?api-version={API_VERSION}.",
            {"QueryParameterName": "api-version"},
        )
    m = _API_VERSION_RE.match(value)
    if not m or not _OLDEST_API_DATE <= m.group(1) <= _NEWEST_API_DATE:
        raise query_error(
            "api-version", value, f"unsupported version; the local service speaks Batch API versions up to {API_VERSION}"
        )


class Dispatcher:
    """Socket-free request handling: one Request in, one Response out (with `operation` set for metrics)."""

    def __init__(self, state: BatchState, config: ServiceConfig, faults: FaultInjector,
                 metrics: Metrics | None = None, outage: OutageSwitch | None = None) -> None:
        self.api = BatchApi(state)
        self.local = LocalEndpoints(state, metrics or Metrics(), outage)
        self.faults = faults
        self.verifier = SharedKeyVerifier(config.account_name, config.account_key)

    @staticmethod
    def match(request: Request) -> RouteMatch:
        return match_route(request.method, request.raw_path)

    def dispatch(self, request: Request, body_error: BatchError | None = None,
                 match: RouteMatch | None = None) -> Response:
        """The answer to `request`; `match` is its route when the caller has matched it already."""
        match = match or self.match(request)
        request.params = match.params
        if match.local:
            response = self._local(request, match)
        else:
            response = self._respond(request, match, body_error)
        response.operation = match.operation
        return response

    def _local(self, request: Request, match: RouteMatch) -> Response:
        if match.route is not None:
            return getattr(self.local, match.route.handler)(request)
        return local_method_refused(request.method, match.allowed) if match.allowed else unknown_local_endpoint()

    def _respond(self, request: Request, match: RouteMatch, body_error: BatchError | None) -> Response:
        route, allowed = match.route, match.allowed
        fault = self.faults.pick()
        if fault:
            headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
            response = error_response(request.base_url, DynamicError(fault.status, fault.code, fault.message), headers)
            response.injected_fault = True
            return response
        try:
            self._authenticate(request)
            check_api_version(request.query.get("api-version"))
            if body_error:
                raise body_error
            if len(request.body) > MAX_BODY_BYTES:
                raise RequestBodyTooLarge(TOO_LARGE)
            if route is None:
                if allowed:
                    raise UnsupportedHttpVerb(
                        f"The local Batch service does not support {request.method} on {request.raw_path}; "
                        f"it supports {', '.join(sorted(set(allowed)))}."
                    )
                raise InvalidUri(
                    f"{request.method} {request.raw_path} does not match any operation of the local Batch service."
                )
            return getattr(self.api, route.handler)(request)
        except BatchError as exc:
            return error_response(request.base_url, exc)
        except Exception:  # a bug in the service: answer like Batch does, keep the traceback in the log
            log.exception("internal error handling %s %s", request.method, request.raw_path)
            return error_response(request.base_url, InternalError())

    def _authenticate(self, request: Request) -> None:
        try:
            self.verifier.verify(
                ReceivedRequest(request.method, request.raw_path, request.raw_query, tuple(request.headers.items()))
            )
        except AuthenticationError as exc:
            raise DynamicError(
                exc.status,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of the Authorization header is "
                "formed correctly including the signature.",
                {"AuthenticationErrorDetail": exc.detail},
            ) from None


class BatchRequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # every answer, even to a garbled request line, has a status line
    timeout = 300  # seconds a kept-alive connection may sit idle before its thread lets it go
    request_seconds = REQUEST_SECONDS  # from a request's first byte to its last (request_body.DeadlineReader)
    # Headers and body go out as two writes: with Nagle's algorithm the body waits for the client's delayed ACK
    # of the headers, about 40 ms on every response of a kept-alive connection.
    disable_nagle_algorithm = True
    server: "BatchHTTPServer"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._reader = DeadlineReader(self.connection, self.timeout, self.request_seconds)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.next_request()
        self.headers = http.client.HTTPMessage()  # none yet: an error answered before them reads no stale ones
        super().handle_one_request()

    def parse_request(self) -> bool:
        if len(self.raw_requestline.split()) == 2:  # an HTTP/0.9 request: Batch speaks HTTP/1.x only
            self.command, self.request_version = None, self.default_request_version
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.send_error(400, "Bad request syntax: the request line has no HTTP version")
            return False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — base class signature
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What the socket server refuses before a request exists (request line, headers, verb): a Batch error
        body, as for every other answer; an unknown verb is Batch's 400 InvalidHttpVerb."""
        if code == 501:
            error: BatchError = InvalidHttpVerb(f"The HTTP verb {self.command!r} is not recognized.")
        else:
            reason = message or self.responses.get(code, ("Bad request",))[0]
            error = DynamicError(code, _PROTOCOL_ERRORS.get(code, RequestUrlFailedToParse.code), f"{reason}.")
        self.close_connection = True
        base_url = self.server.endpoints.account_url.rstrip("/")
        self._send(error_response(base_url, error), b"", counted=True, operation=UNKNOWN_OPERATION)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        try:
            read = read_body(self.rfile, self.headers)
        except TimeoutError:
            raise  # the base class ends the connection without an answer
        except OSError:  # the connection broke: nobody to answer
            self.close_connection = True
            return
        body, body_error = read.body, read.error
        self.close_connection = self.close_connection or read.close
        base_url = base_url_for(self.headers.get("Host"), self.server.endpoints)
        request = make_request(self.command, self.path, self.headers, body, base_url)
        dispatcher = self.server.dispatcher
        match = dispatcher.match(request)  # the one route lookup of this request
        outage = self.server.outage
        if not match.local and outage is not None and outage.drops("batch", operation=match.operation):
            self.close_connection = True  # no answer at all: the connection just ends
            return
        response = dispatcher.dispatch(request, body_error, match)
        self._send(response, b"" if match.local else request.body, counted=not match.local)

    def _send(self, response: Response, request_body: bytes, *, counted: bool, operation: str | None = None) -> None:
        head_only = self.command == "HEAD"
        if counted:
            # Recorded before anything is written, so a client that reads the metrics right after this response
            # already sees it counted. Counts the planned body; a client that hangs up early is not subtracted.
            planned = 0 if head_only else response.body_length
            self.server.metrics.record_batch(
                operation or response.operation or UNKNOWN_OPERATION, response.status, len(request_body), planned,
                injected=response.injected_fault,
            )
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


class BatchHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], state: BatchState, config: ServiceConfig, metrics: Metrics,
        faults: FaultInjector, outage: OutageSwitch | None = None,
    ) -> None:
        self.config = config
        self.endpoints = state.endpoints
        self.metrics = metrics
        self.outage = outage
        self.dispatcher = Dispatcher(state, config, faults, metrics, outage)
        super().__init__(address, BatchRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # the client went away; nothing to answer
        log.exception("unhandled error serving %s", client_address)


class _BatchHTTPServerV6(BatchHTTPServer):
    address_family = socket.AF_INET6


def make_server(
    state: BatchState, config: ServiceConfig, metrics: Metrics, faults: FaultInjector,
    outage: OutageSwitch | None = None,
) -> http.server.ThreadingHTTPServer:
    """The Batch API server bound to config.host and the port `state.endpoints` names (0: any free port) — loopback
    only; call serve_forever() to run."""
    host = config.host
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"host {host!r}: the local Batch service listens on loopback only; use 127.0.0.1")
    address = "127.0.0.1" if host == "localhost" else host
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"host {host!r} is not a loopback address; use 127.0.0.1")
    server_class = _BatchHTTPServerV6 if ":" in address else BatchHTTPServer
    return server_class((address, state.endpoints.port), state, config, metrics, faults, outage)
