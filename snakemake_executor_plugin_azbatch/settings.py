"""Executor settings (`--azbatch-*` flags / `SNAKEMAKE_AZBATCH_*` variables) and their resolution into a checked
configuration. Every problem is reported as one actionable line naming the setting to fix."""

import base64
import binascii
import math
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Mapping, Optional
from urllib.parse import urlparse

from snakemake.exceptions import ApiError
from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

ENV_PREFIX = "SNAKEMAKE_AZBATCH_"
# Azure CLI's own variables, honoured when the plugin's setting is absent.
CLI_FALLBACKS = {
    "account_url": "AZURE_BATCH_ENDPOINT",
    "account_name": "AZURE_BATCH_ACCOUNT",
    "account_key": "AZURE_BATCH_ACCESS_KEY",
    "storage_connection_string": "AZURE_STORAGE_CONNECTION_STRING",
}
BOOTSTRAP_MODES = ("auto", "pip", "container", "app-package", "none")
DEFAULT_CONTAINER = "snakemake-azbatch"
DEFAULT_REPORT_DIR = ".snakemake/azbatch/reports"

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_APP_PACKAGE_RE = re.compile(r"^([A-Za-z0-9_-]{1,64})(?::([A-Za-z0-9_.-]{1,64}))?$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SettingsError(ApiError):
    """A bad setting; the message is one line naming the setting and what to do. (An ApiError, because Snakemake
    prints those as one line, without a traceback.)"""


def _setting(help: str, **metadata) -> dict:
    return {"help": help, "env_var": True, **metadata}


# Field types must be runtime typing objects (Optional[...], no `from __future__ import annotations`): Snakemake
# builds the --azbatch-* argparse flags from them, and silently drops the plugin when it cannot.
@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    account_url: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Batch account URL, e.g. https://NAME.REGION.batch.azure.com. "
            "Falls back to AZURE_BATCH_ENDPOINT.",
            metavar="URL",
        ),
    )
    account_name: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Batch account name; derived from the account URL's first host label when absent. "
            "Falls back to AZURE_BATCH_ACCOUNT.",
            metavar="NAME",
        ),
    )
    account_key: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Batch account shared key (pass it via the environment variable, not on the command line). "
            "Falls back to AZURE_BATCH_ACCESS_KEY; when absent, Microsoft Entra ID is used through "
            "DefaultAzureCredential (e.g. after `az login`).",
            metavar="KEY",
        ),
    )
    pool_id: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Id of the pre-created Batch pool that runs the jobs (required). "
            "A rule can pick another pool with the resource azbatch_pool.",
            metavar="POOL",
            required=True,
        ),
    )
    storage_account_url: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Blob storage account URL used for staging, e.g. https://NAME.blob.core.windows.net. "
            "Used with --azbatch-storage-account-key, or alone with Microsoft Entra ID "
            "(user-delegation SAS).",
            metavar="URL",
        ),
    )
    storage_account_key: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Shared key of the staging storage account (pass it via the environment variable).",
            metavar="KEY",
        ),
    )
    storage_connection_string: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Connection string of the staging storage account (alternative to URL and key). "
            "Falls back to AZURE_STORAGE_CONNECTION_STRING.",
            metavar="CONNECTION_STRING",
        ),
    )
    storage_container: str = field(
        default=DEFAULT_CONTAINER,
        metadata=_setting(
            "Blob container used for staging inputs, sources and outputs; created when missing "
            "(if the credentials allow it).",
            metavar="CONTAINER",
        ),
    )
    storage_prefix: str = field(
        default="",
        metadata=_setting(
            "Prefix (virtual folder) for every blob the plugin writes in the staging container.",
            metavar="PREFIX",
        ),
    )
    keep_job: bool = field(
        default=False,
        metadata=_setting(
            "Keep the run's Batch job(s) after the run (terminated, not deleted) for inspection."
        ),
    )
    container_image: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Container image that runs every task (task containerSettings); it must provide Python and "
            "the same Snakemake version. A rule can override it with the resource azbatch_container_image.",
            metavar="IMAGE",
        ),
    )
    application_packages: list[str] = field(
        default_factory=list,
        metadata=_setting(
            "Batch application packages to install on the node for every task, as NAME[:VERSION] "
            "(as published with `az batch application package create`); each package's bin/ is put on PATH.",
            metavar="NAME[:VERSION]",
            nargs="+",
        ),
    )
    resource_files: list[str] = field(
        default_factory=list,
        metadata=_setting(
            "Extra resource files for every task, as [NODE_PATH=]SOURCE: SOURCE is a local file "
            "(uploaded) or an http(s) URL; NODE_PATH is relative to the task working directory "
            "(default: the file name).",
            metavar="[NODE_PATH=]SOURCE",
            nargs="+",
        ),
    )
    precommand: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Shell command run in every task before Snakemake (e.g. activating an environment).",
            metavar="COMMAND",
        ),
    )
    bootstrap: str = field(
        default="auto",
        metadata=_setting(
            "How Python and Snakemake get onto the nodes: 'pip' (a job preparation task installs the same "
            "Snakemake version into the node's shared directory once per node, unless it is already "
            "there), 'container' (the container image provides it), 'app-package' (the application "
            "packages provide it), 'none' (the node image provides it), or 'auto' (container when an "
            "image is set, app-package when packages are set, else pip).",
            choices=list(BOOTSTRAP_MODES),
            metavar="MODE",
        ),
    )
    mounted_paths: list[str] = field(
        default_factory=list,
        metadata=_setting(
            "Absolute paths already mounted on the pool's nodes at the same location; inputs under them "
            "are used in place instead of being staged.",
            metavar="PATH",
            nargs="+",
        ),
    )
    managed_identity: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Resource id of the pool's user-assigned managed identity; when set, nodes read inputs and "
            "write outputs with it (identityReference) instead of SAS URLs.",
            metavar="RESOURCE_ID",
        ),
    )
    sas_hours: int = field(
        default=48,
        metadata=_setting(
            "Validity in hours of the SAS URLs given to tasks; must cover the whole run.", metavar="HOURS"
        ),
    )
    upload_concurrency: int = field(
        default=8,
        metadata=_setting("Number of files uploaded or downloaded in parallel.", metavar="N"),
    )
    status_interval: Optional[float] = field(
        default=None,
        metadata=_setting(
            "Seconds between status rounds (one task-list request per Batch job each round); "
            "default: Snakemake's --seconds-between-status-checks, at least 1 (1 for a loopback account URL, "
            "i.e. the local service).",
            metavar="SECONDS",
        ),
    )
    # ---- run report and live progress (run_report/, progress.py) ----
    report_dir: str = field(
        default=DEFAULT_REPORT_DIR,
        metadata=_setting(
            "Directory for run reports: every run writes tasks.tsv, timeline.png, timeline.svg and report.html "
            "into DIR/<run id>/.",
            metavar="DIR",
        ),
    )
    price_core_hour: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Price of one core-hour (a task's slots x its run time) for the report's cost estimate, as "
            "DEDICATED[,LOW_PRIORITY]; one value prices both.",
            metavar="PRICE[,LOW_PRIORITY_PRICE]",
        ),
    )
    price_node_hour: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Price of one node-hour (the VM's hourly price; a task uses slots / slots-per-node of a node) for the "
            "report's cost estimate, as DEDICATED[,LOW_PRIORITY]; one value prices both.",
            metavar="PRICE[,LOW_PRIORITY_PRICE]",
        ),
    )
    progress_interval: float = field(
        default=10.0,
        metadata=_setting(
            "Seconds between live progress queries (one task-count request per Batch job and one pool "
            "node-count request); a line is printed when the counts change and at least every 30 s while tasks "
            "wait or run. 0 turns progress off; so does --quiet.",
            metavar="SECONDS",
        ),
    )


