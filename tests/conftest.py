"""Test harness: the local Batch service (with Azurite) on loopback, driven over HTTP by the real SDKs.

Fixtures
- `local_service` (session): one shared service for tests that do not change service-wide settings.
- `make_service(**ServiceConfig overrides)` (function): a private service, e.g. with fault injection or special
  pools (`pools=["big:2:4"]` strings are parsed like `--pool`). Stopped when the test ends.
- `entra_service` (session): a shared service with Microsoft Entra ID (`--entra`, so HTTPS) and short-lived tokens.
Both return a `ServiceHandle`. Every service is stopped even when a test fails (SIGTERM unwinds like Ctrl-C), and
at session end any process still below pytest or running under the session's temp dir is killed and reported, so
no run leaves Azurite or task processes behind.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from azure.batch import BatchClient
    from azure.storage.blob import BlobServiceClient

    from snakemake_executor_plugin_azbatch.local.config import BoundEndpoints, ServiceConfig
    from snakemake_executor_plugin_azbatch.local.service import LocalService

_started_services: list["ServiceHandle"] = []

# Pure unit-test modules of the plugin (no service, no subprocess), in the quick loop without editing each file.
QUICK_MODULES = {"test_settings.py", "test_task_spec.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in QUICK_MODULES:
            item.add_marker(pytest.mark.quick)


class ServiceHandle:
    """What the fixtures return: a started `LocalService` plus client helpers for tests."""

    def __init__(self, service: "LocalService") -> None:
        from spec_validation import SpecValidationPolicy

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
    from snakemake_executor_plugin_azbatch.local.config import PoolSpec, ServiceConfig
    from snakemake_executor_plugin_azbatch.local.service import LocalService

    pools = overrides.get("pools")
    if pools is not None:
        overrides = {**overrides, "pools": [PoolSpec.parse(p) if isinstance(p, str) else p for p in pools]}
    service = LocalService(ServiceConfig(root=root, **overrides))
    handle = ServiceHandle(service)
    _started_services.append(handle)  # before start(): a partial start is still cleaned up at session end
    service.start()
    return handle


@pytest.fixture(scope="session")
def local_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    handle = start_service(tmp_path_factory.mktemp("azbatch-local"), {})
    try:
        yield handle
    finally:
        handle.stop()


# Tokens of the shared Entra ID service live this long, so a run that outlasts it must renew them.
ENTRA_TOKEN_LIFETIME_S = 8


@pytest.fixture(scope="session")
def entra_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    """One shared service with `--entra` (hence HTTPS), whose tokens live ENTRA_TOKEN_LIFETIME_S seconds."""
    from snakemake_executor_plugin_azbatch.local.auth.token_authority import EntraConfig

    handle = start_service(
        tmp_path_factory.mktemp("azbatch-local-entra"), {"entra": EntraConfig(token_lifetime=ENTRA_TOKEN_LIFETIME_S)}
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., ServiceHandle]]:
    handles: list[ServiceHandle] = []

    def factory(**overrides: Any) -> ServiceHandle:
        root = overrides.pop("root", None) or tmp_path / f"service{len(handles)}"
        try:
            handle = start_service(Path(root), overrides)
        except BaseException:
            if _started_services and _started_services[-1] not in handles:
                handles.append(_started_services[-1])
            raise
        handles.append(handle)
        return handle

    try:
        yield factory
    finally:
        for handle in reversed(handles):
            handle.stop()


# -- no process left behind ---------------------------------------------------------------------------------


def descendant_pids(root_pid: int) -> list[int]:
    """PIDs of every live process below root_pid (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    queue = [root_pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def processes_using(directory: Path) -> list[int]:
    """PIDs (ours, other than this process) whose command line or working directory lies under `directory`:
    Azurite (--location ROOT/azurite) and task processes (cwd in ROOT/nodes) even after they were orphaned."""
    marker = str(directory)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if marker in cmdline or cwd == marker or cwd.startswith(marker + "/"):
            found.append(int(entry.name))
    return found


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # A CI timeout sends SIGTERM: unwind like Ctrl-C so fixtures still stop Azurite and the task processes.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    yield
    for handle in reversed(_started_services):
        try:
            handle.stop()
        except Exception as exc:  # keep cleaning up
            print(f"conftest: stopping a local service failed: {exc}", file=sys.stderr)
    leftovers = sorted(set(descendant_pids(os.getpid())) | set(processes_using(tmp_path_factory.getbasetemp())))
    if leftovers:
        print(f"conftest: killing processes left behind by tests: {leftovers}", file=sys.stderr)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
