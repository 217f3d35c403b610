"""The checked configuration of a run: `resolve(ExecutorSettings, environ) -> Config`, one module per concern.
Every problem is reported as one actionable line naming the setting to fix (`SettingsError`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from ..settings.executor_settings import ExecutorSettings, SettingsError
from .account import AccountConfig, account_name_from_url, resolve_account
from .node_bootstrap import NodeSoftwareConfig, resolve_bootstrap
from .numbers import KeepConfig, resolve_keep
from .packages import AppPackage, resolve_packages
from .pool_plan import PoolPlan, resolve_pool_plan
from .report_options import Prices, ReportConfig, resolve_reporting
from .resource_files import ExtraResourceFile, TaskFilesConfig, resolve_resource_files
from .scale import ScaleConfig, resolve_scale
from .storage_account import LinksConfig, StorageConfig, check_sas_lifetime, resolve_links, resolve_storage
from .values import SettingValues

__all__ = ["AccountConfig", "AppPackage", "Config", "ExtraResourceFile", "KeepConfig", "LinksConfig",
           "NodeSoftwareConfig", "PoolPlan", "Prices", "ReportConfig", "ScaleConfig", "SettingsError",
           "StorageConfig", "TaskFilesConfig", "account_name_from_url", "resolve"]


@dataclass(frozen=True)
class Config:
    """Settings after fallbacks and validation, one frozen part per concern (each from its module here). No field
    has a default: every value comes from `resolve`, and an unset setting's default is stated once, on its
    `ExecutorSettings` field."""

    account: AccountConfig  # the Batch account and the default pool
    storage: StorageConfig  # the staging storage account
    links: LinksConfig  # how nodes reach it: SAS lifetime or managed identity
    software: NodeSoftwareConfig  # bootstrap, image, packages, what nodes provide
    files: TaskFilesConfig  # extra resource files, mounted paths
    pools: PoolPlan  # the pool the run creates, VM sizes
    scale: ScaleConfig  # concurrency, intervals, waits, heartbeat
    report: ReportConfig  # run report and progress
    keep: KeepConfig  # what is kept after the run


def resolve(settings: ExecutorSettings | None, environ: Mapping[str, str] | None = None) -> Config:
    """Apply env-var and Azure CLI fallbacks, validate, and return the configuration."""
    values = SettingValues(settings or ExecutorSettings(), os.environ if environ is None else environ)
    # In this order, so the first problem reported is the same whatever else is wrong.
    account, storage, packages = resolve_account(values), resolve_storage(values), resolve_packages(values)
    files = resolve_resource_files(values)
    software = resolve_bootstrap(values, packages)
    keep, links = resolve_keep(values), resolve_links(values)
    report, pools, scale = resolve_reporting(values), resolve_pool_plan(values), resolve_scale(values)
    check_sas_lifetime(storage, links)
    return Config(account=account, storage=storage, links=links, software=software, files=files, pools=pools,
                  scale=scale, report=report, keep=keep)
