"""The node's download from the package index (bootstrap/index_fetch.py) and the one line it prints when the index
cannot be reached: every failure is a real one made on loopback (a TLS server whose CA the client does not trust, a
closed port, a proxy that refuses CONNECT, a name under .invalid, a network namespace without routes), never
outside traffic. Also the preparation script's uv download failing that way, run for real in bash."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import pytest

from snakemake_executor_plugin_azbatch.bootstrap import index_fetch, node_script
from snakemake_executor_plugin_azbatch.local.auth.tls import prepare_tls, serve_tls

pytestmark = pytest.mark.quick
BODY = b"a wheel's bytes"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/uv.whl":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_CONNECT(self) -> None:  # a proxy that allows nothing
        self.send_error(403, "Forbidden by policy")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """A loopback HTTP server (index and refusing proxy in one); its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                 "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure(url: str) -> str:
    with pytest.raises((urllib.error.URLError, OSError)) as caught:
        index_fetch.open_url(url, timeout=10)
    return index_fetch.describe(caught.value, url)


def test_an_untrusted_certificate_is_named_with_the_ca_remedy(tmp_path, no_proxy_env):
    tls = prepare_tls(tmp_path)  # a CA of its own, which this machine does not trust
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    serve_tls(httpd, tls.server_context())
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        line = failure(f"https://127.0.0.1:{httpd.server_address[1]}/uv.whl")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert line.startswith("the TLS certificate of 127.0.0.1 is not trusted (")
    assert "TLS-inspecting proxy" in line and "--azbatch-node-ca-bundle" in line and "offline" not in line


def test_a_refused_connection_dns_failure_and_refusing_proxy_are_named(server, monkeypatch, no_proxy_env):
    port = closed_port()
    line = failure(f"http://127.0.0.1:{port}/simple/")
    assert line.startswith(f"the connection to 127.0.0.1:{port} was refused;") and "HTTPS_PROXY" in line

    line = failure("https://pypi.invalid/simple/")
    assert line.startswith("cannot resolve pypi.invalid (DNS: ") and "--azbatch-bootstrap offline" in line

    monkeypatch.setenv("https_proxy", server)  # CONNECT answered 403: the proxy is there and says no
    line = failure("https://pypi.invalid/simple/")
    assert line.startswith(f"the proxy {server} refused to connect to pypi.invalid (403 Forbidden by policy)")
    assert "allow pypi.invalid on the proxy" in line

    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
    assert failure("https://pypi.invalid/simple/").startswith(f"the connection to the proxy http://127.0.0.1:{port} was refused")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (util-linux)")
def test_no_route_is_named(no_proxy_env):
    """In a network namespace of its own (no interface up): the kernel has no route anywhere."""
    code = (f"import sys, urllib.request; sys.path.insert(0, {str(Path(index_fetch.__file__).parent)!r}); "
            "import index_fetch; print(index_fetch.probe('http://192.0.2.1/simple/'))")
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("the package index is not reachable: no route to 192.0.2.1 (Network is unreachable)")


def test_fetch_checks_the_sha256_and_http_errors_are_named(server, tmp_path, no_proxy_env):
    dest = str(tmp_path / "uv.whl")
    assert index_fetch.fetch(f"{server}/uv.whl", hashlib.sha256(BODY).hexdigest(), dest) is None
    assert Path(dest).read_bytes() == BODY and not Path(dest + ".part").exists()
    os.remove(dest)
    line = index_fetch.fetch(f"{server}/uv.whl", "0" * 64, dest)
    assert line.startswith(f"{server}/uv.whl has sha256 {hashlib.sha256(BODY).hexdigest()}, not the pinned 000")
    assert not os.path.exists(dest) and not os.path.exists(dest + ".part")
    line = index_fetch.fetch(f"{server}/missing.whl", "0" * 64, dest)
    assert line == f"downloading {server}/missing.whl failed: 127.0.0.1 answered HTTP 404 Not Found for {server}/missing.whl; the index may be down or blocked"


def test_the_preparation_script_ends_with_that_line_when_uv_cannot_be_fetched(tmp_path):
    """A node with python3 (no Snakemake) whose proxy refuses connections: one line, exit code 3, no install."""
    python3 = shutil.which("python3", path="/usr/bin:/bin")
    probe = subprocess.run([python3 or "false", "-c", "import sys, snakemake; sys.exit(sys.version_info < (3, 11))"],
                           capture_output=True)
    if python3 is None or probe.returncode == 0 or b"No module named 'snakemake'" not in probe.stderr:
        pytest.skip("needs a system python3 >= 3.11 without Snakemake")
    port = closed_port()
    env = {"PATH": "/usr/bin:/bin", "AZ_BATCH_NODE_SHARED_DIR": str(tmp_path / "shared"), "AZ_BATCH_NODE_ID": "n1",
           "HTTPS_PROXY": f"http://127.0.0.1:{port}"}
    script = node_script.preparation_script([node_script.snakemake_part(node_script.SnakemakeInstall("9.1.0"))])
    (tmp_path / "wd").mkdir()
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path / "wd", env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == node_script.FAILED_EXIT, result.stderr
    (line,) = result.stderr.strip().splitlines()
    url = node_script.NODE_UV_WHEELS[os.uname().machine][0]
    assert line == (f"azbatch bootstrap on node n1: downloading {url} failed: the connection to the proxy "
                    f"http://127.0.0.1:{port} was refused; check the nodes' firewall and HTTPS_PROXY, or use "
                    "--azbatch-bootstrap offline")
    assert not list((tmp_path / "shared").glob("**/.complete"))
