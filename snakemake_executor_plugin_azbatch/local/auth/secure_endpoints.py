"""What `--https` and `--entra` add to a LocalService: TLS on every endpoint, the token authority, bearer tokens
at the Batch API and the blob proxy, and the exported variables that go with them.

LocalService asks this object for Azurite's and the proxy's options and hands it the bound Batch API server; the
rest of the service does not know whether it runs with TLS or Entra ID.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..service_config import AZURITE_ACCOUNT_NAME, ServiceConfig
from .bearer_auth import BatchAuthenticator, BearerVerifier, storage_audiences, storage_bearer_check
from .tls import TlsFiles, prepare_tls, serve_tls
from .token_authority import TokenAuthority

if TYPE_CHECKING:
    from socketserver import BaseServer

# Not exported with --entra, so that clients which find no key use Microsoft Entra ID (Shared Key still works).
KEY_VARIABLES = (
    "SNAKEMAKE_AZBATCH_ACCOUNT_KEY",
    "SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING",
    "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_KEY",
    "AZURE_BATCH_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
)


class SecureEndpoints:
    """TLS material and, with Entra ID, the running token authority; `start()` before Azurite, `stop()` after."""

    def __init__(self, config: ServiceConfig, root: Path) -> None:
        self.config = config
        self.root = root
        self.tls: TlsFiles | None = None
        self.authority: TokenAuthority | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def ca_file(self) -> str | None:
        return str(self.tls.ca) if self.tls else None

    def start(self) -> "SecureEndpoints":
        if self.config.tls_enabled:
            self.tls = prepare_tls(self.root)
            if self.config.entra is not None:
                self.authority = TokenAuthority(self.config.entra, self.tls, host=self.config.host).start()
        return self

    def stop(self) -> None:
        authority, self.authority = self.authority, None
        if authority is not None:
            authority.stop()

    def _verifier(self, audiences: list[str], status: int) -> BearerVerifier:
        assert self.authority is not None
        return BearerVerifier(self.authority.public_keys, self.authority.config.tenant_id, audiences, status=status)

    def azurite_options(self) -> dict[str, Any]:
        return {"tls": self.tls, "oauth": self.authority is not None}

    def proxy_options(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        options: dict[str, Any] = {"server_tls": self.tls.server_context(), "upstream_tls": self.tls.client_context()}
        if self.authority is not None:
            # Storage answers a refused token with 403 AuthenticationFailed.
            verifier = self._verifier(list(storage_audiences(AZURITE_ACCOUNT_NAME)), status=403)
            options["check_bearer"] = storage_bearer_check(verifier)
        return options

    def secure_batch_api(self, server: BaseServer) -> None:
        """TLS on the bound Batch API server, and bearer tokens accepted next to Shared Key (401 when refused)."""
        if self.tls is not None:
            serve_tls(server, self.tls.server_context())
        if self.authority is not None:
            bearer = self._verifier([self.authority.config.batch_audience], status=401)
            dispatcher = server.dispatcher  # type: ignore[attr-defined]
            dispatcher.verifier = BatchAuthenticator(dispatcher.verifier, bearer)

    def exported(self, env: dict[str, str]) -> dict[str, str]:
        """`env` with the CA variables added and, with Entra ID, the keys replaced by the service principal."""
        result = dict(env)
        if self.tls is not None:
            result.update(self.tls.env())
        if self.authority is not None:
            for name in KEY_VARIABLES:
                result.pop(name, None)
            result.update(self.authority.env())
        return result
