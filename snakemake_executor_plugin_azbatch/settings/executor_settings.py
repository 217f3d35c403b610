"""The settings Snakemake shows and parses: `ExecutorSettings` (`--azbatch-*` flags, profile keys,
`SNAKEMAKE_AZBATCH_*` variables), composed of one field group per concern; each field states its default once.
`config/` turns them into a checked `Config`."""

from dataclasses import dataclass

from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from .account_settings import DEFAULT_CONTAINER, AccountFields
from .node_settings import BOOTSTRAP_MODES, DEFAULT_CONDA_INSTALLER, NODE_TOOLS, NodeFields
from .pool_settings import DEFAULT_AUTOSCALE, DEFAULT_POOL_IMAGE, PoolFields
from .report_settings import DEFAULT_REPORT_DIR, ReportFields
from .scale_settings import ScaleFields
from .setting_help import CLI_FALLBACKS, ENV_PREFIX, SettingsError, default_text, help_with_defaults

__all__ = ["BOOTSTRAP_MODES", "CLI_FALLBACKS", "DEFAULT_AUTOSCALE", "DEFAULT_CONDA_INSTALLER", "DEFAULT_CONTAINER",
           "DEFAULT_POOL_IMAGE", "DEFAULT_REPORT_DIR", "ENV_PREFIX", "NODE_TOOLS", "ExecutorSettings", "SettingsError",
           "default_text"]


# The groups' fields in this order (a dataclass collects its bases' fields from the last base to the first):
# account, nodes, scale, report, pool creation; `--help` and docs/settings.md list them so.
@help_with_defaults
@dataclass
class ExecutorSettings(PoolFields, ReportFields, ScaleFields, NodeFields, AccountFields, ExecutorSettingsBase):
    pass
