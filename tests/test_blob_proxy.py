"""The counting blob proxy: real Azurite behind it, azure-storage-blob in front; counts and bytes must match."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from snakemake_executor_plugin_azbatch.local.storage.azurite import Azurite
from snakemake_executor_plugin_azbatch.local.storage.blob_proxy import BlobProxy, classify, client_class
from snakemake_executor_plugin_azbatch.local.service_config import StorageEndpoint
from snakemake_executor_plugin_azbatch.local.http.metrics import Metrics

BLOCK = 256 * 1024


class ProxiedStorage:
    def __init__(self, proxy: BlobProxy, metrics: Metrics) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self.endpoint = StorageEndpoint(blob_url=proxy.account_url())
        self._counter = 0

    def client(self, **kwargs: Any):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.endpoint.connection_string, **kwargs)

    def new_container(self):
        self._counter += 1
        return self.client().create_container(f"proxy-test-{self._counter}")

    def storage(self) -> dict[str, dict[str, Any]]:
        return self.metrics.snapshot()["storage"]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedStorage]:
    metrics = Metrics()
    with Azurite(tmp_path_factory.mktemp("azurite")) as azurite:
        with BlobProxy("127.0.0.1", azurite.port, metrics) as proxy:
            yield ProxiedStorage(proxy, metrics)


def _delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per operation: count / requestBytes / responseBytes added between two snapshots (zero entries dropped)."""
    delta = {}
    for operation, counter in after.items():
        old = before.get(operation, {"count": 0, "requestBytes": 0, "responseBytes": 0})
        change = {key: counter[key] - old[key] for key in ("count", "requestBytes", "responseBytes")}
        if change["count"]:
            delta[operation] = change
    return delta


def test_small_upload_download_list_properties_delete(proxied: ProxiedStorage) -> None:
    before = proxied.storage()
    container = proxied.new_container()
    payload = b"hello, batch\n" * 100
    container.upload_blob("dir/small.txt", payload)
    assert container.download_blob("dir/small.txt").readall() == payload
    assert [b.name for b in container.list_blobs()] == ["dir/small.txt"]
    assert container.get_blob_client("dir/small.txt").get_blob_properties().size == len(payload)
    container.delete_blob("dir/small.txt")
    delta = _delta(before, proxied.storage())

    assert delta["CreateContainer"]["count"] == 1
    assert delta["PutBlob"] == {"count": 1, "requestBytes": len(payload), "responseBytes": 0}
    assert delta["GetBlob"]["count"] == 1 and delta["GetBlob"]["responseBytes"] == len(payload)
    assert delta["ListBlobs"]["count"] == 1 and delta["ListBlobs"]["responseBytes"] > 0
    assert delta["GetBlobProperties"] == {"count": 1, "requestBytes": 0, "responseBytes": 0}
    assert delta["DeleteBlob"]["count"] == 1
    assert "Other" not in delta and "PutBlock" not in delta


