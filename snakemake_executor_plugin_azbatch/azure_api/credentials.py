"""Microsoft Entra ID for the plugin: the credential used when no key is given, and one-line explanations of its
failures (which credential was tried, what is wrong, what to do) instead of a network error or a traceback.

The credential is azure-identity's `DefaultAzureCredential` (service principal from AZURE_* variables, workload or
managed identity, `az login`, ...). azure-core's bearer-token policy renews its token before it expires (and after
a 401), so long runs need nothing more. One adjustment: MSAL validates an authority host it does not know by asking
login.microsoftonline.com; for a loopback `AZURE_AUTHORITY_HOST` (the local service's token authority) that check
is turned off, so a local run stays offline.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from ..settings.executor_settings import SettingsError

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_AADSTS = re.compile(r"AADSTS(\d+)")
_DETAIL_XML = re.compile(r"<AuthenticationErrorDetail>(.*?)</AuthenticationErrorDetail>", re.S)
_HOST_IN_ERROR = re.compile(r"host='([^']+)', port=(\d+)")
_SECRET_VALUES = ("AZURE_CLIENT_SECRET", "IDENTITY_HEADER", "MSI_SECRET")

# What Entra ID's error codes mean for someone running the plugin, and what to do.
_AADSTS_ADVICE = {
    "7000215": "its client secret was rejected; set AZURE_CLIENT_SECRET to the secret's value (not its id)",
    "7000222": "its client secret has expired; create a new one (`az ad app credential reset`) and set "
    "AZURE_CLIENT_SECRET",
    "700016": "the application is not known in that tenant; check AZURE_CLIENT_ID and AZURE_TENANT_ID",
    "90002": "the tenant does not exist; check AZURE_TENANT_ID",
    "7000216": "no client secret was sent; set AZURE_CLIENT_SECRET",
    "500011": "the tenant does not know the requested resource; check that the account URL and "
    "AZURE_AUTHORITY_HOST belong to the same Azure cloud",
}


class CredentialError(SettingsError):
    """A credential or TLS-trust problem, explained in one line."""


def _is_loopback_url(url: str) -> bool:
    return (urlsplit(url if "://" in url else "https://" + url).hostname or "") in _LOOPBACK


def credential_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for DefaultAzureCredential."""
    environ = os.environ if environ is None else environ
    authority = environ.get("AZURE_AUTHORITY_HOST", "")
    return {"disable_instance_discovery": True} if authority and _is_loopback_url(authority) else {}


def default_credential(environ: Mapping[str, str] | None = None) -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(**credential_options(environ))


