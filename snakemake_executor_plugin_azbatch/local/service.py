"""`LocalService`: Azurite + counting blob proxy + Batch state + HTTP server, started and stopped as one unit."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Callable

from .service_config import BoundEndpoints, ConfigError, ServiceConfig, StorageEndpoint
from .storage.azurite import Azurite, free_port
from .storage.blob_proxy import BlobProxy

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from .auth.secure_endpoints import SecureEndpoints
    from .backends.execution import ExecutionBackend
    from .http.metrics import Metrics
    from .http.outage_switch import OutageSwitch
    from .model.batch_state import BatchState

log = logging.getLogger(__name__)

ENV_FILE = "env.sh"
LOCK_FILE = ".lock"
METRICS_FILE = "metrics.json"
METRICS_PATH = "/_local/metrics"


def make_backend(config: ServiceConfig, endpoints: BoundEndpoints | None = None) -> "ExecutionBackend":
    """The execution backend the model drives (see `execution` for the protocol): simulated nodes with
    --simulate, nodes in the stock node image with --node-image, else processes on the host. ConfigError (one line)
    when the backend cannot work here."""
    if config.simulate is not None:
        from .backends.simulated_backend import SimulatedBackend

        return SimulatedBackend(config, endpoints)
    if config.node_image is not None:
        from .backends.stock_backend import StockNodeBackend

        return StockNodeBackend(config, endpoints)
    from .backends.host_backend import HostProcessBackend

    return HostProcessBackend(config, endpoints)


def shell_quote(value: str) -> str:
    """Single-quote for POSIX shells (`export K='V'`)."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


