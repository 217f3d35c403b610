"""`azbatch-local --https` / `--entra`: TLS with the generated CA, the local token authority (what azure-identity and
MSAL fetch from it, its Entra error codes, the managed-identity endpoints), and bearer tokens at the Batch API (401
as Batch answers, bodies checked against the spec) and at storage (403, stricter than Azurite alone)."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from support.spec_validation import validate_response

from snakemake_executor_plugin_azbatch.local import cli
from snakemake_executor_plugin_azbatch.local.auth.bearer_auth import BATCH_AUDIENCE, STORAGE_AUDIENCE
from snakemake_executor_plugin_azbatch.local.service_config import ConfigError
from snakemake_executor_plugin_azbatch.local.auth.secure_endpoints import KEY_VARIABLES
from snakemake_executor_plugin_azbatch.local.auth.tls import prepare_tls
from snakemake_executor_plugin_azbatch.local.auth.token_authority import MANAGEMENT_AUDIENCE

API = "api-version=2025-06-01.21.0"
BATCH_SCOPE = "https://batch.core.windows.net//.default"  # the scope in Batch's OpenAPI spec


def sp_credential(service, secret: str | None = None):
    from azure.identity import ClientSecretCredential

    authority = service.authority
    return ClientSecretCredential(
        authority.config.tenant_id,
        authority.config.client_id,
        secret or authority.config.client_secret,
        authority=authority.url,
        disable_instance_discovery=True,
    )


@pytest.fixture
def trust_ca(entra_service, monkeypatch):
    """The service's CA in the process environment, as `source env.sh` does for a shell."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", entra_service.env["REQUESTS_CA_BUNDLE"])
    return entra_service


def bearer_get(service, token: str, path: str = "/pools") -> requests.Response:
    url = f"{service.account_url}{path}?{API}"
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, verify=service.ca_file, timeout=30)
    validate_response("GET", url, response.status_code, response.content, response.headers)
    return response


def auth_detail(response: requests.Response) -> str:
    body = response.json()
    assert body["code"] == "AuthenticationFailed", body
    return {v["key"]: v["value"] for v in body.get("values", [])}["AuthenticationErrorDetail"]


# -- TLS --------------------------------------------------------------------------------------------------------


def test_the_ca_is_kept_across_restarts_and_the_server_certificate_is_fresh(tmp_path):
    first = prepare_tls(tmp_path)
    ca = first.ca.read_bytes()
    server = x509.load_pem_x509_certificate(first.cert.read_bytes())
    second = prepare_tls(tmp_path)
    assert second.ca.read_bytes() == ca
    assert x509.load_pem_x509_certificate(second.cert.read_bytes()).serial_number != server.serial_number
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert (tmp_path / "tls" / "ca-key.pem").stat().st_mode & 0o077 == 0 and first.key.stat().st_mode & 0o077 == 0
    # The bundle that clients are pointed at trusts both the local CA and public roots.
    assert first.bundle.read_bytes().startswith(ca) and first.bundle.read_bytes().count(b"BEGIN CERTIFICATE") > 10


def test_https_serves_the_batch_api_and_storage_with_shared_key(make_service):
    service = make_service(https=True, pools=["local:1:1"])
    env = service.env
    assert service.account_url.startswith("https://") and env["SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL"].startswith("https://")
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == str(service.root / "ca-bundle.pem")
    assert env["AZBATCH_LOCAL_CA_FILE"] == str(service.root / "ca.pem") and "AZURE_CLIENT_ID" not in env
    assert "SNAKEMAKE_AZBATCH_ACCOUNT_KEY" in env  # without --entra the keys are exported as usual
    client = service.batch_client()
    assert [pool.id for pool in client.list_pools()] == ["local"]
    client.create_job({"id": "tls-job", "poolInfo": {"poolId": "local"}})
    # Paging links keep the scheme: the SDK follows odata.nextLink over https.
    for index in range(3):
        client.create_task("tls-job", {"id": f"t{index}", "commandLine": "true"})
    assert len(list(client.list_tasks("tls-job", max_results=1))) == 3
    client.begin_delete_job("tls-job", polling_interval=1).result()
    blobs = service.blob_service_client()
    blobs.create_container("tls-container")
    blobs.get_blob_client("tls-container", "a.txt").upload_blob(b"over tls")
    assert blobs.get_blob_client("tls-container", "a.txt").download_blob().readall() == b"over tls"
    assert service.metrics()["storage"]["PutBlob"]["count"] == 1
    # Plain HTTP to the TLS port gets no answer, and an unknown CA is not trusted.
    with pytest.raises(requests.ConnectionError):
        requests.get(service.account_url.replace("https:", "http:") + f"/pools?{API}", timeout=10)
    with pytest.raises(urllib.error.URLError) as untrusted:
        urllib.request.urlopen(service.service.metrics_url, timeout=10, context=ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)


