"""The checked configuration of a run: `resolve(ExecutorSettings, environ) -> Config`, one module per concern.
Every problem is reported as one actionable line naming the setting to fix (`SettingsError`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..pools.pool_creation import PoolCreation
from ..settings.executor_settings import ExecutorSettings, SettingsError
from .account import account_name_from_url, resolve_account
from .node_bootstrap import resolve_bootstrap
from .numbers import resolve_numbers
from .packages import AppPackage, resolve_packages
from .pool_plan import resolve_pool_creation
from .report_options import Prices, resolve_reporting
from .resource_files import ExtraResourceFile, resolve_resource_files
from .scale import resolve_scale
from .storage_account import check_sas_lifetime, resolve_storage
from .values import SettingValues
from .machines import resolve_vm_sizes

__all__ = ["AppPackage", "Config", "ExtraResourceFile", "Prices", "SettingsError", "account_name_from_url", "resolve"]


@dataclass(frozen=True)
class Config:
    """Settings after fallbacks and validation. No field has a default: every value comes from `resolve`, and an
    unset setting's default is stated once, on its `ExecutorSettings` field."""

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
    bootstrap: str  # resolved: pip | offline | container | app-package | none
    mounted_paths: tuple[str, ...]
    managed_identity: str | None
    sas_hours: float
    upload_concurrency: int
    status_interval: float | None
    report_dir: str
    price_core_hour: Prices | None
    price_node_hour: Prices | None
    progress_interval: float
    pool_creation: PoolCreation | None  # create --azbatch-pool-id when it does not exist
    keep_orphans: bool
    vm_sizes: tuple  # vm_sizes.VmSize entries from --azbatch-vm-sizes
    submit_concurrency: int
    input_manifest_threshold: int
    status_interval_max: float | None
    task_retention_minutes: int
    unusable_wait: float  # seconds without a usable node in a pool before the run ends (node_states)
    heartbeat_interval: float  # seconds between heartbeats (run_watch.py)
    heartbeat_stale: float  # seconds without one before another run counts as dead (recovery.py)
    outage_tolerance_minutes: float  # Batch or storage unreachable mid-run this long ends the run (outage.py)
    node_python: str | None  # X.Y, for the offline wheelhouse
    node_provides: tuple[str, ...]  # conda, apptainer
    node_packages: tuple[str, ...]  # more requirements installed with Snakemake by the bootstrap
    conda_installer: str
    node_ca_bundle: Path | None  # CA certificates the nodes trust besides their own (bootstrap.py checks it)


def resolve(settings: ExecutorSettings | None, environ: Mapping[str, str] | None = None) -> Config:
    """Apply env-var and Azure CLI fallbacks, validate, and return the configuration."""
    values = SettingValues(settings or ExecutorSettings(), os.environ if environ is None else environ)
    # In this order, so the first problem reported is the same whatever else is wrong.
    resolved = {**resolve_account(values), **resolve_storage(values), **resolve_packages(values)}
    resolved.update(resolve_resource_files(values))
    resolved.update(resolve_bootstrap(values, has_packages=bool(resolved["application_packages"])))
    resolved.update(resolve_numbers(values))
    resolved.update(resolve_reporting(values))
    resolved.update(resolve_pool_creation(values))
    resolved.update(resolve_scale(values))
    resolved["managed_identity"] = values.get("managed_identity") or None
    resolved["vm_sizes"] = resolve_vm_sizes(values)
    check_sas_lifetime(resolved)
    return Config(**resolved)
