"""The plugin's credential helpers without a service: which options DefaultAzureCredential gets, and which failures
become one line (and which are left to the caller)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError, ServiceRequestError

from snakemake_executor_plugin_azbatch.azure_api.credentials import (
    CredentialError,
    credential_options,
    credential_source,
    explain,
    explained,
)

SP = {"AZURE_TENANT_ID": "t-1", "AZURE_CLIENT_ID": "c-1", "AZURE_CLIENT_SECRET": "s3cret-value"}


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("https://127.0.0.1:4443", {"disable_instance_discovery": True}),
        ("localhost:4443", {"disable_instance_discovery": True}),
        ("https://login.microsoftonline.com", {}),
        (None, {}),
    ],
)
def test_instance_discovery_is_off_only_for_a_loopback_authority(authority, expected):
    environ = {"AZURE_AUTHORITY_HOST": authority} if authority else {}
    assert credential_options(environ) == expected


def test_the_credential_is_named_by_what_is_configured():
    assert credential_source(SP) == "service principal c-1 (AZURE_CLIENT_ID, tenant t-1)"
    assert "managed identity" in credential_source({"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token"})
    assert "DefaultAzureCredential" in credential_source({})


def test_sign_in_failures_become_one_line_without_the_secret():
    unknown_app = ClientAuthenticationError(message="EnvironmentCredential: AADSTS700016: app not found. Trace ID: x")
    line = explain(unknown_app, "Batch account https://a", keyed=False, environ=SP)
    assert line and "AADSTS700016" in line and "AZURE_CLIENT_ID" in line and "\n" not in line
    leaky = ClientAuthenticationError(message="something failed for secret s3cret-value\nmore")
    line = explain(leaky, "storage https://s", keyed=False, environ=SP)
    assert line and "s3cret-value" not in line and "***" in line and "\n" not in line


def test_other_failures_are_left_to_the_caller():
    assert explain(ResourceNotFoundError("no pool"), "Batch account https://a", keyed=False, environ=SP) is None
    assert explain(ValueError("bad"), "Batch account https://a", keyed=False, environ=SP) is None
    # A signed (keyed) request's failures are the key's, not Entra ID's.
    assert explain(ClientAuthenticationError(message="AADSTS7000215"), "x", keyed=True, environ=SP) is None
    http_bearer = ServiceRequestError("Bearer token authentication is not permitted for non-TLS protected URLs.")
    assert "only sent over https" in (explain(http_bearer, "Batch account http://a", keyed=False, environ=SP) or "")


def test_explained_raises_one_line_and_passes_the_rest_through():
    with pytest.raises(CredentialError, match="AADSTS7000215"):
        with explained("Batch account https://a", keyed=False):
            raise ClientAuthenticationError(message="AADSTS7000215: Invalid client secret provided.")
    with pytest.raises(ResourceNotFoundError):
        with explained("Batch account https://a", keyed=False):
            raise ResourceNotFoundError("no pool")
