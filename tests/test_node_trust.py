"""Stock nodes on the host's network trust this machine's extra CAs (local/nodes/node_trust.py): which certificates count,
a node reaching a TLS server signed by such a CA (and failing without it), and `azbatch-local`'s one line about it,
which --no-node-host-cas turns off together with the trust."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.node_sandbox import IMAGE_DIR, Node, skip_unless, stock_image

from snakemake_executor_plugin_azbatch.local.nodes import isolation, node_trust
from snakemake_executor_plugin_azbatch.local.service_config import ServiceConfig
from snakemake_executor_plugin_azbatch.local.auth.tls import prepare_tls, serve_tls

CLI = [sys.executable, "-m", "snakemake_executor_plugin_azbatch.local.cli"]


def test_extra_cas_are_the_pem_certificates_of_the_anchor_directories(tmp_path):
    tls = prepare_tls(tmp_path / "tls")
    pem = tls.ca.read_text().strip()
    anchors = tmp_path / "anchors"
    (anchors / "sub").mkdir(parents=True)
    (anchors / "proxy.crt").write_text(pem + "\n")
    (anchors / "sub" / "again.pem").write_text(pem + "\n")  # the same CA twice: once in the node
    (anchors / "notes.crt").write_text("not a certificate\n")
    (anchors / "readme.txt").write_text(pem)  # not a certificate file name
    cas = node_trust.host_extra_cas((anchors, tmp_path / "missing"))
    assert cas.files == (anchors / "proxy.crt", anchors / "sub" / "again.pem") and cas.certificates == (pem,)
    stock = ServiceConfig(root=tmp_path, node_image=tmp_path / "image")
    assert node_trust.node_cas(stock, (anchors,)) == cas
    for config in (ServiceConfig(root=tmp_path), ServiceConfig(root=tmp_path, node_image=tmp_path, node_host_cas=False),
                   ServiceConfig(root=tmp_path, node_image=tmp_path, node_network="local-only")):
        assert node_trust.node_cas(config, (anchors,)) is None
    assert node_trust.node_cas(stock, (tmp_path / "missing",)) is None


@pytest.fixture
def tls_server(tmp_path):
    """A loopback HTTPS server whose certificate a CA of its own signed; (url, that CA's PEM)."""
    tls = prepare_tls(tmp_path / "tls")

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    serve_tls(httpd, tls.server_context())
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/", tls.ca.read_text().strip()
    httpd.shutdown()
    httpd.server_close()


def test_a_host_network_node_trusts_the_cas_it_was_given_and_only_those(tmp_path, tls_server):
    image = stock_image()
    skip_unless(isolation.missing_packages())
    url, ca = tls_server
    fetch = f"python3 -c \"import urllib.request; print(urllib.request.urlopen('{url}').read().decode())\" 2>&1"
    trusting = Node(tmp_path / "a", image, "tvm-a", trusted_cas=[ca])
    plain = Node(tmp_path / "b", image, "tvm-b")
    try:
        assert trusting.run(fetch).stdout.strip() == "hello"
        listed = trusting.run("cat /usr/local/share/ca-certificates/azbatch-local-host-1.crt").stdout
        assert listed.strip() == ca  # where update-ca-certificates finds it again
        assert "CERTIFICATE_VERIFY_FAILED" in plain.run(fetch).stdout
    finally:
        trusting.sandbox.stop()
        plain.sandbox.stop()
    assert ca not in (image.rootfs / "etc/ssl/certs/ca-certificates.crt").read_text()  # the image is untouched


def test_azbatch_local_says_so_in_one_line_and_the_option_turns_it_off(tmp_path):
    stock_image()
    skip_unless(isolation.missing_packages())
    cas = node_trust.host_extra_cas()
    if not cas.certificates:
        pytest.skip("this machine has no extra CA certificates in " + ", ".join(map(str, node_trust.ANCHOR_DIRS)))
    lines = {}
    for option in ("--node-host-cas", "--no-node-host-cas"):
        result = subprocess.run([*CLI, "run", "--root", str(tmp_path / option), "--pool", "p:1:1", "--node-image",
                                 str(IMAGE_DIR), option, "--", "true"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        lines[option] = [line for line in result.stderr.splitlines() if "CA certificate" in line]
    assert lines["--node-host-cas"] == [
        f"azbatch-local run: host-network nodes trust this machine's extra CA certificate(s) from "
        f"{', '.join(map(str, cas.files))}, as a TLS-inspecting network needs; --no-node-host-cas turns this off"
    ]
    assert lines["--no-node-host-cas"] == []
