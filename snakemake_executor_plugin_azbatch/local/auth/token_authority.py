"""A small Microsoft Entra ID look-alike on loopback (HTTPS): the token authority of `azbatch-local --entra`.

It knows one tenant with one service principal (client id + secret) and one managed identity, and serves what
azure-identity / MSAL fetch when `AZURE_AUTHORITY_HOST` (or `authority=`) points at it:

- `GET /{tenant}/v2.0/.well-known/openid-configuration` (and the v1 path): OpenID metadata with the token and key
  endpoints (MSAL's "tenant discovery");
- `GET /common/discovery/instance`: instance discovery, for clients given this URL as their discovery endpoint.
  MSAL asks login.microsoftonline.com to validate an authority host it does not know, so clients must turn that
  off for a loopback authority (azure-identity: `disable_instance_discovery=True`; the plugin does it);
- `GET /{tenant}/discovery/v2.0/keys`: the signing keys (JWKS);
- `POST /{tenant}/oauth2/v2.0/token` (scope `RESOURCE/.default`) and `/{tenant}/oauth2/token` (v1, `resource=`):
  the client-credentials grant;
- managed identity: `GET /msi/token` as App Service's identity endpoint (azure-identity uses it when
  `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set) and `GET /metadata/identity/oauth2/token` as IMDS (when
  `AZURE_POD_IDENTITY_AUTHORITY_HOST` points here).

Tokens are RS256 JWTs shaped like Entra's v1.0 access tokens for resource APIs (iss `https://sts.windows.net/
TENANT/`, aud = the requested resource exactly as asked, tid, appid, oid, iat/nbf/exp), valid `token_lifetime`
seconds. Errors carry Entra's AADSTS codes (7000215 wrong secret, 700016 unknown client, 90002 unknown tenant,
500011 unknown resource, 1002012 scope without /.default, 70003 unsupported grant) in Entra's error JSON shape.
What is not modelled: users, consent, role assignments (every principal of the tenant may use every resource),
certificates and federated credentials.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .bearer_auth import BATCH_AUDIENCE, STORAGE_AUDIENCE
from .tls import TlsFiles, serve_tls

log = logging.getLogger(__name__)

# Fixed development identities, documented in the README like the development account key: not secrets, the
# authority only listens on loopback.
DEV_TENANT_ID = "10ca1ba7-0000-4000-8000-000000000001"
DEV_CLIENT_ID = "10ca1ba7-0000-4000-8000-00000000c11e"
DEV_CLIENT_SECRET = "localbatch-dev-client-secret-not-a-secret"
DEV_MANAGED_IDENTITY_ID = "10ca1ba7-0000-4000-8000-0000000000a1"
MANAGEMENT_AUDIENCE = "https://management.azure.com/"
DEFAULT_TOKEN_LIFETIME = 3600
_MAX_FORM_BYTES = 64 * 1024


@dataclass
class EntraConfig:
    tenant_id: str = DEV_TENANT_ID
    client_id: str = DEV_CLIENT_ID
    client_secret: str = DEV_CLIENT_SECRET
    managed_identity_id: str = DEV_MANAGED_IDENTITY_ID
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME  # seconds
    # The audience the Batch API accepts; another cloud's (e.g. https://batch.chinacloudapi.cn/) rehearses an
    # account whose tokens must come from a different resource than the client asked for.
    batch_audience: str = BATCH_AUDIENCE

    def resources(self) -> set[str]:
        """Resource identifiers the tenant knows, each with and without its trailing slash."""
        known = {BATCH_AUDIENCE, STORAGE_AUDIENCE, MANAGEMENT_AUDIENCE, self.batch_audience}
        return {name.rstrip("/") for name in known} | {name.rstrip("/") + "/" for name in known}


class OAuthError(Exception):
    """An Entra-style error answer: HTTP status, OAuth error, AADSTS code and a description."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class TokenAuthority:
    """The authority's state (signing key, counters) and its HTTPS server on a free loopback port."""

    def __init__(self, config: EntraConfig, tls: TlsFiles, host: str = "127.0.0.1") -> None:
        self.config = config
        self.tls = tls
        self.host = host
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:15]).decode("ascii")
        self.public_keys = {self.kid: self._key.public_key()}
        self.identity_header = secrets.token_urlsafe(24)  # like App Service's IDENTITY_HEADER, new at each start
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "TokenAuthority not started"
        return f"https://{self.host}:{self._server.server_address[1]}"

    def start(self) -> "TokenAuthority":
        handler = type("BoundAuthorityHandler", (_AuthorityHandler,), {"authority": self})
        server = http.server.ThreadingHTTPServer((self.host, 0), handler)
        server.daemon_threads = True
        serve_tls(server, self.tls.server_context())
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="token-authority", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def env(self) -> dict[str, str]:
        """azure-identity's service-principal variables, and the managed-identity endpoint under our own names
        (IDENTITY_ENDPOINT itself would make other tools believe they run in App Service)."""
        return {
            "AZURE_TENANT_ID": self.config.tenant_id,
            "AZURE_CLIENT_ID": self.config.client_id,
            "AZURE_CLIENT_SECRET": self.config.client_secret,
            "AZURE_AUTHORITY_HOST": self.url,
            "AZBATCH_LOCAL_IDENTITY_ENDPOINT": self.url + "/msi/token",
            "AZBATCH_LOCAL_IDENTITY_HEADER": self.identity_header,
        }

    def stats(self) -> dict[str, int]:
        """Counts: `token:AUDIENCE` per issued token, `error:AADSTS` per refusal."""
        with self._lock:
            return dict(self._counts)

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # -- tokens -----------------------------------------------------------------------------------------------

    def issue(self, resource: str, client_id: str, *, tenant_id: str | None = None, lifetime: int | None = None,
              now: float | None = None) -> str:
        """A signed access token for `resource` (also for tests that need a token of another tenant or an expired
        one: pass `tenant_id`, or `now` in the past)."""
        tenant = tenant_id or self.config.tenant_id
        issued = int(time.time() if now is None else now)
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": issued,
            "nbf": issued,
            "exp": issued + (self.config.token_lifetime if lifetime is None else lifetime),
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{client_id}")),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{client_id}")),
            "tid": tenant,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        self.count(f"token:{resource}")
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def resource_of(self, scope: str | None, resource: str | None) -> str:
        """The resource a client-credentials request asks for (v2.0: one `RESOURCE/.default` scope; v1.0: a
        `resource` parameter)."""
        if resource is None:
            scopes = (scope or "").split()
            if len(scopes) != 1 or not scopes[0].endswith("/.default"):
                raise OAuthError(400, "invalid_scope", 1002012,
                                 f"The scope '{(scope or '')[:200]}' is not valid: client credential requests take "
                                 "exactly one scope, the resource identifier followed by /.default.")
            resource = scopes[0][: -len("/.default")]
        if resource not in self.config.resources():
            raise OAuthError(400, "invalid_resource", 500011,
                             f"The resource '{resource[:200]}' is not known in tenant '{self.config.tenant_id}'.")
        return resource

    def client_credentials(self, tenant: str, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The token response for a client-credentials request, or OAuthError."""
        self._check_tenant(tenant)
        if form.get("grant_type") != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", 70003,
                             f"The grant type '{form.get('grant_type', '')[:64]}' is not supported here; only "
                             "client_credentials is.")
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret"))
        if client_id != self.config.client_id:
            raise OAuthError(400, "unauthorized_client", 700016,
                             f"Application '{client_id[:64]}' was not found in tenant '{self.config.tenant_id}'.")
        if not secret:
            raise OAuthError(401, "invalid_client", 7000216,
                             "A client_secret is required for the client_credentials grant.")
        if not secrets.compare_digest(secret.encode(), self.config.client_secret.encode()):
            raise OAuthError(401, "invalid_client", 7000215,
                             f"Invalid client secret provided for application '{client_id}'.")
        resource = self.resource_of(form.get("scope"), form.get("resource"))
        lifetime = self.config.token_lifetime
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.issue(resource, client_id),
        }

    def _check_tenant(self, tenant: str) -> None:
        if tenant.lower() != self.config.tenant_id.lower():
            raise OAuthError(400, "invalid_request", 90002, f"Tenant '{tenant[:64]}' not found.")

    # -- documents --------------------------------------------------------------------------------------------

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        self._check_tenant(tenant)
        base = f"{self.url}/{self.config.tenant_id}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": None,
            "cloud_instance_name": self.host,
        }

    def instance_discovery(self) -> dict[str, Any]:
        host = urlsplit(self.url).netloc
        return {
            "tenant_discovery_endpoint": f"{self.url}/{self.config.tenant_id}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}]}

    def managed_identity_token(self, resource: str, *, expires_in_as: str) -> dict[str, Any]:
        """App Service (`expires_on` only) and IMDS (`expires_in` too) token answers, as strings like theirs."""
        resource = self.resource_of(None, resource)
        now = int(time.time())
        lifetime = self.config.token_lifetime
        body = {
            "access_token": self.issue(resource, self.config.managed_identity_id, now=now),
            "expires_on": str(now + lifetime),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.config.managed_identity_id,
        }
        if expires_in_as == "imds":
            body.update(expires_in=str(lifetime), ext_expires_in=str(lifetime), not_before=str(now))
        return body


class _AuthorityHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    authority: TokenAuthority

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — base class signature
        log.debug("token authority: %s", format % args)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _oauth_error(self, exc: OAuthError) -> None:
        self.authority.count(f"error:AADSTS{exc.code}")
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        self._json(exc.status, {
            "error": exc.error,
            "error_description": f"AADSTS{exc.code}: {exc.description} Trace ID: {trace} "
                                 f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [exc.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
        })

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        parts = [p for p in path.split("/") if p]
        authority = self.authority
        try:
            if parts in (["common", "discovery", "instance"], ["organizations", "discovery", "instance"]):
                return self._json(200, authority.instance_discovery())
            if len(parts) >= 3 and parts[-2:] == [".well-known", "openid-configuration"]:
                return self._json(200, authority.openid_configuration(parts[0]))
            if len(parts) >= 3 and parts[1] == "discovery" and parts[-1] == "keys":
                return self._json(200, authority.jwks())
            if parts == ["msi", "token"]:
                return self._managed_identity(params, self.headers.get("X-IDENTITY-HEADER") == authority.identity_header, "app-service")
            if parts == ["metadata", "identity", "oauth2", "token"]:
                return self._managed_identity(params, (self.headers.get("Metadata") or "").lower() == "true", "imds")
        except OAuthError as exc:
            return self._oauth_error(exc)
        self._json(404, {"error": "not_found", "error_description": f"No endpoint at {path[:200]}."})

    def _managed_identity(self, params: dict[str, str], authorized: bool, kind: str) -> None:
        if not authorized:
            self.authority.count(f"error:{kind}-header")
            header = "X-IDENTITY-HEADER" if kind == "app-service" else "Metadata: true"
            return self._json(401 if kind == "app-service" else 400,
                              {"statusCode": 401, "message": f"The {header} header is missing or wrong."})
        try:
            body = self.authority.managed_identity_token(params.get("resource", ""), expires_in_as=kind)
        except OAuthError as exc:
            return self._json(400, {"statusCode": 400, "message": f"AADSTS{exc.code}: {exc.description}",
                                    "error": exc.error, "error_description": f"AADSTS{exc.code}: {exc.description}"})
        self._json(200, body)

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        parts = [p for p in path.split("/") if p]
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_FORM_BYTES:
            self.close_connection = True
            return self._json(413, {"error": "invalid_request", "error_description": "The request is too large."})
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode("utf-8", "replace")).items()}
        if len(parts) not in (3, 4) or parts[1] != "oauth2" or parts[-1] != "token":
            return self._json(404, {"error": "not_found", "error_description": f"No endpoint at {path[:200]}."})
        try:
            self._json(200, self.authority.client_credentials(parts[0], form, self._basic_auth()))
        except OAuthError as exc:
            self._oauth_error(exc)

    def _basic_auth(self) -> tuple[str, str] | None:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            client_id, _, secret = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except ValueError:
            return None
        return client_id, secret
