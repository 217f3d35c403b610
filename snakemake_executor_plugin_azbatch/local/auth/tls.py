"""TLS for `azbatch-local --https`: a development CA, a loopback server certificate, and TLS on socketserver servers.

The CA (`ROOT/ca.pem`, key in `ROOT/tls/`) is kept across restarts so a user may trust it once; the server
certificate (for 127.0.0.1, ::1 and localhost) is issued anew at every start. `ROOT/ca-bundle.pem` is the CA plus
the roots already trusted (the bundle `REQUESTS_CA_BUNDLE` / `SSL_CERT_FILE` name, else certifi's), so pointing
those variables at it keeps public HTTPS (PyPI, real Azure) working in the same shell. Certificates carry the extensions Python's strict X.509
verification wants (basic constraints, key usage, subject and authority key identifiers).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socketserver
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
BUNDLE_FILE = "ca-bundle.pem"
TLS_DIR = "tls"
CA_NAME = "azbatch-local development CA"
_CA_DAYS = 3650
_SERVER_DAYS = 397  # what public CAs may issue at most; the certificate is re-issued at every start anyway
_CA_RENEW_BEFORE = datetime.timedelta(days=30)
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the development CA alone (PEM)
    bundle: Path  # the CA plus public roots: what clients are told to trust
    cert: Path  # the server certificate (PEM)
    key: Path  # its private key (PEM, owner-only)

    def env(self) -> dict[str, str]:
        """The variables that make Python `requests` (hence azure-core, azure-identity and the Azure CLI), the
        `ssl` module (SSL_CERT_FILE) and curl trust the local service."""
        bundle = str(self.bundle)
        return {
            "REQUESTS_CA_BUNDLE": bundle,
            "SSL_CERT_FILE": bundle,
            "CURL_CA_BUNDLE": bundle,
            "AZBATCH_LOCAL_CA_FILE": str(self.ca),
        }

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies the local servers (for the service's own connections, e.g. proxy → Azurite)."""
        return ssl.create_default_context(cafile=str(self.ca))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The stored CA if it is still valid for a while, else None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc - _now() < _CA_RENEW_BEFORE:
        return None
    return cert, key


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in LOOPBACK_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOOPBACK_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _public_roots() -> bytes:
    """The roots this environment trusts already: the bundle its variables name (a company proxy's CA may be in
    it), else certifi's, else none."""
    candidates = [os.environ.get(name) for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")]
    try:
        import certifi

        candidates.append(certifi.where())
    except ImportError:
        pass
    for candidate in candidates:
        if candidate:
            try:
                return Path(candidate).read_bytes()
            except OSError:
                continue
    return b""


def prepare_tls(root: Path) -> TlsFiles:
    """Create (or reuse) the CA under `root` and issue a fresh server certificate; returns the file paths."""
    tls_dir = root / TLS_DIR
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_path, ca_key_path = root / CA_FILE, tls_dir / "ca-key.pem"
    loaded = _load_ca(ca_path, ca_key_path)
    if loaded is None:
        ca, ca_key = _new_ca()
        _write_private(ca_key_path, _pem_key(ca_key))
        ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    else:
        ca, ca_key = loaded
    cert, key = _server_cert(ca, ca_key)
    files = TlsFiles(ca=ca_path, bundle=root / BUNDLE_FILE, cert=tls_dir / "server.pem", key=tls_dir / "server-key.pem")
    _write_private(files.key, _pem_key(key))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM) + b"\n" + _public_roots())
    return files


def serve_tls(server: socketserver.BaseServer, context: ssl.SSLContext) -> None:
    """Make a bound socketserver speak TLS. Handshakes happen on the first read in each connection's own thread
    (not in the accept loop), so a slow or plain-HTTP client cannot hold up the others; their handshake errors are
    dropped instead of logged as server errors."""
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)  # type: ignore[attr-defined]
    report = server.handle_error

    def handle_error(request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            return
        report(request, client_address)  # type: ignore[arg-type]

    server.handle_error = handle_error  # type: ignore[method-assign]