# -- the token authority ----------------------------------------------------------------------------------------


def test_azure_identity_gets_tokens_for_batch_and_storage_with_user_delegation_sas(trust_ca):
    service = trust_ca
    env = service.env
    assert not set(KEY_VARIABLES) & set(env), "with --entra no key is exported"
    assert env["AZURE_AUTHORITY_HOST"] == service.authority.url and env["AZURE_TENANT_ID"] == service.authority.config.tenant_id
    assert "AZURE_CLIENT_SECRET=" in service.service.env_file.read_text()
    before = service.authority.stats()
    credential = sp_credential(service)
    client = service.batch_client(credential=credential)
    assert [pool.id for pool in client.list_pools()]
    client.create_job({"id": "entra-job", "poolInfo": {"poolId": service.pool_id}})
    client.create_task("entra-job", {"id": "t1", "commandLine": "true"})
    assert client.get_task("entra-job", "t1").id == "t1"
    client.begin_delete_job("entra-job", polling_interval=1).result()
    assert {"Pools_ListPools", "Jobs_CreateJob", "Tasks_CreateTask", "Tasks_GetTask"} <= set(service.spec_policy.validated)

    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    blobs = BlobServiceClient(env["SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL"], credential=credential)
    blobs.create_container("entra-container")
    blobs.get_blob_client("entra-container", "in.txt").upload_blob(b"delegated")
    now = datetime.now(timezone.utc)
    key = blobs.get_user_delegation_key(now - timedelta(minutes=5), now + timedelta(hours=1))
    sas = generate_container_sas(
        blobs.account_name, "entra-container", permission=ContainerSasPermissions(read=True),
        expiry=now + timedelta(hours=1), user_delegation_key=key,
    )
    assert f"sktid={service.authority.config.tenant_id}" in sas
    url = f"{blobs.url.rstrip('/')}/entra-container/in.txt?{sas}"
    context = ssl.create_default_context(cafile=service.ca_file)
    assert urllib.request.urlopen(url, timeout=10, context=context).read() == b"delegated"
    after = service.authority.stats()
    assert after.get(f"token:{BATCH_AUDIENCE}", 0) > before.get(f"token:{BATCH_AUDIENCE}", 0)
    assert after.get(f"token:{STORAGE_AUDIENCE}", 0) > before.get(f"token:{STORAGE_AUDIENCE}", 0)


