"""Microsoft Entra ID bearer tokens at the local Batch API and the blob proxy: verify signature, lifetime, tenant and
audience, as a Batch account (or storage account) with Entra ID enabled does.

Batch accepts tokens whose audience is exactly `https://batch.core.windows.net/` — the resource of the scope
`https://batch.core.windows.net//.default` in Batch's OpenAPI spec — and answers any failure with 401
`AuthenticationFailed` and an `AuthenticationErrorDetail` value (a token for `https://batch.core.windows.net`,
without the slash, is refused like that on Azure). Storage accepts `https://storage.azure.com` (and the account's
own blob URL) and answers 403 `AuthenticationFailed` with an XML `AuthenticationErrorDetail`.

Stricter than Azure on purpose: no clock-skew leeway (services usually allow a few minutes), so an expired token is
refused the second it expires and token refresh is really exercised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .shared_key import AuthenticationError, ReceivedRequest, SharedKeyVerifier

BATCH_AUDIENCE = "https://batch.core.windows.net/"
STORAGE_AUDIENCE = "https://storage.azure.com"


def storage_audiences(account_name: str) -> tuple[str, ...]:
    """What Azure Storage accepts as the audience of a token for `account_name`."""
    account_url = f"https://{account_name}.blob.core.windows.net"
    return (STORAGE_AUDIENCE, STORAGE_AUDIENCE + "/", account_url, account_url + "/")


def issuers(tenant_id: str) -> tuple[str, ...]:
    """Entra ID's issuers for a tenant: v1.0 tokens (what resource APIs like Batch and Storage get by default) and
    v2.0 tokens."""
    return (f"https://sts.windows.net/{tenant_id}/", f"https://login.microsoftonline.com/{tenant_id}/v2.0")


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class BearerVerifier:
    """Checks `Authorization: Bearer JWT` for one tenant and a set of accepted audiences.

    `keys` maps key ids (`kid`) to the authority's RSA public keys; it is read at every call, so keys added later
    (rotation) are seen. Failures raise AuthenticationError(detail, status) with a detail that names what is wrong
    and never contains the token."""

    def __init__(
        self,
        keys: Mapping[str, RSAPublicKey],
        tenant_id: str,
        audiences: Iterable[str],
        *,
        status: int = 401,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.tenant_id = tenant_id
        self.audiences = tuple(audiences)
        self.status = status
        self._now = now

    def _fail(self, detail: str) -> AuthenticationError:
        return AuthenticationError(detail, status=self.status)

    def claims(self, token: str) -> dict[str, Any]:
        """The token's claims when it is valid here; AuthenticationError otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._fail("The bearer token is not a well-formed JSON Web Token.") from None
        key = self.keys.get(str(header.get("kid", "")))
        if key is None or header.get("alg") != "RS256":
            raise self._fail(
                "The bearer token was not signed by a key of this account's Microsoft Entra tenant (unknown key id); "
                "get a token from the tenant's authority."
            )
        try:
            claims = jwt.decode(
                token, key, algorithms=["RS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                         "verify_iss": False},
            )
        except jwt.InvalidSignatureError:
            raise self._fail("The bearer token's signature is not valid.") from None
        except jwt.PyJWTError:
            raise self._fail("The bearer token is not a well-formed JSON Web Token.") from None
        self._check_lifetime(claims)
        self._check_tenant(claims)
        self._check_audience(claims)
        return claims

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        now = self._now()
        try:
            expires, not_before = float(claims["exp"]), float(claims.get("nbf", 0))
        except (KeyError, TypeError, ValueError):
            raise self._fail("The bearer token has no valid 'exp' (expiry) claim.") from None
        if now >= expires:
            raise self._fail(
                f"The bearer token expired at {_utc(expires)} (server time {_utc(now)}); request a new token."
            )
        if now < not_before:
            raise self._fail(f"The bearer token is not valid before {_utc(not_before)} (server time {_utc(now)}).")

    def _check_tenant(self, claims: dict[str, Any]) -> None:
        tenant = str(claims.get("tid", ""))
        if tenant.lower() != self.tenant_id.lower():
            raise self._fail(
                f"The bearer token was issued for tenant '{tenant[:64]}', but this account belongs to tenant "
                f"'{self.tenant_id}'; sign in to that tenant."
            )
        if str(claims.get("iss", "")) not in issuers(self.tenant_id):
            raise self._fail(f"The bearer token's issuer '{str(claims.get('iss'))[:100]}' is not this tenant's.")

    def _check_audience(self, claims: dict[str, Any]) -> None:
        audience = claims.get("aud")
        if audience not in self.audiences:
            raise self._fail(
                f"The bearer token's audience '{str(audience)[:100]}' is not accepted here; it must be "
                f"'{self.audiences[0]}' exactly, including any trailing slash."
            )


def bearer_token(authorization: str | None) -> str | None:
    """The token of a `Bearer` Authorization value, else None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class BatchAuthenticator:
    """Shared Key or bearer token, as a Batch account that allows both (the `verify` interface of
    SharedKeyVerifier, so the HTTP layer uses either)."""

    def __init__(self, shared_key: SharedKeyVerifier, bearer: BearerVerifier) -> None:
        self.shared_key = shared_key
        self.bearer = bearer

    def verify(self, request: ReceivedRequest) -> None:
        values = [value for name, value in request.headers if name.lower() == "authorization"]
        token = bearer_token(values[0]) if len(values) == 1 else None
        if token is None:
            self.shared_key.verify(request)
        else:
            self.bearer.claims(token)


def storage_bearer_check(verifier: BearerVerifier) -> Callable[[str | None], str | None]:
    """For the blob proxy: given a request's Authorization value, the reason a bearer token is refused, or None
    (no bearer token, or a valid one). Azurite's own OAuth check skips the signature and the tenant."""

    def check(authorization: str | None) -> str | None:
        token = bearer_token(authorization)
        if token is None:
            return None
        try:
            verifier.claims(token)
        except AuthenticationError as exc:
            return exc.detail
        return None

    return check
