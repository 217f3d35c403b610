"""Batch Shared Key authentication: verify a received request's signature exactly as Batch clients compute it.

The string to sign (azure-batch 15.x `BatchSharedKeyAuthPolicy`, and the track-1 `batch_auth.SharedKeyAuth` the
Azure CLI uses) is

    METHOD\\n
    content-encoding\\n content-language\\n content-length\\n content-md5\\n content-type\\n date\\n
    if-modified-since\\n if-match\\n if-none-match\\n if-unmodified-since\\n range\\n
    ocp-name:value\\n ...            (headers whose name contains "ocp-", lower-cased, sorted)
    /ACCOUNT/PATH                    (the path as sent, percent-encoding preserved)
    \\nname:value ...                (query parameters sorted by name, first decoded value, empty ones skipped)

signed with HMAC-SHA256 under the base64-decoded account key. Clients differ only in small details, so the verifier
accepts the few canonical forms they produce: the 15.x client signs content-length "0" for a body-less non-GET/HEAD
request; the track-1 client signs the path with %2F and %5C turned into "/".
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlsplit

# A signed request is accepted this long around its ocp-date / Date, as Azure's Shared Key services do; an older
# captured request cannot be replayed.
MAX_CLOCK_SKEW = timedelta(minutes=15)

SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


class AuthenticationError(Exception):
    """The request is not authenticated. `detail` is safe to return (never contains a key or signature);
    `status` is 403 for Shared Key failures and 401 for bearer tokens (refused, or not enabled)."""

    def __init__(self, detail: str, status: int = 403):
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    raw_path: str  # as received, percent-encoding preserved, no query
    raw_query: str
    headers: tuple[tuple[str, str], ...]  # (name as sent, value), in arrival order


def decode_key(account_key: str) -> bytes:
    try:
        return base64.b64decode(account_key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Batch account key is not valid base64; pass the key exactly as issued") from None


def string_to_sign(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    account_name: str,
    *,
    content_length: str | None = None,
) -> str:
    """Canonical string for one request, as the azure-batch 15.x client builds it. `content_length` overrides the
    signed content-length (for clients whose transport adds or drops a zero length after signing)."""
    headers = list(headers)
    by_name = {name.lower(): str(value) for name, value in headers if value}
    if method.upper() not in ("GET", "HEAD") and "content-length" not in by_name:
        by_name["content-length"] = "0"
    if content_length is not None:
        by_name["content-length"] = content_length
    text = method + "\n" + "\n".join(by_name.get(name, "") for name in SIGNED_HEADERS) + "\n"
    ocp = sorted((name.lower(), str(value)) for name, value in headers if "ocp-" in name and value)
    text += "".join(f"{name}:{value}\n" for name, value in ocp)
    text += f"/{account_name}{raw_path}"
    query = parse_qs(raw_query)
    for name in sorted(query):
        value = query[name][0]
        if value:
            text += f"\n{name}:{value}"
    return text


def signature(text: str, key: bytes) -> str:
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def authorization_header(
    method: str, url: str, headers: Mapping[str, str], account_name: str, account_key: str
) -> str:
    """Client side: the `Authorization` value for a request to `url` with `headers` (which must already hold
    `ocp-date` and, for bodies, `Content-Length` / `Content-Type`). For raw HTTP calls in tests and tools."""
    parts = urlsplit(url)
    text = string_to_sign(method, parts.path, parts.query, headers.items(), account_name)
    return f"SharedKey {account_name}:{signature(text, decode_key(account_key))}"


class SharedKeyVerifier:
    """Checks `Authorization: SharedKey ACCOUNT:SIGNATURE` against one account name and key."""

    def __init__(
        self, account_name: str, account_key: str, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    ):
        self.account_name = account_name
        self._key = decode_key(account_key)
        self._now = now

    def verify(self, request: ReceivedRequest) -> None:
        """Return when the request is signed with this account's key; raise AuthenticationError otherwise."""
        values = [value for name, value in request.headers if name.lower() == "authorization"]
        if not values:
            raise AuthenticationError(
                "The request has no Authorization header. Sign it with Shared Key using the local account name and "
                "key (see `azbatch-local serve` output)."
            )
        if len(values) > 1:
            raise AuthenticationError("The request has more than one Authorization header.")
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() == "bearer":
            raise AuthenticationError(
                "Bearer tokens (Microsoft Entra ID) are accepted only when the local Batch service runs with "
                "--entra; use Shared Key with the local account name and key.",
                status=401,
            )
        if scheme != "SharedKey":
            raise AuthenticationError(
                f"Authorization scheme {scheme[:32]!r} is not supported; use 'SharedKey ACCOUNT:SIGNATURE'."
            )
        account, sep, presented = credentials.strip().rpartition(":")
        if not sep or not account or not presented:
            raise AuthenticationError("The SharedKey Authorization header must look like 'SharedKey ACCOUNT:SIGNATURE'.")
        if account.lower() != self.account_name.lower():
            raise AuthenticationError(
                f"Account {account[:64]!r} does not exist on this server; the local account is {self.account_name!r}."
            )
        presented_bytes = presented.encode("utf-8", "replace")
        for candidate in self._candidate_strings(request, account):
            if hmac.compare_digest(signature(candidate, self._key).encode("ascii"), presented_bytes):
                self._check_date(request)
                return
        raise AuthenticationError(
            "The MAC signature found in the HTTP request is not the same as any computed signature. Check that the "
            "account key matches the server's and that the request is not altered after signing."
        )

    def _check_date(self, request: ReceivedRequest) -> None:
        dates = {name.lower(): value for name, value in request.headers if name.lower() in ("ocp-date", "date")}
        text = dates.get("ocp-date") or dates.get("date")
        if not text:
            raise AuthenticationError("The request has no ocp-date (or Date) header; sign it with the current time.")
        try:
            sent = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise AuthenticationError(f"The ocp-date {text[:40]!r} is not an RFC 1123 date.") from None
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=timezone.utc)
        skew = abs(self._now() - sent)
        if skew > MAX_CLOCK_SKEW:
            raise AuthenticationError(
                f"The request's ocp-date is {int(skew.total_seconds())} s away from the server's clock (at most "
                f"{int(MAX_CLOCK_SKEW.total_seconds())} s allowed); check the client's clock."
            )

    @staticmethod
    def _candidate_strings(request: ReceivedRequest, account: str) -> list[str]:
        paths = [request.raw_path]
        track1_path = request.raw_path.replace("%5C", "/").replace("%2F", "/")
        decoded_path = unquote(request.raw_path)
        for path in (track1_path, decoded_path):
            if path not in paths:
                paths.append(path)
        # Shapes of the ocp- headers: as sent (clients match "ocp-" case-sensitively) or by any case.
        header_sets = [request.headers]
        lowered = tuple((name.lower(), value) for name, value in request.headers)
        if lowered != request.headers:
            header_sets.append(lowered)
        # An empty body may have been signed with content-length "0" or "" depending on the client's transport.
        received_length = next((v for n, v in request.headers if n.lower() == "content-length"), "")
        lengths: list[str | None] = [None, "0", ""] if received_length in ("", "0") else [None]
        candidates = []
        for headers in header_sets:
            for path in paths:
                for length in lengths:
                    text = string_to_sign(
                        request.method, path, request.raw_query, headers, account, content_length=length
                    )
                    if text not in candidates:
                        candidates.append(text)
        return candidates