def test_msal_can_use_the_authority_with_its_own_instance_discovery(trust_ca):
    entra_service = trust_ca
    authority = entra_service.authority
    session = requests.Session()
    config = session.get(f"{authority.url}/{authority.config.tenant_id}/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == f"{authority.url}/{authority.config.tenant_id}/oauth2/v2.0/token"
    app = msal.ConfidentialClientApplication(
        authority.config.client_id,
        client_credential=authority.config.client_secret,
        authority=f"{authority.url}/{authority.config.tenant_id}",
        instance_discovery=f"{authority.url}/common/discovery/instance",  # instead of login.microsoftonline.com
        http_client=session,
    )
    result = app.acquire_token_for_client([BATCH_SCOPE])
    assert "access_token" in result, result
    keys = session.get(config["jwks_uri"]).json()["keys"]
    public = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(result["access_token"], public, algorithms=["RS256"], audience=BATCH_AUDIENCE)
    assert claims["tid"] == authority.config.tenant_id and claims["appid"] == authority.config.client_id
    assert claims["iss"] == f"https://sts.windows.net/{authority.config.tenant_id}/" and claims["ver"] == "1.0"
    assert bearer_get(entra_service, result["access_token"]).status_code == 200


@pytest.mark.parametrize(
    ("tenant", "form", "status", "error", "code"),
    [
        (None, {"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        (None, {"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client", 700016),
        ("no-such-tenant", {}, 400, "invalid_request", 90002),
        (None, {"scope": "https://batch.core.windows.net/user_impersonation"}, 400, "invalid_scope", 1002012),
        (None, {"scope": "https://example.org/.default"}, 400, "invalid_resource", 500011),
        (None, {"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ],
)
def test_token_requests_are_refused_with_entra_error_codes(entra_service, tenant, form, status, error, code):
    authority = entra_service.authority
    body = {"grant_type": "client_credentials", "client_id": authority.config.client_id,
            "client_secret": authority.config.client_secret, "scope": BATCH_SCOPE, **form}
    response = requests.post(
        f"{authority.url}/{tenant or authority.config.tenant_id}/oauth2/v2.0/token",
        data=body, verify=entra_service.ca_file, timeout=30,
    )
    assert response.status_code == status
    answer = response.json()
    assert answer["error"] == error and answer["error_codes"] == [code]
    assert answer["error_description"].startswith(f"AADSTS{code}: ") and authority.config.client_secret not in response.text


# -- bearer tokens at the Batch API -----------------------------------------------------------------------------


def test_the_batch_api_refuses_bad_bearer_tokens_with_401(entra_service):
    authority = entra_service.authority
    client_id = authority.config.client_id
    before = entra_service.metrics()["operations"]["Pools_ListPools"]["statuses"].get("401", 0)
    assert bearer_get(entra_service, authority.issue(BATCH_AUDIENCE, client_id)).status_code == 200
    expired = authority.issue(BATCH_AUDIENCE, client_id, now=time.time() - 120, lifetime=60)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(jwt.decode(authority.issue(BATCH_AUDIENCE, client_id), options={"verify_signature": False}),
                        forger, algorithm="RS256", headers={"kid": authority.kid})
    cases = {
        "expired": expired,
        "tenant": authority.issue(BATCH_AUDIENCE, client_id, tenant_id="0bad7e4a-0000-4000-8000-000000000000"),
        # Batch wants its resource exactly, with the trailing slash; management tokens are for another API.
        "audience 'https://batch.core.windows.net'": authority.issue("https://batch.core.windows.net", client_id),
        f"audience '{MANAGEMENT_AUDIENCE}'": authority.issue(MANAGEMENT_AUDIENCE, client_id),
        "signature": forged,
        "well-formed": "not.a.token",
    }
    for expected, token in cases.items():
        response = bearer_get(entra_service, token)
        assert response.status_code == 401, expected
        assert expected in auth_detail(response), (expected, auth_detail(response))
        assert token not in response.text
    after = entra_service.metrics()["operations"]["Pools_ListPools"]["statuses"].get("401", 0)
    assert after - before == len(cases)


def test_an_expired_token_is_renewed_by_the_sdk(trust_ca):
    """Tokens of the shared service live a few seconds: a client used across their expiry renews its token
    (azure-core's bearer policy with MSAL) and no request is refused, while the old token now is."""
    from support.services import ENTRA_TOKEN_LIFETIME_S

    service = trust_ca
    credential = sp_credential(service)
    seen: list[str] = []

    class RecordingCredential:
        """The credential the client sees; records every token it hands out."""

        def get_token_info(self, *scopes, options=None):
            info = credential.get_token_info(*scopes, options=options)
            seen.append(info.token)
            return info

    client = service.batch_client(credential=RecordingCredential())
    refused_before = service.metrics()["operations"]["Pools_ListPools"]["statuses"].get("401", 0)
    assert list(client.list_pools())
    time.sleep(ENTRA_TOKEN_LIFETIME_S + 1)
    assert list(client.list_pools())
    assert len(seen) == 2 and seen[0] != seen[1]
    stale = bearer_get(service, seen[0])
    assert stale.status_code == 401 and "expired" in auth_detail(stale)
    # The only refusal is the replayed stale token: the client itself was never refused.
    assert service.metrics()["operations"]["Pools_ListPools"]["statuses"].get("401", 0) - refused_before == 1


def test_managed_identity_endpoints_work_with_azure_identity(trust_ca, monkeypatch):
    from azure.identity import ManagedIdentityCredential

    service = trust_ca
    env = service.env
    monkeypatch.setenv("IDENTITY_ENDPOINT", env["AZBATCH_LOCAL_IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", env["AZBATCH_LOCAL_IDENTITY_HEADER"])
    client = service.batch_client(credential=ManagedIdentityCredential())
    assert [pool.id for pool in client.list_pools()] == [service.pool_id]
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(BATCH_SCOPE)
    # IMDS, as on an Azure VM (azure-identity lets AZURE_POD_IDENTITY_AUTHORITY_HOST move its address).
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", service.authority.url)
    token = ManagedIdentityCredential().get_token(BATCH_SCOPE)
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["appid"] == service.authority.config.managed_identity_id and claims["aud"] == BATCH_AUDIENCE
    assert bearer_get(service, token.token).status_code == 200


# -- bearer tokens at storage -----------------------------------------------------------------------------------


def test_storage_refuses_tokens_that_azurite_alone_would_accept(entra_service):
    """Azurite's --oauth basic reads only lifetime, issuer prefix and audience; the proxy in front of it also checks
    the signature and the tenant, and answers as Storage does (403 AuthenticationFailed with a detail)."""
    authority = entra_service.authority
    client_id = authority.config.client_id
    url = entra_service.env["SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL"] + "?comp=list"
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(authority.issue(STORAGE_AUDIENCE, client_id), options={"verify_signature": False})
    cases = {
        "signature": jwt.encode(claims, forger, algorithm="RS256", headers={"kid": authority.kid}),
        "tenant": authority.issue(STORAGE_AUDIENCE, client_id, tenant_id="0bad7e4a-0000-4000-8000-000000000000"),
        "expired": authority.issue(STORAGE_AUDIENCE, client_id, now=time.time() - 120, lifetime=60),
        "audience": authority.issue(BATCH_AUDIENCE, client_id),
    }
    headers = {"x-ms-version": "2025-01-05"}
    ok = requests.get(url, headers={**headers, "Authorization": f"Bearer {authority.issue(STORAGE_AUDIENCE, client_id)}"},
                      verify=entra_service.ca_file, timeout=30)
    assert ok.status_code == 200, ok.text
    for expected, token in cases.items():
        response = requests.get(url, headers={**headers, "Authorization": f"Bearer {token}"},
                                verify=entra_service.ca_file, timeout=30)
        assert response.status_code == 403 and response.headers["x-ms-error-code"] == "AuthenticationFailed"
        assert expected in response.text.split("<AuthenticationErrorDetail>")[1], (expected, response.text)


# -- command line -----------------------------------------------------------------------------------------------


def test_cli_entra_options(tmp_path):
    parser = cli.build_parser()
    config = cli.config_from_args(parser.parse_args(["serve", "--root", str(tmp_path), "--entra", "--token-lifetime", "30"]))
    assert config.entra is not None and config.entra.token_lifetime == 30 and config.tls_enabled
    assert cli.config_from_args(parser.parse_args(["serve", "--root", str(tmp_path), "--https"])).entra is None
    with pytest.raises(ConfigError, match="--token-lifetime.*--entra"):
        cli.config_from_args(parser.parse_args(["serve", "--root", str(tmp_path), "--token-lifetime", "30"]))
    with pytest.raises(ConfigError, match="--token-lifetime 0"):
        cli.config_from_args(parser.parse_args(["serve", "--entra", "--root", str(tmp_path), "--token-lifetime", "0"]))
