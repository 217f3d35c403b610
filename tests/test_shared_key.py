"""Shared Key verification against requests signed by the real clients and sent over real loopback HTTP.

A small capture server verifies each request it receives with `SharedKeyVerifier`, exactly as the local service's
wire does, so these tests check the canonicalisation of what actually arrives (paths as sent, transport-added
headers) — not of what the client thought it sent.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate

import pytest
import requests
from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential

from snakemake_executor_plugin_azbatch.local.service_config import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from snakemake_executor_plugin_azbatch.local.auth.shared_key import (
    AuthenticationError,
    ReceivedRequest,
    SharedKeyVerifier,
    authorization_header,
    decode_key,
    signature,
    string_to_sign,
)

pytestmark = pytest.mark.quick

OTHER_KEY = "b3RoZXIta2V5LXRoYXQtaXMtbm90LXRoZS1zZXJ2ZXJzLWtleS0wMDAwMDAwMDAwMDA="


@dataclass
class Capture:
    verifier: SharedKeyVerifier
    outcomes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, error detail)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _CaptureHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    capture: Capture

    def log_message(self, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path, _, query = self.path.partition("?")
        received = ReceivedRequest(self.command, path, query, tuple(self.headers.items()))
        detail: str | None = None
        try:
            self.capture.verifier.verify(received)
        except AuthenticationError as exc:
            detail = exc.detail
        with self.capture.lock:
            self.capture.outcomes.append((self.command, path, detail))
        body = b"" if self.command == "HEAD" else b'{"value": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


@pytest.fixture
def capture() -> Iterator[tuple[Capture, str]]:
    cap = Capture(SharedKeyVerifier(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY))
    handler = type("Handler", (_CaptureHandler,), {"capture": cap})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cap, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _drive_sdk(client: BatchClient) -> None:
    """Issue one of each request shape the plugin and the tests use; responses are irrelevant here."""
    calls = [
        lambda: list(
            client.list_tasks(
                "job-1", filter="state eq 'completed' and startswith(id,'a b+c')", select=["id", "state"],
                max_results=5,
            )
        ),
        lambda: b"".join(client.download_task_file("job-1", "task-1", "wd/out dir/ü+x.txt", ocp_range="bytes=0-9")),
        lambda: client.get_task_file_properties("job-1", "task-1", "wd\\win.txt"),
        lambda: client.create_task_collection(
            "job-1", batch_models.BatchTaskGroup(task_values=[batch_models.BatchTaskCreateOptions(id="t1", command_line="echo hi")])
        ),
        lambda: client.terminate_task("job-1", "t1"),
        lambda: client.delete_task("job-1", "t1"),
        lambda: client.pool_exists("local"),
        lambda: client.get_job("job-1", select=["id"], etag='"0x8D"', match_condition=MatchConditions.IfNotModified),
    ]
    for call in calls:
        try:
            call()
        except Exception:  # the capture server's canned reply does not fit every operation
            pass


def test_requests_signed_by_the_azure_batch_sdk_verify(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    client = BatchClient(url, AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY), retry_total=0)
    _drive_sdk(client)
    assert len(cap.outcomes) == 8
    assert [(m, p, d) for m, p, d in cap.outcomes if d is not None] == []
    methods = {m for m, _, _ in cap.outcomes}
    assert methods == {"GET", "POST", "DELETE", "HEAD"}


def test_requests_signed_with_another_key_are_refused(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    client = BatchClient(url, AzureNamedKeyCredential(DEV_ACCOUNT_NAME, OTHER_KEY), retry_total=0)
    _drive_sdk(client)
    assert len(cap.outcomes) == 8
    assert all(d is not None and "signature" in d for _, _, d in cap.outcomes)
    assert all(OTHER_KEY not in d and DEV_ACCOUNT_KEY not in d for _, _, d in cap.outcomes if d)


def test_unknown_account_and_bearer_are_refused(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    client = BatchClient(url, AzureNamedKeyCredential("someoneelse", DEV_ACCOUNT_KEY), retry_total=0)
    try:
        client.pool_exists("local")
    except Exception:
        pass
    requests.get(f"{url}/pools?api-version=2025-06-01", headers={"Authorization": "Bearer abc.def"}, timeout=10)
    requests.get(f"{url}/pools?api-version=2025-06-01", timeout=10)
    details = [d for _, _, d in cap.outcomes]
    assert "does not exist" in details[0] and DEV_ACCOUNT_NAME in details[0]
    assert "Bearer" in details[1]
    assert "no Authorization header" in details[2]


def _raw_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"ocp-date": formatdate(usegmt=True)}
    headers.update(extra or {})
    return headers


def test_raw_requests_signed_with_authorization_header_verify_and_tampering_fails(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    query = "api-version=2025-06-01&%24filter=id%20eq%20%27a%27&maxresults=2"
    target = f"{url}/jobs/JOB-1/tasks?{query}"
    headers = _raw_headers()
    headers["Authorization"] = authorization_header("GET", target, headers, DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY)
    requests.get(target, headers=headers, timeout=10)
    # same signature, different query value
    requests.get(target.replace("maxresults=2", "maxresults=3"), headers=headers, timeout=10)
    # same signature, different path
    requests.get(target.replace("JOB-1", "JOB-2"), headers=headers, timeout=10)

    body = b'{"value": []}'
    post_target = f"{url}/jobs/JOB-1/addtaskcollection?api-version=2025-06-01"
    post_headers = _raw_headers({"Content-Type": "application/json; odata=minimalmetadata", "Content-Length": str(len(body))})
    post_headers["Authorization"] = authorization_header("POST", post_target, post_headers, DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY)
    requests.post(post_target, data=body, headers=post_headers, timeout=10)
    # a different body length than was signed
    requests.post(post_target, data=body + b" ", headers={k: v for k, v in post_headers.items() if k != "Content-Length"}, timeout=10)
    # a changed ocp- header
    requests.post(post_target, data=body, headers={**post_headers, "ocp-date": "Mon, 01 Jan 2001 00:00:00 GMT"}, timeout=10)

    outcomes = [d is None for _, _, d in cap.outcomes]
    assert outcomes == [True, False, False, True, False, False]


class _Track1Auth(requests.auth.AuthBase):
    """The canonicalisation of the track-1 azure-batch client (Azure CLI): signed inside `requests` after the
    body is prepared, so the transport's own Content-Length is signed, and %2F / %5C in the path count as '/'."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["ocp-date"] = formatdate(usegmt=True)
        parts = requests.utils.urlparse(request.url)
        path = parts.path.replace("%5C", "/").replace("%2F", "/")
        text = string_to_sign(
            request.method, path, parts.query, request.headers.items(), DEV_ACCOUNT_NAME,
            content_length=request.headers.get("Content-Length", ""),
        )
        request.headers["Authorization"] = f"SharedKey {DEV_ACCOUNT_NAME}:{signature(text, decode_key(DEV_ACCOUNT_KEY))}"
        return request