def credential_source(environ: Mapping[str, str] | None = None) -> str:
    """The credential DefaultAzureCredential tries first here, in words."""
    env = os.environ if environ is None else environ
    client, tenant = env.get("AZURE_CLIENT_ID"), env.get("AZURE_TENANT_ID")
    authority = env.get("AZURE_AUTHORITY_HOST")
    at = f" at {authority}" if authority else ""
    if client and tenant and (env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH")):
        return f"service principal {client} (AZURE_CLIENT_ID, tenant {tenant}{at})"
    if client and tenant and env.get("AZURE_FEDERATED_TOKEN_FILE"):
        return f"workload identity {client} (AZURE_CLIENT_ID, tenant {tenant}{at})"
    if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
        return "the managed identity (IDENTITY_ENDPOINT)"
    return "DefaultAzureCredential (managed identity, `az login`, ...)"


def _redact(text: str, environ: Mapping[str, str]) -> str:
    for name in _SECRET_VALUES:
        value = environ.get(name)
        if value:
            text = text.replace(value, "***")
    return re.sub(r"(sig=)[^&\s'\"]+", r"\1REDACTED", text)


def _authentication_detail(error: HttpResponseError) -> str:
    """AuthenticationErrorDetail of a Batch (JSON `values`) or Storage (XML) error body, or ''."""
    try:
        text = error.response.text() if error.response is not None else ""
    except Exception:  # an unread stream: no detail
        return ""
    match = _DETAIL_XML.search(text)
    if match:
        return match.group(1).strip()
    try:
        values = json.loads(text).get("values") or []
    except (ValueError, AttributeError):
        return ""
    return next((str(v.get("value", "")) for v in values if v.get("key") == "AuthenticationErrorDetail"), "")


def _token_refused(error: HttpResponseError, where: str, source: str) -> str | None:
    """A 401 from Batch, or Storage's 403 AuthenticationFailed, to a request that carried a bearer token."""
    code = getattr(getattr(error, "error", None), "code", None) or getattr(error, "error_code", None)
    if not (error.status_code == 401 or (error.status_code == 403 and str(code) == "AuthenticationFailed")):
        return None
    detail = _authentication_detail(error).rstrip(".")
    lowered = detail.lower()
    if "audience" in lowered:
        advice = "the token is for another resource: check that the account URL and AZURE_AUTHORITY_HOST " \
                 "belong to the same Azure cloud"
    elif "tenant" in lowered:
        advice = "sign in to the account's tenant (AZURE_TENANT_ID, or `az login --tenant TENANT`)"
    elif "expired" in lowered or "not valid before" in lowered:
        advice = "check this machine's clock (the token is renewed before it expires)"
    else:
        advice = "check the credential and the account URL"
    return f"azbatch: {where} refused the Microsoft Entra ID token of {source}: {detail or error.reason}; {advice}"


def _credential_failed(error: ClientAuthenticationError, where: str, source: str, environ: Mapping[str, str]) -> str:
    message = _redact(str(error.message or error), environ)
    code = _AADSTS.search(message)
    if code:
        advice = _AADSTS_ADVICE.get(code.group(1), "see the AADSTS code in Microsoft's error code reference")
        return f"azbatch: {source} could not sign in for {where} (AADSTS{code.group(1)}): {advice}"
    if "CERTIFICATE_VERIFY_FAILED" in message:
        authority = environ.get("AZURE_AUTHORITY_HOST")
        return _untrusted(message, f"the sign-in authority {authority} (AZURE_AUTHORITY_HOST)" if authority
                          else f"the sign-in endpoint of {source}")
    if "failed to retrieve a token" in message and "unavailable" in message.lower() and "Attempted" in message:
        return (
            f"azbatch: no Microsoft Entra ID credential found for {where} (DefaultAzureCredential tried the AZURE_* "
            "service principal variables, workload and managed identity, `az login`, ...); run `az login`, set "
            "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, or give the account's key"
        )
    first = next((line.strip() for line in message.splitlines() if line.strip()), type(error).__name__)
    return f"azbatch: {source} could not sign in for {where}: {first[:300]}"


def _untrusted(message: str, what: str) -> str:
    match = _HOST_IN_ERROR.search(message)
    host = f" ({match.group(1)}:{match.group(2)})" if match and match.group(1) not in what else ""
    return (
        f"azbatch: the TLS certificate of {what}{host} is not trusted; set REQUESTS_CA_BUNDLE to a CA bundle that "
        "includes its CA (azbatch-local exports it: source ROOT/env.sh)"
    )


def explain(error: BaseException, where: str, *, keyed: bool, environ: Mapping[str, str] | None = None) -> str | None:
    """One line for an authentication or TLS-trust failure reaching `where` (e.g. "Batch account https://..."),
    or None when `error` is something else. `keyed`: the request was signed with a key, not a token."""
    env = os.environ if environ is None else environ
    text = str(error)
    if isinstance(error, ServiceRequestError) and "non-TLS" in text:
        return (
            f"azbatch: {where} is an http:// URL, and Microsoft Entra ID tokens are only sent over https; use its "
            "https:// URL (azbatch-local: start it with --entra) or give the account's key"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text and not isinstance(error, ClientAuthenticationError):
        return _untrusted(text, where)
    if keyed:
        return None
    source = credential_source(env)
    if isinstance(error, ClientAuthenticationError) and error.response is None:
        return _credential_failed(error, where, source, env)
    if isinstance(error, HttpResponseError) and error.response is not None:
        return _token_refused(error, where, source)
    return None


@contextmanager
def explained(where: str, *, keyed: bool) -> Iterator[None]:
    """Turn an authentication or TLS-trust failure inside the block into a CredentialError (one line)."""
    try:
        yield
    except Exception as error:
        line = explain(error, where, keyed=keyed)
        if line is None:
            raise
        raise CredentialError(line) from None
