"""The local service as tests start it: `start_service` (stopped at session end by conftest even when a test fails)
and the `ServiceHandle` the fixtures return."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.batch import BatchClient
    from azure.storage.blob import BlobServiceClient

    from snakemake_executor_plugin_azbatch.local.service_config import BoundEndpoints, ServiceConfig
    from snakemake_executor_plugin_azbatch.local.service import LocalService

# Every service started by a test, so conftest stops them all at session end.
started_services: list["ServiceHandle"] = []

# Tokens of the shared Entra ID service live this long, so a run that outlasts it must renew them.
ENTRA_TOKEN_LIFETIME_S = 8


class ServiceHandle:
    """What the fixtures return: a started `LocalService` plus client helpers for tests."""

    def __init__(self, service: "LocalService") -> None:
        from support.spec_validation import SpecValidationPolicy

        self.service = service
        # Shared by every client of this service: `.validated` shows which operations were checked.
        self.spec_policy = SpecValidationPolicy()

    @property
    def config(self) -> "ServiceConfig":
        return self.service.config

    @property
    def endpoints(self) -> "BoundEndpoints":
        assert self.service.endpoints is not None  # a started service
        return self.service.endpoints

    @property
    def env(self) -> dict[str, str]:
        return self.service.env()

    @property
    def account_url(self) -> str:
        return self.service.account_url

    @property
    def node_vm(self) -> dict[str, Any]:
        """virtualMachineConfiguration of what this service's nodes really are (the only image, with its python3,
        that a pool created over the API may claim)."""
        return self.service.state.node_system.vm_configuration()

    def pool_image_env(self) -> dict[str, str]:
        """The plugin settings that make a created pool claim `node_vm`."""
        ref = self.node_vm["imageReference"]
        return {"SNAKEMAKE_AZBATCH_POOL_IMAGE": f"{ref['publisher']}:{ref['offer']}:{ref['sku']}",
                "SNAKEMAKE_AZBATCH_POOL_NODE_AGENT": self.node_vm["nodeAgentSKUId"]}

    @property
    def root(self) -> Path:
        return self.service.root

    @property
    def pool_id(self) -> str:
        return self.config.pools[0].id

    @property
    def authority(self) -> Any:
        """The token authority (`TokenAuthority`) of a service started with `entra=EntraConfig(...)`."""
        assert self.service.secure is not None and self.service.secure.authority is not None, "no --entra"
        return self.service.secure.authority

    def batch_client(self, **kwargs: Any) -> "BatchClient":
        """Real azure.batch.BatchClient with shared key auth; every response is validated against the spec.

        kwargs go to BatchClient (e.g. retry_total=0); `per_call_policies` are added before the validator;
        `credential` replaces the shared key (e.g. an azure-identity credential for a service with Entra ID).
        """
        from azure.batch import BatchClient
        from azure.core.credentials import AzureNamedKeyCredential

        policies = list(kwargs.pop("per_call_policies", []))
        policies.append(kwargs.pop("spec_policy", self.spec_policy))
        credential = kwargs.pop("credential", None) or AzureNamedKeyCredential(
            self.config.account_name, self.config.account_key
        )
        return BatchClient(self.account_url, credential, per_call_policies=policies, **self._tls(kwargs))

    def blob_service_client(self, **kwargs: Any) -> "BlobServiceClient":
        """azure-storage-blob client on the service's storage endpoint (through the counting proxy)."""
        from azure.storage.blob import BlobServiceClient

        assert self.endpoints.storage is not None
        return BlobServiceClient.from_connection_string(self.endpoints.storage.connection_string, **self._tls(kwargs))

    @property
    def ca_file(self) -> str | None:
        """With https: the service's CA (clients of these helpers trust it; `.env` exports it too)."""
        return self.endpoints.storage.ca_file if self.endpoints.storage else None

    def _tls(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"connection_verify": self.ca_file, **kwargs} if self.ca_file else kwargs

    def metrics(self) -> dict[str, Any]:
        """GET /_local/metrics."""
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        with urllib.request.urlopen(self.service.metrics_url, timeout=30, context=context) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.service.stop()


def start_service(root: Path, overrides: dict[str, Any]) -> ServiceHandle:
    """A started service whose every process is cleaned up at session end (also for module-scoped fixtures)."""
    from snakemake_executor_plugin_azbatch.local.service_config import PoolSpec, ServiceConfig
    from snakemake_executor_plugin_azbatch.local.service import LocalService

    pools = overrides.get("pools")
    if pools is not None:
        overrides = {**overrides, "pools": [PoolSpec.parse(p) if isinstance(p, str) else p for p in pools]}
    service = LocalService(ServiceConfig(root=root, **overrides))
    handle = ServiceHandle(service)
    started_services.append(handle)  # before start(): a partial start is still cleaned up at session end
    service.start()
    return handle
