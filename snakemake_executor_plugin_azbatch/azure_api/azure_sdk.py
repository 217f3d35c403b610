"""How the plugin's calls through the Azure SDKs behave and read: retry settings, error text without secrets, enum
values. Shared by the Batch client and staging, so neither imports the other."""

from __future__ import annotations

import re
from importlib import metadata

from azure.core.exceptions import (
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)

def _version() -> str:
    try:
        return metadata.version("snakemake-executor-plugin-azbatch")
    except metadata.PackageNotFoundError:
        return "0"


# First in the User-Agent header of every Batch and Blob request the plugin sends (azure-core's `user_agent`
# option), so a service's logs, and the local service's metrics, tell the plugin's requests from the nodes'.
PLUGIN_USER_AGENT = f"snakemake-executor-plugin-azbatch/{_version()}"

_SIG_RE = re.compile(r"(sig=)[^&\s'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide SAS signatures in anything that may be logged."""
    return _SIG_RE.sub(r"\1REDACTED", str(text))


# Server errors that outlived the SDK's own retries: the service is down or overloaded, not refusing the request.
UNAVAILABLE_STATUSES = frozenset({500, 502, 503, 504})


# Client options: a connection attempt that gets no answer at all (a network that drops packets) fails after 20 s
# instead of the transport's default 300 s, so an outage is noticed (outage.py) within a minute, not after 20.
CONNECT_TIMEOUT_KWARGS = {"connection_timeout": 20}


def retry_kwargs() -> dict:
    # azure-core retries 408/429/500/502/503/504 and honours Retry-After. Its per-kind defaults stay: 3 retries each
    # for a refused or dropped connection and for a bad status (about 3 s with this back-off, unless Retry-After says
    # more); retry_total only caps their sum. After that outage.py takes over.
    return {"retry_total": 10, "retry_backoff_factor": 0.5, "retry_backoff_max": 30}


def preflight_kwargs(storage: bool = False) -> dict:
    """Per-request options for preflight checks: an unreachable endpoint is reported within seconds (a short
    connect timeout, short back-off) instead of after the run's ~90 s of retries. Storage's own retry policy
    waits 15 s and more between attempts and takes no back-off option, so there a refused connection is not
    retried at all."""
    if storage:
        return {"retry_total": 2, "retry_connect": 0, "connection_timeout": 5}
    return {"retry_total": 2, "retry_connect": 1, "retry_backoff_max": 2, "connection_timeout": 5}


def enum_text(value) -> str:
    """SDK enums print as 'batchpoolstate.active'; the wire value is what we compare."""
    return str(getattr(value, "value", value) or "").lower()


def error_code(e: Exception) -> str:
    """The service's error code ('JobExists', 'AuthenticationFailed', ...) or ''."""
    return getattr(getattr(e, "error", None), "code", None) or ""


def error_text(e: Exception) -> str:
    """One line: status, service error code and message; SAS signatures redacted."""
    if isinstance(e, HttpResponseError):
        message = getattr(getattr(e, "error", None), "message", None) or e.reason or ""
        return redact(f"{e.status_code} {error_code(e)} {message}".strip())
    return redact(f"{type(e).__name__}: {e}")


def unreachable(e: BaseException) -> bool:
    """The endpoint did not answer usefully even after the SDK's retries: no connection, a dropped one, a body cut
    short, or a server error (5xx). Such calls are worth repeating later (outage.py); anything else is an answer."""
    if isinstance(e, (ServiceRequestError, ServiceResponseError, IncompleteReadError)):
        return True
    return isinstance(e, HttpResponseError) and e.status_code in UNAVAILABLE_STATUSES


def short_reason(e: BaseException) -> str:
    """A few words on why a call failed, for a line that names the endpoint anyway: '503 ServerBusy',
    'connection refused', 'connection dropped', 'timed out'."""
    if isinstance(e, HttpResponseError) and e.status_code is not None:
        return f"{e.status_code} {error_code(e)}".strip()
    text = str(e).lower()
    for needle, words in (
        ("refused", "connection refused"), ("timed out", "timed out"), ("timeout", "timed out"),
        ("reset by peer", "connection reset"), ("aborted", "connection dropped"),
        ("without response", "connection dropped"), ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"), ("temporary failure in name resolution", "host name not found"),
    ):
        if needle in text:
            return words
    return redact(type(e).__name__)