def test_track1_client_canonicalisation_verifies(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    session = requests.Session()
    session.auth = _Track1Auth()
    session.get(f"{url}/jobs/j/tasks/t/files/wd%2Fsub%5Cout.txt?api-version=2024-07-01.20.0", timeout=10)
    session.post(f"{url}/jobs/j/tasks/t/terminate?api-version=2024-07-01.20.0", timeout=10)
    session.post(f"{url}/jobs?api-version=2023-05-01.17.0", json={"id": "j", "poolInfo": {"poolId": "local"}}, timeout=10)
    session.delete(f"{url}/jobs/j?api-version=2023-05-01.17.0", timeout=10)
    assert [d for _, _, d in cap.outcomes] == [None, None, None, None]


def test_stale_or_missing_date_is_refused(capture: tuple[Capture, str]) -> None:
    cap, url = capture
    client = BatchClient(url, AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY), retry_total=0)
    stale = datetime.now(timezone.utc) - timedelta(minutes=20)
    future = datetime.now(timezone.utc) + timedelta(minutes=20)
    recent = datetime.now(timezone.utc) - timedelta(minutes=5)
    for moment in (stale, future, recent):
        try:
            client.get_pool("local", ocp_date=moment)
        except Exception:
            pass
    target = f"{url}/pools?api-version=2025-06-01"
    undated: dict[str, str] = {}
    undated["Authorization"] = authorization_header("GET", target, undated, DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY)
    requests.get(target, headers=undated, timeout=10)
    dated = {"Date": formatdate(usegmt=True)}  # plain Date works as well as ocp-date
    dated["Authorization"] = authorization_header("GET", target, dated, DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY)
    requests.get(target, headers=dated, timeout=10)
    details = [d for _, _, d in cap.outcomes]
    assert details[0] is not None and "clock" in details[0]
    assert details[1] is not None and "clock" in details[1]
    assert details[2] is None
    assert details[3] is not None and "no ocp-date" in details[3]
    assert details[4] is None


def test_invalid_account_key_is_a_clear_configuration_error() -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        SharedKeyVerifier(DEV_ACCOUNT_NAME, "not base64!")
