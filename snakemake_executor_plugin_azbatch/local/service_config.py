"""Configuration of the local Batch service: account, pools, application packages, fault injection."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .auth.token_authority import EntraConfig

# Fixed development credentials, documented in the README (like Azurite's devstoreaccount1). Not a secret: the
# service only listens on loopback. Override with --account-name / --account-key.
DEV_ACCOUNT_NAME = "localbatch"
DEV_ACCOUNT_KEY = "bG9jYWxiYXRjaC1kZXZlbG9wbWVudC1rZXktbm90LWEtc2VjcmV0LTAwMDAwMDAwMDAwMDAwMDA="

# Azurite's well-known development storage account.
AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# The node agent's own blob transfers carry this in their User-Agent: a storage outage (outage_switch.py) spares them, a
# nodeStorage outage drops them.
NODE_USER_AGENT = "azbatch-local-node"
NODE_NETWORKS = ("host", "local-only")

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(ValueError):
    """A bad option: the message is one actionable line."""


@dataclass(frozen=True)
class PoolSpec:
    id: str
    nodes: int
    slots: int
    vm_size: str | None = None  # None: the service's default VM size
    # BatchContainerConfiguration ({"type": "dockerCompatible", "containerImageNames": [...]}): container-enabled
    container_configuration: dict | None = None
    start_task: dict | None = None  # BatchStartTask, its defaults filled in (pool_file.start_task)

    @classmethod
    def parse(cls, text: str, option: str = "--pool", **settings) -> "PoolSpec":
        """Parse `ID[:NODES[:SLOTS]]`; missing parts default to one node with the machine's cores as slots."""
        parts = text.split(":")
        if len(parts) > 3 or not _ID_RE.match(parts[0]):
            raise ConfigError(
                f"{option} {text!r}: expected ID[:NODES[:SLOTS]] with an ID of letters, digits, '-' or '_' (≤ 64)"
            )
        try:
            nums = [int(p) for p in parts[1:]]
        except ValueError:
            raise ConfigError(
                f"{option} {text!r}: NODES and SLOTS must be whole numbers, e.g. {option} big:2:4"
            ) from None
        if any(n < 0 for n in nums) or (len(nums) == 2 and nums[1] < 1):
            raise ConfigError(f"{option} {text!r}: NODES must be ≥ 0 and SLOTS ≥ 1")
        nodes = nums[0] if nums else 1
        slots = nums[1] if len(nums) > 1 else default_slots()
        return cls(parts[0], nodes, slots, **settings)

    @property
    def container_enabled(self) -> bool:
        return self.container_configuration is not None


def default_slots() -> int:
    return max(1, os.cpu_count() or 1)