@dataclass(frozen=True)
class Prices:
    """A price per hour for dedicated and for low-priority (Spot) nodes."""

    dedicated: float
    low_priority: float


@dataclass(frozen=True)
class AppPackage:
    name: str
    version: str | None

    def reference(self) -> dict:
        ref = {"applicationId": self.name}
        if self.version:
            ref["version"] = self.version
        return ref

    @property
    def env_var(self) -> str:
        # Batch on Linux exports AZ_BATCH_APP_PACKAGE_<id>[_<version>] with '.', '-' and '#' flattened to '_'.
        name = f"AZ_BATCH_APP_PACKAGE_{self.name}" + (f"_{self.version}" if self.version else "")
        return re.sub(r"[.#-]", "_", name)


@dataclass(frozen=True)
class ExtraResourceFile:
    source: str  # local path or http(s) URL
    node_path: str

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Config:
    """Settings after fallbacks and validation."""

    account_url: str
    account_name: str | None
    account_key: str | None
    pool_id: str
    storage_account_url: str | None
    storage_account_key: str | None
    storage_connection_string: str | None
    storage_container: str
    storage_prefix: str
    keep_job: bool
    container_image: str | None
    application_packages: tuple[AppPackage, ...]
    resource_files: tuple[ExtraResourceFile, ...]
    precommand: str | None
    bootstrap: str  # resolved: pip | container | app-package | none
    mounted_paths: tuple[str, ...]
    managed_identity: str | None
    sas_hours: int
    upload_concurrency: int
    status_interval: float | None
    report_dir: str = DEFAULT_REPORT_DIR
    price_core_hour: Prices | None = None
    price_node_hour: Prices | None = None
    progress_interval: float = 10.0


