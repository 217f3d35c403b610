"""Counting HTTP proxy in front of Azurite.

Every request is forwarded unchanged (method, raw path and query, headers, streamed body) so Shared Key and SAS
signatures stay valid; each one is classified as a Blob operation and recorded with its body sizes via
`metrics.record_storage(operation, status, request_bytes, response_bytes, client)`. Byte counts are body bytes only,
i.e. exactly what was uploaded / downloaded. `client` is "plugin" when the User-Agent carries the plugin's product
token (it sets one with azure-core's `user_agent` option), else "other" (the nodes, tests, any other tool).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, Protocol
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from ..auth.tls import serve_tls

_CHUNK = 256 * 1024
# Bodies up to this size are buffered so a request on a stale keep-alive upstream connection can be re-sent.
_BUFFER_LIMIT = 8 * 1024 * 1024
_UPSTREAM_TIMEOUT_S = 300
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
}

STORAGE_OPERATIONS = (
    "PutBlob",
    "PutBlock",
    "PutBlockList",
    "GetBlob",
    "GetBlobProperties",
    "ListBlobs",
    "CreateContainer",
    "DeleteBlob",
    "Other",
)


PLUGIN_PRODUCT = "snakemake-executor-plugin-azbatch/"  # the plugin's User-Agent token (a wire contract)


def client_class(user_agent: str | None) -> str:
    return "plugin" if PLUGIN_PRODUCT in (user_agent or "") else "other"


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up stop()
    request_queue_size = 128  # many nodes and uploads connect at once; the default backlog of 5 drops them


class _BadRequest(ValueError):
    pass


class StorageMetrics(Protocol):
    def record_storage(
        self, operation: str, status: int, request_bytes: int, response_bytes: int, client: str = "other"
    ) -> None: ...


def classify(method: str, target: str) -> str:
    """Blob operation name for a request line (`target` is the raw path with query)."""
    parts = urlsplit(target)
    query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    comp = query.get("comp", "")
    restype = query.get("restype", "")
    # /account/container[/blob...]
    segments = [s for s in parts.path.split("/") if s]
    is_blob = len(segments) >= 3 and restype == ""
    is_container = len(segments) == 2 or (len(segments) >= 2 and restype == "container")
    method = method.upper()
    if is_blob:
        if method == "PUT":
            return {"": "PutBlob", "block": "PutBlock", "blocklist": "PutBlockList"}.get(comp, "Other")
        if method == "GET" and comp == "":
            return "GetBlob"
        if method == "HEAD" and comp == "":
            return "GetBlobProperties"
        if method == "DELETE" and comp == "":
            return "DeleteBlob"
        return "Other"
    if is_container:
        if method == "PUT" and restype == "container" and comp == "":
            return "CreateContainer"
        if method == "GET" and restype == "container" and comp == "list":
            return "ListBlobs"
    return "Other"


class BlobProxy:
    """Threaded proxy on a free loopback port forwarding to `upstream_host:upstream_port`.

    With `server_tls` it serves HTTPS, with `upstream_tls` it talks HTTPS to Azurite; `check_bearer(authorization)`
    returns why a bearer token is refused (answered like Storage: 403 AuthenticationFailed), or None;
    `drop_request(user_agent, operation)` says whether to drop a request unanswered (a storage outage, outage_switch.py)."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        metrics: StorageMetrics | None,
        host: str = "127.0.0.1",
        port: int = 0,
        server_tls: ssl.SSLContext | None = None,
        upstream_tls: ssl.SSLContext | None = None,
        check_bearer: Callable[[str | None], str | None] | None = None,
        drop_request: Callable[[str | None, str], bool] | None = None,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self.server_tls = server_tls
        self.upstream_tls = upstream_tls
        self.check_bearer = check_bearer
        self.drop_request = drop_request
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "BlobProxy not started"
        return self._server.server_address[1]

    def account_url(self, account_name: str = "devstoreaccount1") -> str:
        return f"{'https' if self.server_tls else 'http'}://{self.host}:{self.port}/{account_name}"

    def start(self) -> None:
        handler = type("BoundProxyHandler", (_ProxyHandler,), {"proxy": self})
        server = _ProxyServer((self.host, self.requested_port), handler)
        if self.server_tls is not None:
            serve_tls(server, self.server_tls)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="blob-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def record(
        self, operation: str, status: int, request_bytes: int, response_bytes: int, client: str = "other"
    ) -> None:
        if self.metrics is not None:
            self.metrics.record_storage(operation, status, request_bytes, response_bytes, client)

    def __enter__(self) -> "BlobProxy":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms wait for a delayed ACK
    proxy: BlobProxy
    # One keep-alive connection to Azurite per client connection (a handler instance lives as long as it).
    upstream_conn: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.upstream_conn is not None:
                self.upstream_conn.close()
                self.upstream_conn = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature from the base class
        pass  # requests are counted, not logged (query strings may carry SAS signatures)

    def do_GET(self) -> None:
        self._forward()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    # -- request side -----------------------------------------------------------------------------------------

    def _request_body(self) -> tuple[bytes | Iterator[bytes] | None, int | None, list[int]]:
        """(body, content_length, [bytes_read]) — small bodies buffered, large or chunked ones streamed."""
        counter = [0]
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(counter), None, counter
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadRequest("invalid Content-Length header") from None
        if length <= 0:
            return None, 0, counter
        if length <= _BUFFER_LIMIT:
            data = self.rfile.read(length)
            counter[0] = len(data)
            return data, length, counter
        return self._read_exact(length, counter), length, counter

    def _read_exact(self, length: int, counter: list[int]) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                raise ConnectionError("client closed the connection mid-body")
            counter[0] += len(chunk)
            remaining -= len(chunk)
            yield chunk

    def _read_chunked(self, counter: list[int]) -> Iterator[bytes]:
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._read_exact(size, counter)
            self.rfile.readline(3)  # CRLF after each chunk

    # -- forwarding -------------------------------------------------------------------------------------------

    def _connection(self, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, reused) — reused connections may have been closed by Azurite meanwhile."""
        if fresh and self.upstream_conn is not None:
            self.upstream_conn.close()
            self.upstream_conn = None
        if self.upstream_conn is None:
            upstream = (self.proxy.upstream_host, self.proxy.upstream_port)
            tls = self.proxy.upstream_tls
            self.upstream_conn = (
                http.client.HTTPSConnection(*upstream, timeout=_UPSTREAM_TIMEOUT_S, context=tls)
                if tls is not None
                else http.client.HTTPConnection(*upstream, timeout=_UPSTREAM_TIMEOUT_S)
            )
            return self.upstream_conn, False
        return self.upstream_conn, True

    def _send_upstream(
        self, body: bytes | Iterator[bytes] | None, length: int | None
    ) -> http.client.HTTPResponse:
        replayable = body is None or isinstance(body, bytes)
        for attempt in range(2):
            # A streamed body cannot be re-sent, so it never risks a connection Azurite may have closed.
            conn, reused = self._connection(fresh=attempt > 0 or not replayable)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        conn.putheader(name, value)
                if length is None:
                    conn.putheader("Transfer-Encoding", "chunked")
                elif length or self.command in ("PUT", "POST", "PATCH"):
                    conn.putheader("Content-Length", str(length))
                conn.endheaders()
                if isinstance(body, bytes):
                    conn.send(body)
                elif body is not None:
                    for chunk in body:
                        if length is None:
                            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        else:
                            conn.send(chunk)
                    if length is None:
                        conn.send(b"0\r\n\r\n")
                return conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.upstream_conn = None
                # Only a buffered (or empty) body can be sent again.
                if not reused or not replayable:
                    raise
        raise AssertionError("unreachable")

    def _forward(self) -> None:
        operation = classify(self.command, self.path)
        if self.proxy.drop_request is not None and self.proxy.drop_request(self.headers.get("User-Agent"), operation):
            self.close_connection = True  # an outage: no answer at all, not in the metrics
            return
        counter = [0]
        recorded = False

        def record(status: int, response_bytes: int) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.proxy.record(operation, status, counter[0], response_bytes, client_class(self.headers.get("User-Agent")))

        try:
            refused = self.proxy.check_bearer(self.headers.get("Authorization")) if self.proxy.check_bearer else None
            if refused:
                self._authentication_failed(refused, record)
                return
            try:
                body, length, counter = self._request_body()
            except _BadRequest as exc:
                self._plain_error(400, f"blob proxy: {exc}", record)
                return
            try:
                response = self._send_upstream(body, length)
            except OSError as exc:
                self._plain_error(502, f"blob proxy: Azurite unreachable ({type(exc).__name__})", record)
                return
            self._relay_response(response, record)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        finally:
            record(502, 0)  # no-op unless the exchange broke off before the response was relayed

    def _plain_error(self, status: int, text: str, record: Callable[[int, int], None]) -> None:
        self._answer_and_close(status, text.encode(), "text/plain", record)

    def _answer_and_close(
        self, status: int, body: bytes, content_type: str, record: Callable[[int, int], None],
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        record(status, len(body))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _authentication_failed(self, detail: str, record: Callable[[int, int], None]) -> None:
        """Storage's answer to a bad bearer token; the connection is closed as the body was not read."""
        message = (
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed "
            f"correctly including the signature.\nRequestId:{uuid.uuid4()}\nTime:{formatdate(usegmt=True)}"
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
            f"<Message>{escape(message)}</Message><AuthenticationErrorDetail>{escape(detail)}"
            "</AuthenticationErrorDetail></Error>"
        ).encode()
        self._answer_and_close(403, body, "application/xml", record, (("x-ms-error-code", "AuthenticationFailed"),))

    def _relay_response(self, response: http.client.HTTPResponse, record: Callable[[int, int], None]) -> None:
        """Relay status, headers and body. Metrics are recorded just before the last byte goes out, so a client
        that reads its response and then asks for the metrics always sees this request counted."""
        self.send_response_only(response.status, response.reason)
        upstream_length = response.getheader("Content-Length")
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        has_body = self.command != "HEAD" and response.status not in (204, 304) and response.status >= 200
        chunked = has_body and upstream_length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if response.will_close or "close" in self.headers.get("Connection", "").lower():
            self.send_header("Connection", "close")
            self.close_connection = True
        pending = response.read(_CHUNK) if has_body else response.read()
        if not has_body or not pending:
            record(response.status, 0)
            self.end_headers()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        else:
            self.end_headers()
            sent = 0
            while True:
                following = response.read(_CHUNK)
                if not following:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(pending), pending) if chunked else pending)
                sent += len(pending)
                pending = following
            record(response.status, sent + len(pending))
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(pending), pending) if chunked else pending)
        self.wfile.flush()
        if response.will_close and self.upstream_conn is not None:
            self.upstream_conn.close()
            self.upstream_conn = None