def test_block_upload_and_ranged_download_count_every_byte(proxied: ProxiedStorage) -> None:
    container = proxied.client(max_single_put_size=BLOCK, max_block_size=BLOCK).create_container("proxy-blocks")
    payload = hashlib.sha256(b"seed").digest() * (5 * BLOCK // 32 + 100)  # 5 full blocks and a partial one
    before = proxied.storage()
    container.upload_blob("big.bin", payload)
    blob = proxied.client().get_blob_client("proxy-blocks", "big.bin")
    assert blob.download_blob().readall() == payload
    assert blob.download_blob(offset=1000, length=5000).readall() == payload[1000:6000]
    delta = _delta(before, proxied.storage())

    blocks = -(-len(payload) // BLOCK)
    assert delta["PutBlock"] == {"count": blocks, "requestBytes": len(payload), "responseBytes": 0}
    assert delta["PutBlockList"]["count"] == 1
    assert "PutBlob" not in delta
    assert delta["GetBlob"]["count"] == 2
    assert delta["GetBlob"]["responseBytes"] == len(payload) + 5000


def test_large_single_put_is_streamed_to_azurite(proxied: ProxiedStorage) -> None:
    # Larger than the proxy's buffering limit, so the body is streamed on a fresh upstream connection.
    payload = hashlib.sha256(b"large").digest() * (9 * 1024 * 1024 // 32)
    container = proxied.client(max_single_put_size=16 * 1024 * 1024).create_container("proxy-large")
    before = proxied.storage()
    container.upload_blob("large.bin", payload)
    assert container.download_blob("large.bin").readall() == payload
    delta = _delta(before, proxied.storage())
    assert delta["PutBlob"] == {"count": 1, "requestBytes": len(payload), "responseBytes": 0}
    assert delta["GetBlob"]["responseBytes"] == len(payload)


def test_sas_urls_and_keep_alive_pass_through(proxied: ProxiedStorage) -> None:
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    container = proxied.new_container()
    payload = b"x" * 3000
    container.upload_blob("sas.txt", payload)
    sas = generate_blob_sas(
        proxied.endpoint.account_name,
        container.container_name,
        "sas.txt",
        account_key=proxied.endpoint.account_key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    path = f"/devstoreaccount1/{container.container_name}/sas.txt?{sas}"
    conn = http.client.HTTPConnection("127.0.0.1", proxied.proxy.port, timeout=30)
    try:
        for _ in range(3):  # one client connection, several requests
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == payload
        conn.request("HEAD", path)
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == str(len(payload))
        assert response.read() == b""
        conn.request("GET", path, headers={"Range": "bytes=0-9"})
        response = conn.getresponse()
        assert response.status == 206 and response.read() == payload[:10]
        # A tampered signature must be refused by Azurite, i.e. the query reaches it untouched.
        conn.request("GET", path.replace("sig=", "sig=AAAA"))
        response = conn.getresponse()
        response.read()
        assert response.status == 403
    finally:
        conn.close()


# -- forwarding fidelity against a recording upstream -----------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _handle(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        reply = hashlib.sha256(body).hexdigest().encode() * 1000
        self.send_response(200)
        if self.path.endswith("chunked-reply"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for start in range(0, len(reply), 7000):
                    part = reply[start : start + 7000]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture
def recorder_proxy() -> Iterator[tuple[BlobProxy, Metrics]]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    metrics = Metrics()
    try:
        with BlobProxy("127.0.0.1", upstream.server_address[1], metrics) as proxy:
            yield proxy, metrics
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_requests_are_forwarded_unchanged(recorder_proxy: tuple[BlobProxy, Metrics]) -> None:
    proxy, metrics = recorder_proxy
    big = bytes(range(256)) * (40 * 1024 + 3)  # > the proxy's buffering limit: streamed
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        path = "/devstoreaccount1/c/a%20b/%C3%A9.txt?comp=block&blockid=QUJD%3D%3D&sig=x%2By"
        conn.request("PUT", path, body=b"abc", headers={"x-ms-custom": "v1", "Authorization": "SharedKey a:b"})
        assert conn.getresponse().read() == hashlib.sha256(b"abc").hexdigest().encode() * 1000

        def pieces() -> Iterator[bytes]:
            yield b"part-one|"
            yield b"part-two"

        conn.request("PUT", "/devstoreaccount1/c/chunked", body=pieces(), encode_chunked=True)
        conn.getresponse().read()
        conn.request("PUT", "/devstoreaccount1/c/big", body=big)
        assert conn.getresponse().read() == hashlib.sha256(big).hexdigest().encode() * 1000
        conn.request("GET", "/devstoreaccount1/c/chunked-reply")
        response = conn.getresponse()
        assert response.read() == hashlib.sha256(b"").hexdigest().encode() * 1000
        conn.request("HEAD", "/devstoreaccount1/c/chunked-reply")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
    finally:
        conn.close()

    first, chunked, streamed, _get, _head = _Recorder.seen
    assert first["method"] == "PUT" and first["path"] == path and first["body"] == b"abc"
    assert first["headers"]["x-ms-custom"] == "v1" and first["headers"]["Authorization"] == "SharedKey a:b"
    assert first["headers"]["Host"] == f"127.0.0.1:{proxy.port}"
    assert chunked["body"] == b"part-one|part-two"
    assert streamed["body"] == big and streamed["headers"]["Content-Length"] == str(len(big))

    storage = metrics.snapshot()["storage"]
    assert storage["PutBlock"] == {"count": 1, "statuses": {"200": 1}, "requestBytes": 3, "responseBytes": 64000}
    assert storage["PutBlob"]["count"] == 2
    assert storage["PutBlob"]["requestBytes"] == len(b"part-one|part-two") + len(big)
    assert storage["GetBlob"]["responseBytes"] == 64000
    assert storage["GetBlobProperties"] == {"count": 1, "statuses": {"200": 1}, "requestBytes": 0, "responseBytes": 0}


def test_unreachable_upstream_is_a_502_and_counted() -> None:
    from snakemake_executor_plugin_azbatch.local.storage.azurite import free_port

    metrics = Metrics()
    with BlobProxy("127.0.0.1", free_port(), metrics) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            conn.request("GET", "/devstoreaccount1/c/b")
            response = conn.getresponse()
            assert response.status == 502
            assert b"Azurite unreachable" in response.read()
        finally:
            conn.close()
    assert metrics.snapshot()["storage"]["GetBlob"]["statuses"] == {"502": 1}


def test_bad_content_length_is_a_400(recorder_proxy: tuple[BlobProxy, Metrics]) -> None:
    proxy, metrics = recorder_proxy
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(b"PUT /devstoreaccount1/c/b HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.endswith(b"invalid Content-Length header")
    assert _Recorder.seen == []
    assert metrics.snapshot()["storage"]["PutBlob"]["statuses"] == {"400": 1}


@pytest.mark.parametrize(
    "method,target,operation",
    [
        ("PUT", "/devstoreaccount1/c/b.txt", "PutBlob"),
        ("PUT", "/devstoreaccount1/c/d/b.txt?comp=block&blockid=AA", "PutBlock"),
        ("PUT", "/devstoreaccount1/c/b.txt?comp=blocklist", "PutBlockList"),
        ("GET", "/devstoreaccount1/c/b.txt", "GetBlob"),
        ("HEAD", "/devstoreaccount1/c/b.txt", "GetBlobProperties"),
        ("GET", "/devstoreaccount1/c?restype=container&comp=list&prefix=x", "ListBlobs"),
        ("PUT", "/devstoreaccount1/c?restype=container", "CreateContainer"),
        ("DELETE", "/devstoreaccount1/c/b.txt", "DeleteBlob"),
        ("GET", "/devstoreaccount1/c/b.txt?comp=metadata", "Other"),
        ("GET", "/devstoreaccount1?comp=list", "Other"),
        ("DELETE", "/devstoreaccount1/c?restype=container", "Other"),
        ("GET", "/devstoreaccount1/c?restype=container", "Other"),
    ],
)
def test_classify(method: str, target: str, operation: str) -> None:
    assert classify(method, target) == operation


@pytest.mark.quick
def test_the_plugins_requests_are_told_apart_by_user_agent():
    from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import PLUGIN_USER_AGENT

    assert client_class(f"{PLUGIN_USER_AGENT} azsdk-python-storage-blob/12.31.1 Python/3.11.7") == "plugin"
    assert client_class("azsdk-python-storage-blob/12.31.1 Python/3.11.7") == "other"
    assert client_class("Python-urllib/3.11") == "other" and client_class(None) == "other"
    metrics = Metrics()
    metrics.record_storage("GetBlob", 200, 0, 5, "plugin")
    metrics.record_storage("GetBlob", 200, 0, 7)
    snapshot = metrics.snapshot()
    assert snapshot["storage"]["GetBlob"]["count"] == 2
    assert snapshot["storagePlugin"]["GetBlob"]["responseBytes"] == 5
    assert snapshot["storageOther"]["GetBlob"]["responseBytes"] == 7