def _split_items(values: list[str] | str | None, separators: str = r"[,\s]+") -> list[str]:
    """List settings also accept one comma-separated string (e.g. from an environment variable)."""
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in re.split(separators, value) if item.strip()]


def _flag(name: str) -> str:
    return f"--azbatch-{name.replace('_', '-')}"


def _where(name: str) -> str:
    fallback = CLI_FALLBACKS.get(name)
    return f"{_flag(name)} (or {ENV_PREFIX}{name.upper()}" + (f" / {fallback})" if fallback else ")")


def _check_url(name: str, url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SettingsError(f"azbatch: {_flag(name)} {url!r} is not an http(s) URL; use e.g. https://NAME.REGION.batch.azure.com")
    return url.rstrip("/")


def _check_key(name: str, key: str) -> None:
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(
            f"azbatch: {_where(name)} is not a valid base64 account key; copy the key from the portal or "
            "`az batch account keys list` / `az storage account keys list`"
        ) from None


def account_name_from_url(url: str) -> str | None:
    host = urlparse(url).hostname or ""
    if re.fullmatch(r"[\d.]+|localhost|\[?[0-9a-f:]+\]?", host):
        return None  # an IP or localhost carries no account name
    return host.split(".")[0] or None


def resolve(settings: ExecutorSettings | None, environ: Mapping[str, str] | None = None) -> Config:
    """Apply env-var and Azure CLI fallbacks, validate, and return the configuration."""
    environ = os.environ if environ is None else environ
    settings = settings or ExecutorSettings()

    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(ExecutorSettings)}

    def value(name: str):
        # Direct API users construct ExecutorSettings without argparse, so variables apply to unset (default) fields.
        current = getattr(settings, name)
        if current not in (None, "", []) and current != defaults[name]:
            return current
        env = environ.get(ENV_PREFIX + name.upper())
        if env:
            return env
        fallback = CLI_FALLBACKS.get(name)
        if fallback and environ.get(fallback):
            return environ[fallback]
        return current

    account_url = value("account_url")
    if not account_url:
        raise SettingsError(
            f"azbatch: no Batch account URL; set {_where('account_url')}, e.g. https://NAME.REGION.batch.azure.com"
        )
    account_url = _check_url("account_url", account_url)
    account_key = value("account_key") or None
    account_name = value("account_name") or account_name_from_url(account_url)
    if account_key:
        _check_key("account_key", account_key)
        if not account_name:
            raise SettingsError(
                f"azbatch: cannot derive the Batch account name from {account_url}; set {_where('account_name')}"
            )

    pool_id = value("pool_id")
    if not pool_id:
        raise SettingsError(f"azbatch: no pool given; set {_where('pool_id')} to the id of a pre-created pool")
    if not _ID_RE.match(pool_id):
        raise SettingsError(f"azbatch: {_flag('pool_id')} {pool_id!r} is not a valid pool id (letters, digits, '-', '_', ≤ 64)")

    storage_connection_string = value("storage_connection_string") or None
    storage_account_url = value("storage_account_url") or None
    storage_account_key = value("storage_account_key") or None
    if storage_account_url:
        storage_account_url = _check_url("storage_account_url", storage_account_url)
    if storage_account_key:
        _check_key("storage_account_key", storage_account_key)
        if not storage_account_url:
            raise SettingsError(
                f"azbatch: {_flag('storage_account_key')} needs {_where('storage_account_url')} as well"
            )
    if storage_connection_string and "=" not in storage_connection_string:
        raise SettingsError(
            f"azbatch: {_where('storage_connection_string')} is not a connection string "
            "(expected KEY=VALUE;... as shown by `az storage account show-connection-string`)"
        )
    if not storage_account_url and not storage_connection_string:
        raise SettingsError(
            f"azbatch: no staging storage; set {_where('storage_account_url')} (with a key or Entra ID) "
            f"or {_where('storage_connection_string')}"
        )

    container = value("storage_container") or DEFAULT_CONTAINER
    if not _CONTAINER_RE.match(container):
        raise SettingsError(
            f"azbatch: {_flag('storage_container')} {container!r} is not a valid container name "
            "(3-63 lowercase letters, digits and single hyphens)"
        )
    prefix = (value("storage_prefix") or "").strip("/")
    if prefix:
        prefix += "/"

    packages = []
    for item in _split_items(value("application_packages")):
        m = _APP_PACKAGE_RE.match(item)
        if not m:
            raise SettingsError(
                f"azbatch: {_flag('application_packages')} {item!r}: expected NAME[:VERSION], e.g. tools:1.0"
            )
        packages.append(AppPackage(m.group(1), m.group(2)))

    extra_files = []
    for item in _split_items(value("resource_files"), r"[,\n]+"):
        # [NODE_PATH=]SOURCE: a URL's query string has '=' too, so the node path comes first.
        head, sep, tail = item.partition("=")
        node_path, source = (head, tail) if sep and "://" not in head else ("", item)
        node_path = node_path or os.path.basename(urlparse(source).path if "://" in source else source)
        if not node_path or os.path.isabs(node_path) or ".." in node_path.split("/"):
            raise SettingsError(
                f"azbatch: {_flag('resource_files')} {item!r}: NODE_PATH must be a relative path inside the "
                "task working directory, e.g. refs/genome.fa"
            )
        if "://" not in source and not os.path.isfile(source):
            raise SettingsError(f"azbatch: {_flag('resource_files')} {item!r}: no such local file {source!r}")
        extra_files.append(ExtraResourceFile(source, node_path))

    mounted = []
    for item in _split_items(value("mounted_paths"), r"[,\n]+"):
        if not os.path.isabs(item):
            raise SettingsError(
                f"azbatch: {_flag('mounted_paths')} {item!r} must be an absolute path mounted on the nodes"
            )
        mounted.append(os.path.normpath(item))

    image = value("container_image") or None
    bootstrap = value("bootstrap") or "auto"
    if bootstrap not in BOOTSTRAP_MODES:
        raise SettingsError(f"azbatch: {_flag('bootstrap')} {bootstrap!r}: choose one of {', '.join(BOOTSTRAP_MODES)}")
    if bootstrap == "auto":
        bootstrap = "container" if image else "app-package" if packages else "pip"
    if bootstrap == "container" and not image:
        raise SettingsError(f"azbatch: {_flag('bootstrap')} container needs {_where('container_image')}")
    if bootstrap == "app-package" and not packages:
        raise SettingsError(f"azbatch: {_flag('bootstrap')} app-package needs {_where('application_packages')}")

    def number(name: str, kind, minimum):
        raw = value(name)
        try:
            number = kind(raw) if raw is not None else None
        except (TypeError, ValueError):
            raise SettingsError(f"azbatch: {_where(name)} {raw!r} is not a number") from None
        if number is not None and number < minimum:
            raise SettingsError(f"azbatch: {_where(name)} must be at least {minimum}")
        return number

    keep_job = value("keep_job")
    if isinstance(keep_job, str):
        keep_job = keep_job.strip().lower() in ("1", "true", "yes", "on")

    return Config(
        account_url=account_url,
        account_name=account_name,
        account_key=account_key,
        pool_id=pool_id,
        storage_account_url=storage_account_url,
        storage_account_key=storage_account_key,
        storage_connection_string=storage_connection_string,
        storage_container=container,
        storage_prefix=prefix,
        keep_job=bool(keep_job),
        container_image=image,
        application_packages=tuple(packages),
        resource_files=tuple(extra_files),
        precommand=value("precommand") or None,
        bootstrap=bootstrap,
        mounted_paths=tuple(mounted),
        managed_identity=value("managed_identity") or None,
        sas_hours=number("sas_hours", int, 1),
        upload_concurrency=number("upload_concurrency", int, 1),
        status_interval=number("status_interval", float, 0.1),
        report_dir=value("report_dir") or DEFAULT_REPORT_DIR,
        price_core_hour=_prices("price_core_hour", value("price_core_hour")),
        price_node_hour=_prices("price_node_hour", value("price_node_hour")),
        progress_interval=number("progress_interval", float, 0),
    )


def _prices(name: str, raw) -> Prices | None:
    """PRICE or DEDICATED,LOW_PRIORITY (non-negative numbers) into Prices."""
    if raw in (None, ""):
        return None
    parts = [p.strip() for p in str(raw).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 0 or not math.isfinite(v) for v in values):
        raise SettingsError(
            f"azbatch: {_where(name)} {raw!r}: expected a price per hour as DEDICATED[,LOW_PRIORITY], e.g. 0.19,0.04"
        )
    return Prices(values[0], values[-1])