def default_pools() -> list[PoolSpec]:
    """One pool `local` whose nodes × slots use the machine's cores: two nodes when there are enough cores."""
    cores = default_slots()
    if cores >= 2:
        return [PoolSpec("local", 2, max(1, cores // 2))]
    return [PoolSpec("local", 1, 1)]


@dataclass(frozen=True)
class AppPackageSpec:
    name: str
    version: str
    zip_path: Path

    @classmethod
    def parse(cls, text: str) -> "AppPackageSpec":
        """Parse `NAME:VERSION=ZIP`."""
        m = re.match(r"^([A-Za-z0-9_.-]{1,64}):([A-Za-z0-9_.-]{1,64})=(.+)$", text)
        if not m:
            raise ConfigError(f"--app-package {text!r}: expected NAME:VERSION=PATH_TO_ZIP, e.g. tools:1.0=tools.zip")
        path = Path(m.group(3)).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"--app-package {text!r}: no such zip file {path}")
        return cls(m.group(1), m.group(2), path)


@dataclass(frozen=True)
class StorageEndpoint:
    blob_url: str  # http(s)://127.0.0.1:PORT/devstoreaccount1 (through the counting proxy)
    account_name: str = AZURITE_ACCOUNT_NAME
    account_key: str = AZURITE_ACCOUNT_KEY
    ca_file: str | None = None  # with --https: the CA that the service's own blob clients (nodes) trust

    @property
    def connection_string(self) -> str:
        scheme = self.blob_url.split(":", 1)[0]
        return (
            f"DefaultEndpointsProtocol={scheme};AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_url};"
        )


TRANSIENT_STATUSES = (500, 503, 429)  # what local/faults.py can inject


def fault_statuses(fail_status: int | tuple[int, ...]) -> tuple[int, ...]:
    """The statuses of `fail_status` (one or several), each checked; ValueError names a wrong one."""
    statuses = (fail_status,) if isinstance(fail_status, int) else tuple(fail_status)
    wrong = [status for status in statuses if status not in TRANSIENT_STATUSES]
    if wrong or not statuses:
        raise ValueError(f"--fail-status {','.join(map(str, statuses))}: choose 500, 503 or 429, or a "
                         "comma-separated mix such as 429,500,503")
    return statuses


def parse_fail_statuses(text: str) -> tuple[int, ...]:
    """`--fail-status 503` or `--fail-status 429,500,503`."""
    try:
        return fault_statuses(tuple(int(part) for part in text.split(",")))
    except ValueError:
        raise ConfigError(f"invalid choice: {text} (choose from 500, 503, 429, or a comma-separated mix)") from None


TIMINGS = ("fast", "azure")  # --timing: nodes at once (tests, demos) or Azure's delays (model/azure_timing.py)
_FAMILY_RE = re.compile(r"^standard[A-Za-z0-9]+Family$")


@dataclass(frozen=True)
class AccountQuotas:
    """`--quota`: the Batch account's core and pool quotas (None: no limit). As Batch documents, dedicated cores are
    limited per VM family and in total, Spot cores only in total."""

    dedicated_cores: int | None = None
    families: tuple[tuple[str, int], ...] = ()  # (quota name such as standardDSv3Family, dedicated cores)
    spot_cores: int | None = None
    pools: int | None = None

    def family(self, name: str) -> int | None:
        return next((cores for family, cores in self.families if family.lower() == name.lower()), None)


def parse_quotas(text: str) -> AccountQuotas:
    """`dedicated=N,spot=N,pools=N,standardDSv3Family=N` (any subset, comma-separated)."""
    values: dict[str, int | None] = {}
    families: list[tuple[str, int]] = []
    for part in text.split(","):
        name, _, number = part.strip().partition("=")
        if not number.strip().isdigit() or not (name in ("dedicated", "spot", "pools") or _FAMILY_RE.match(name)):
            raise ConfigError(f"--quota {text!r}: expected NAME=N[,NAME=N...] with NAME dedicated, spot, pools or a "
                              "VM family such as standardDSv3Family, e.g. --quota standardDSv3Family=8,spot=0")
        if _FAMILY_RE.match(name):
            families.append((name, int(number)))
        else:
            values[name] = int(number)
    return AccountQuotas(values.get("dedicated"), tuple(families), values.get("spot"), values.get("pools"))


@dataclass(frozen=True)
class SpotShortage:
    """`--spot-shortage SECONDS[@AFTER]`: no Spot capacity for SECONDS, AFTER seconds after the service started."""

    seconds: float
    after: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "SpotShortage":
        seconds, _, after = text.partition("@")
        try:
            shortage = cls(float(seconds), float(after or 0))
        except ValueError:
            shortage = None
        if shortage is None or not 0 <= shortage.seconds < float("inf") or not 0 <= shortage.after < float("inf"):
            raise ConfigError(f"--spot-shortage {text!r}: expected SECONDS[@AFTER], e.g. --spot-shortage 120@10")
        return shortage


@dataclass(frozen=True)
class CliOption:
    """The `azbatch-local` option that sets a `ServiceConfig` field: cli_options generates it from this, with the
    field's default (stated once, here)."""

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None  # text → value; None: the field's type (int, float, Path, bool)
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    negatable: bool = False  # a bool with --no-FLAG too (default on)


def option(default: Any, flag: str, help: str, **settings: Any) -> Any:
    """A `ServiceConfig` field with its default and the option that sets it."""
    return field(default=default, metadata={"option": CliOption(flag, help, **settings)})


@dataclass(frozen=True)
class BoundEndpoints:
    """Where a started service answers, known once its ports are bound: a value of its own (LocalService.endpoints),
    never written into the `ServiceConfig` the service was started with."""

    account_url: str  # scheme://host:port of the Batch API
    storage: StorageEndpoint | None = None  # the blob endpoint (the counting proxy in front of Azurite)

    @property
    def port(self) -> int:
        return urlsplit(self.account_url).port or 0

    @classmethod
    def unbound(cls, config: ServiceConfig) -> BoundEndpoints:
        """For a model or backend used without sockets (tests): the configured host and port, no storage."""
        return cls(f"http://{config.host}:{config.port}")


@dataclass(frozen=True)
class ServiceConfig:
    root: Path
    host: str = "127.0.0.1"
    port: int = option(0, "--port", "Batch API port on 127.0.0.1 (default: a free port)", parse=int)
    pools: list[PoolSpec] = field(default_factory=default_pools)
    account_name: str = DEV_ACCOUNT_NAME
    account_key: str = DEV_ACCOUNT_KEY
    app_packages: list[AppPackageSpec] = field(default_factory=list)
    fail_fraction: float = option(0.0, "--fail-fraction", "fraction of API requests answered with a fault (0-1)",
                                  parse=float)
    # one transient status, or a mix (each fault draws one)
    fail_status: int | tuple[int, ...] = option(
        503, "--fail-status", "status of injected faults: 500, 503 or 429, or a mix such as 429,500,503 (each fault "
        "draws one; default: 503)", parse=parse_fail_statuses, metavar="STATUS[,STATUS...]")
    preempt_fraction: float = option(0.0, "--preempt-fraction", "fraction of running tasks preempted once (0-1)",
                                     parse=float)
    seed: int = option(0, "--seed", "seed for fault injection, preemption, --simulate-fail and --timing azure's "
                       "delays", parse=int)
    # seconds each task "runs" on simulated nodes (no process); None: real processes
    simulate: float | None = option(
        None, "--simulate", "run no processes: every task passes through Batch's states on simulated nodes and "
        "completes after SECONDS; outputs with a literal filePattern are uploaded as small placeholder blobs",
        parse=float, metavar="SECONDS")
    simulate_fail: float = option(
        0.0, "--simulate-fail", "with --simulate: this fraction of tasks fail with exit code 1 (chosen from --seed "
        "and the task's ids)", parse=float, metavar="FRACTION")
    https: bool = False  # TLS on the Batch API and storage (a generated CA; see tls.py)
    entra: EntraConfig | None = None  # a local token authority and bearer tokens (implies https)
    # a stock node image directory: nodes run in it (stock_backend); None: the host
    node_image: Path | None = option(
        None, "--node-image", "run every node in the stock node image in DIR (`azbatch-local node-image build DIR`), "
        "isolated from the host; needs root, bubblewrap and util-linux", parse=Path, metavar="DIR")
    node_network: str = option(
        "host", "--node-network", "with --node-image: 'host' (nodes reach what this machine reaches) or "
        "'local-only' (only the local Batch service and storage)", choices=NODE_NETWORKS)
    node_host_cas: bool = option(
        True, "--node-host-cas", "with --node-image on the host network: nodes trust this machine's extra CA "
        "certificates (those in /usr/local/share/ca-certificates, e.g. a TLS-inspecting proxy's), as the network "
        "they share needs (default: on; one line says so)", negatable=True)
    podman_store: Path | None = option(
        None, "--podman-store", "podman store of container pools (default: 'podman' next to --node-image's DIR, "
        "else ROOT/cache/podman)", parse=Path, metavar="DIR")
    # Pools that change (pool_management): Batch's autoscale interval minimum is 5 minutes and it samples task
    # counts every 30 s; tests lower both. max_pool_nodes caps a pool's nodes of each kind (like a core quota).
    autoscale_min_interval: float = option(
        300.0, "--autoscale-min-interval", "shortest autoScaleEvaluationInterval accepted (Batch: 300 s; lower it "
        "for quick local autoscaling)", parse=float, metavar="SECONDS")
    autoscale_sample_seconds: float = option(
        30.0, "--autoscale-sample-seconds", "seconds between the task-count samples autoscale formulas read "
        "(Batch: 30)", parse=float, metavar="SECONDS")
    max_pool_nodes: int = option(32, "--max-pool-nodes", "most nodes of each kind (dedicated, Spot) one pool may "
                                 "have", parse=int, metavar="N")
    active_job_quota: int = option(
        0, "--active-job-quota", "active jobs the account may hold; more answers 409 "
        "ActiveJobAndScheduleQuotaReached (0: no limit)", parse=int)
    # Azure's timing and limits (model/azure_timing.py, model/account_capacity.py; figures in docs/local-service.md)
    timing: str = option(
        "fast", "--timing", "'fast': nodes join at once (default, for tests and demos); 'azure': resizes, node "
        "start-up, autoscale samples and Spot eviction notices take Azure's time (drawn with --seed)", choices=TIMINGS)
    time_scale: float = option(
        1.0, "--time-scale", "multiply every delay and interval of the timing (allocation, start-up, autoscale "
        "interval and its 5-minute minimum, samples and their delay, eviction notice) by F, e.g. 0.01",
        parse=float, metavar="F")
    quotas: AccountQuotas = option(
        AccountQuotas(), "--quota", "account quotas: dedicated cores in total and per VM family, Spot cores, pools; "
        "a resize stops where a core quota ends, with Batch's resizeErrors (default: none)", parse=parse_quotas,
        metavar="NAME=N[,NAME=N...]")
    spot_shortage: SpotShortage | None = option(
        None, "--spot-shortage", "no Spot capacity for SECONDS, AFTER seconds after the start: Spot resizes stop "
        "with AllocationFailed and running Spot nodes are preempted after their eviction notice",
        parse=SpotShortage.parse, metavar="SECONDS[@AFTER]")
    outages: tuple = ()  # outage.ScheduledOutage entries (--outage KIND:SECONDS[@AFTER])
    # How long a node keeps retrying an output upload that failed transiently (connection lost, 408/429/5xx),
    # with back-off, before the task fails with FileUploadMiscError (blob_transfer.UploadRetry); tests lower it.
    node_upload_retry_seconds: float = 30.0

    @property
    def tls_enabled(self) -> bool:
        return self.https or self.entra is not None

    def validate(self) -> None:
        if self.host not in LOOPBACK_HOSTS:
            raise ConfigError(f"host {self.host!r}: the local service listens on loopback only; use 127.0.0.1")
        if not 0.0 <= self.fail_fraction <= 1.0 or not 0.0 <= self.preempt_fraction <= 1.0:
            raise ConfigError("--fail-fraction and --preempt-fraction must be between 0 and 1")
        if self.simulate is not None and not 0.0 <= self.simulate < float("inf"):
            raise ConfigError(f"--simulate {self.simulate}: give the seconds each task takes, 0 or more")
        if not 0.0 <= self.simulate_fail <= 1.0:
            raise ConfigError(f"--simulate-fail {self.simulate_fail}: give a fraction between 0 and 1")
        if self.simulate_fail and self.simulate is None:
            raise ConfigError("--simulate-fail needs --simulate SECONDS (it applies to simulated tasks only)")
        if self.simulate is not None and self.node_image is not None:
            raise ConfigError("--simulate runs no processes, so --node-image has nothing to run: give one of them")
        if self.node_upload_retry_seconds < 0:
            raise ConfigError(f"node_upload_retry_seconds {self.node_upload_retry_seconds}: give 0 or more seconds")
        if self.active_job_quota < 0:
            raise ConfigError(f"--active-job-quota {self.active_job_quota}: give 0 (no limit) or a positive number")
        try:
            fault_statuses(self.fail_status)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.entra is not None and self.entra.token_lifetime < 1:
            raise ConfigError(f"--token-lifetime {self.entra.token_lifetime}: give a number of seconds of at least 1")
        if self.autoscale_min_interval < 0 or self.autoscale_sample_seconds <= 0 or self.max_pool_nodes < 1:
            raise ConfigError("--autoscale-min-interval must be ≥ 0, --autoscale-sample-seconds > 0 and "
                              "--max-pool-nodes ≥ 1")
        if not 0 < self.time_scale < float("inf"):
            raise ConfigError(f"--time-scale {self.time_scale}: give a factor above 0, e.g. 0.01 (100 times faster)")
        ids = [p.id.lower() for p in self.pools]
        if len(set(ids)) != len(ids):
            raise ConfigError("--pool: pool ids must be unique (case-insensitive)")
        if self.node_network not in NODE_NETWORKS:
            raise ConfigError(f"--node-network {self.node_network!r}: choose one of {', '.join(NODE_NETWORKS)}")
        if self.node_network != "host" and self.node_image is None:
            raise ConfigError("--node-network local-only needs --node-image DIR (host nodes share the host's network)")
        self._check_node_prerequisites()

    def _check_node_prerequisites(self) -> None:
        """What --node-image and container pools need on this machine, checked before anything starts."""
        from .nodes import containers, isolation, node_image

        if self.node_image is not None:
            try:
                node_image.load(Path(self.node_image))
            except node_image.NodeImageError as exc:
                raise ConfigError(f"--node-image: {exc}") from None
            missing = isolation.missing_packages()
            if missing:
                raise ConfigError(f"--node-image needs {', '.join(missing)}: install the Debian package(s)")
            if os.geteuid() != 0:
                raise ConfigError("--node-image needs root (nodes mount their disk and namespaces): run as root")
        container_pools = [p.id for p in self.pools if p.container_enabled]
        missing = containers.missing_packages() if container_pools else []
        if missing:
            raise ConfigError(f"pool {container_pools[0]!r} is container-enabled, which needs podman: install the "
                              f"Debian package(s) {' '.join(missing)}")

    def podman_store_dir(self) -> Path:
        """Where container pools keep their images: --podman-store, else `podman/` beside the node image (where
        `azbatch-local node-image build --podman` imports it), else ROOT/cache/podman."""
        if self.podman_store is not None:
            return Path(self.podman_store)
        if self.node_image is not None:
            return Path(self.node_image).absolute().parent / "podman"
        return Path(self.root) / "cache" / "podman"
