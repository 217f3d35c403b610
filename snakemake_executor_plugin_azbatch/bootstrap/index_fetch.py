"""Runs on the node (python3 -c, standard library only): download a file from the package index and check its
sha256, or probe whether the index answers; on failure print ONE line naming what failed (certificate, DNS,
connection refused, proxy refusal, no route, timeout, HTTP status, wrong hash) and what to do, and exit 3.

    python3 -c "$SOURCE" fetch URL SHA256 DEST
    python3 -c "$SOURCE" probe URL

urllib uses the node's trust store (or SSL_CERT_FILE) and the proxies of the environment (HTTPS_PROXY, NO_PROXY).
Also imported by the plugin (node_script embeds this file's source; tests call `describe`).
"""

import errno
import hashlib
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

FAILED_EXIT = 3  # node_script.FAILED_EXIT
OFFLINE = "or use --azbatch-bootstrap offline"
CA_HINT = ("a TLS-inspecting proxy? give the nodes its CA: --azbatch-node-ca-bundle PATH, or a start task that adds "
           "it to the node's trust store")


def _proxy(url):
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def open_url(url, timeout):
    """urlopen with the proxies of the environment as it is now (urlopen's shared opener keeps the first ones)."""
    return urllib.request.build_opener().open(url, timeout=timeout)


def describe(error, url):
    """One line: what went wrong reaching `url` and what to do (`error` is what urlopen raised)."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = _proxy(url)
    via = f" (through the proxy {proxy})" if proxy else ""
    if isinstance(error, urllib.error.HTTPError):
        if error.code == 407:
            return f"the proxy {proxy} asks for authentication (HTTP 407); put the credentials into HTTPS_PROXY"
        return f"{host} answered HTTP {error.code} {error.reason} for {url}; the index may be down or blocked{via}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, ssl.SSLCertVerificationError):
        detail = reason.verify_message or str(reason)
        return f"the TLS certificate of {host} is not trusted ({detail}){via}: {CA_HINT}"
    if isinstance(reason, ssl.SSLError):
        return f"the TLS handshake with {host} failed ({reason.reason or reason}){via}: {CA_HINT}"
    if isinstance(reason, socket.gaierror):
        what = f"the proxy's name in {proxy}" if proxy else host
        return f"cannot resolve {what} (DNS: {reason.strerror}); give the nodes name resolution and internet, {OFFLINE}"
    if isinstance(reason, ConnectionRefusedError):
        what = f"the proxy {proxy}" if proxy else f"{host}:{port}"
        return (f"the connection to {what} was refused; check the nodes' firewall and HTTPS_PROXY, {OFFLINE}")
    if isinstance(reason, OSError) and str(reason).startswith("Tunnel connection failed"):
        return (f"the proxy {proxy} refused to connect to {host} ({str(reason).split(': ', 1)[-1]}); allow {host} on "
                f"the proxy, {OFFLINE}")
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return (f"no route to {host}{via} ({reason.strerror}); give the pool's subnet outbound internet (NAT gateway "
                f"or proxy), {OFFLINE}")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"connecting to {host}{via} timed out; a firewall dropping outbound traffic? allow it, {OFFLINE}"
    return f"reaching {url}{via} failed ({type(reason).__name__}: {reason}); {OFFLINE}"


def fetch(url, sha256, dest, timeout=60):
    """Download `url` to `dest` (via dest.part) if its sha256 is `sha256`; the failure line, or None."""
    digest = hashlib.sha256()
    try:
        with open_url(url, timeout) as answer, open(dest + ".part", "wb") as out:
            for chunk in iter(lambda: answer.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        return f"downloading {url} failed: {describe(e, url)}"
    if digest.hexdigest() != sha256:
        os.remove(dest + ".part")
        return (f"{url} has sha256 {digest.hexdigest()}, not the pinned {sha256}: something between the node and the "
                f"index changed it; check the nodes' proxy, {OFFLINE}")
    os.replace(dest + ".part", dest)
    return None


def probe(url, timeout=30):
    """Why the index cannot be reached (one line), or None when it answers."""
    try:
        open_url(url, timeout).close()
    except (urllib.error.URLError, OSError) as e:
        return f"the package index is not reachable: {describe(e, url)}"
    return None


def main(argv):
    if argv[:1] == ["fetch"] and len(argv) == 4:
        failure = fetch(*argv[1:])
    elif argv[:1] == ["probe"] and len(argv) == 2:
        failure = probe(argv[1])
    else:
        failure = "usage: fetch URL SHA256 DEST | probe URL"
    if failure:
        print(f"azbatch bootstrap on node {os.environ.get('AZ_BATCH_NODE_ID', '?')}: {failure}", file=sys.stderr)
        return FAILED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
