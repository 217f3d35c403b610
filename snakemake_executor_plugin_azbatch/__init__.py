"""Snakemake executor plugin: run jobs as Azure Batch tasks on a pre-created pool, staging files through Blob
storage. Snakemake loads `ExecutorSettings`, `common_settings` and `Executor` from here."""

from snakemake_interface_executor_plugins.settings import CommonSettings

from .executor import Executor
from .settings.executor_settings import ExecutorSettings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]

common_settings = CommonSettings(
    non_local_exec=True,
    # No shared filesystem: the plugin stages inputs, sources and outputs through Blob storage itself.
    implies_no_shared_fs=True,
    job_deploy_sources=False,
    can_transfer_local_files=True,
    # Environment values go into the task's environmentSettings, never into the command line.
    pass_envvar_declarations_to_cmd=False,
    # Storage plugins must already be on the nodes (image, application package or precommand).
    auto_deploy_default_storage_provider=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_group_args=True,
    init_seconds_before_status_checks=0,
)