class LocalService:
    """The whole local Batch service in this process (HTTP server and node runners on threads).

    start(): Azurite → blob proxy → BatchState.start() (with its execution backend) → HTTP server thread; where it answers
    is `endpoints` (a value of its own: the config stays as given, its root resolved). stop(): the reverse, then writes ROOT/metrics.json. Either is safe after a partial start.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        self.endpoints: BoundEndpoints | None = None  # once bound: the Batch API's URL and the storage endpoint
        self.metrics: Metrics | None = None
        self.outage: OutageSwitch | None = None  # the outage switch (outage_switch.py), shared by the API and the proxy
        self.azurite: Azurite | None = None
        self.proxy: BlobProxy | None = None
        self.secure: SecureEndpoints | None = None  # TLS and Entra ID (--https, --entra)
        self.state: BatchState | None = None
        self.server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._started = False
        self._lock_fd: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> "LocalService":
        self.config.validate()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def _start(self) -> None:
        # Imported here so the storage side (and the test harness) can load while the Batch side evolves.
        from .auth.secure_endpoints import SecureEndpoints
        from .http.faults import FaultInjector
        from .http.http_server import make_server
        from .http.metrics import Metrics
        from .http.outage_switch import OutageSwitch
        from .model.batch_state import BatchState

        self.root = Path(self.config.root).resolve()
        self.config = dataclasses.replace(self.config, root=self.root)  # a new value: the caller's config stays
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_root()
        self.metrics = Metrics()
        self.outage = OutageSwitch(tuple(self.config.outages))

        self.secure = secure = SecureEndpoints(self.config, self.root).start()
        self.azurite = Azurite(self.root / "azurite", host=self.config.host, **secure.azurite_options())
        self.azurite.start()
        self.proxy = BlobProxy(
            self.config.host, self.azurite.port, self.metrics, host=self.config.host,
            drop_request=lambda agent, operation: self.outage.drops("storage", agent, operation),
            **secure.proxy_options(),
        )
        self.proxy.start()
        storage = StorageEndpoint(blob_url=self.proxy.account_url(), ca_file=secure.ca_file)

        # The state builds entity URLs from account_url, so the port is fixed before the state exists.
        port_chosen_by_user = bool(self.config.port)
        for attempt in range(3):
            port = self.config.port or free_port(self.config.host)
            self.endpoints = BoundEndpoints(f"{secure.scheme}://{self.config.host}:{port}", storage)
            self.state = BatchState(self.config, make_backend(self.config, self.endpoints), self.endpoints)
            faults = FaultInjector(self.config)
            try:
                self.server = make_server(self.state, self.config, self.metrics, faults, self.outage)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                if port_chosen_by_user:
                    raise ConfigError(
                        f"--port {self.config.port}: already in use on {self.config.host}; "
                        "choose another port, or 0 for a free one"
                    ) from None
                if attempt == 2:
                    raise  # a free port was taken three times in a row between probing and binding
        assert self.server.server_address[1] == self.endpoints.port  # bound to the port the state's URLs name
        secure.secure_batch_api(self.server)
        self.state.start()
        self._server_thread = threading.Thread(
            target=self.server.serve_forever, name="azbatch-local-http", daemon=True
        )
        self._server_thread.start()
        self.write_env_file()

    def stop(self) -> None:
        """Stop everything that was started, in reverse order; every step runs even if an earlier one fails."""
        errors: list[BaseException] = []

        def attempt(step: str, action: Callable[[], object]) -> None:
            try:
                action()
            except BaseException as exc:  # keep stopping the rest; report afterwards
                log.error("stopping %s failed: %s", step, exc)
                errors.append(exc)

        server, self.server = self.server, None
        if server is not None:
            if self._server_thread is not None and self._server_thread.is_alive():
                attempt("HTTP server", server.shutdown)
            attempt("HTTP server socket", server.server_close)
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
            self._server_thread = None
        state, self.state = self.state, None
        if state is not None:
            attempt("Batch state (task processes)", state.stop)
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            attempt("blob proxy", proxy.stop)
        azurite, self.azurite = self.azurite, None
        if azurite is not None:
            attempt("Azurite", azurite.stop)
        secure, self.secure = self.secure, None
        if secure is not None:
            attempt("token authority", secure.stop)
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            attempt("metrics file", lambda: metrics.write(self.root / METRICS_FILE))
        self._started = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if errors:
            raise errors[0]

    def _lock_root(self) -> None:
        """Two services on one root would share (and corrupt) Azurite's database and the node directories."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"--root {self.root}: another azbatch-local is using this directory; stop it or choose another --root"
            ) from None
        self._lock_fd = fd

    def __enter__(self) -> "LocalService":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- exported settings ----------------------------------------------------------------------------------

    @property
    def account_url(self) -> str:
        return self.endpoints.account_url if self.endpoints else ""

    @property
    def metrics_url(self) -> str:
        return self.account_url + METRICS_PATH

    @property
    def env_file(self) -> Path:
        return self.root / ENV_FILE

    def env(self) -> dict[str, str]:
        """The variables that point the plugin, the SDKs and `az batch` / `az storage` at this service."""
        storage = self.endpoints.storage if self.endpoints else None
        if not self.account_url or storage is None:
            raise RuntimeError("LocalService.env() called before start()")
        first_pool = self.config.pools[0].id if self.config.pools else ""
        env = {
            "SNAKEMAKE_AZBATCH_ACCOUNT_URL": self.account_url,
            "SNAKEMAKE_AZBATCH_ACCOUNT_NAME": self.config.account_name,
            "SNAKEMAKE_AZBATCH_ACCOUNT_KEY": self.config.account_key,
            "SNAKEMAKE_AZBATCH_POOL_ID": first_pool,
            "SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": storage.connection_string,
            "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL": storage.blob_url,
            "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_KEY": storage.account_key,
            "AZURE_BATCH_ENDPOINT": self.account_url,
            "AZURE_BATCH_ACCOUNT": self.config.account_name,
            "AZURE_BATCH_ACCESS_KEY": self.config.account_key,
            "AZURE_STORAGE_CONNECTION_STRING": storage.connection_string,
            "AZBATCH_LOCAL_ROOT": str(self.root),
            "AZBATCH_LOCAL_METRICS_URL": self.metrics_url,
        }
        return self.secure.exported(env) if self.secure else env

    def notices(self) -> list[str]:
        """One-line facts about this service a user should know before running on it (the CLI prints them)."""
        from .nodes import node_trust

        cas = node_trust.node_cas(self.config)
        return [node_trust.notice(cas)] if cas else []

    def export_lines(self) -> list[str]:
        return [f"export {name}={shell_quote(value)}" for name, value in self.env().items()]

    def write_env_file(self) -> Path:
        path = self.env_file
        # Owner-only: the file holds account keys.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# Written by azbatch-local; `source` it to use the local Batch service.\n")
            handle.write("\n".join(self.export_lines()) + "\n")
        return path
