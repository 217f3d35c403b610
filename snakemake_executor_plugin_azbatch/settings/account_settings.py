"""Settings of the Batch account, the default pool, staging storage and what a run leaves or ends (`--azbatch-
account-*`, `--azbatch-storage-*`, keep, heartbeat)."""

from dataclasses import dataclass, field
from typing import Optional

from .setting_help import setting

DEFAULT_CONTAINER = "snakemake-azbatch"


# Runtime typing objects only (no `from __future__ import annotations`): Snakemake builds the flags from them.
@dataclass
class AccountFields:
    """The Batch account and pool, staging storage, what is kept, the heartbeat."""

    account_url: Optional[str] = field(
        default=None,
        metadata=setting(
            "Batch account URL, e.g. https://NAME.REGION.batch.azure.com. "
            "Falls back to AZURE_BATCH_ENDPOINT (which, as in the Azure CLI, may omit https://).",
            metavar="URL",
        ),
    )
    account_name: Optional[str] = field(
        default=None,
        metadata=setting(
            "Batch account name. Falls back to AZURE_BATCH_ACCOUNT.",
            unset="the account URL's first host label",
            metavar="NAME",
        ),
    )
    account_key: Optional[str] = field(
        default=None,
        metadata=setting(
            "Batch account shared key (pass it via the environment variable, not on the command line). "
            "Falls back to AZURE_BATCH_ACCESS_KEY; when absent, Microsoft Entra ID is used through "
            "DefaultAzureCredential (e.g. after `az login`).",
            metavar="KEY",
        ),
    )
    pool_id: Optional[str] = field(
        default=None,
        metadata=setting(
            "Id of the Batch pool that runs the jobs; it must exist unless --azbatch-pool-vm-size asks the run "
            "to create it. "
            "A rule can pick another pool with the resource azbatch_pool.",
            metavar="POOL",
            required=True,
        ),
    )
    storage_account_url: Optional[str] = field(
        default=None,
        metadata=setting(
            "Blob storage account URL used for staging, e.g. https://NAME.blob.core.windows.net. "
            "Used with --azbatch-storage-account-key, or alone with Microsoft Entra ID "
            "(user-delegation SAS).",
            metavar="URL",
        ),
    )
    storage_account_key: Optional[str] = field(
        default=None,
        metadata=setting(
            "Shared key of the staging storage account (pass it via the environment variable).",
            metavar="KEY",
        ),
    )
    storage_connection_string: Optional[str] = field(
        default=None,
        metadata=setting(
            "Connection string of the staging storage account (alternative to URL and key). "
            "Falls back to AZURE_STORAGE_CONNECTION_STRING.",
            metavar="CONNECTION_STRING",
        ),
    )
    storage_container: str = field(
        default=DEFAULT_CONTAINER,
        metadata=setting(
            "Blob container used for staging inputs, sources and outputs; created when missing "
            "(if the credentials allow it).",
            metavar="CONTAINER",
        ),
    )
    storage_prefix: str = field(
        default="",
        metadata=setting(
            "Prefix (virtual folder) for every blob the plugin writes in the staging container.",
            metavar="PREFIX",
        ),
    )
    keep_job: bool = field(
        default=False,
        metadata=setting(
            "Keep the run's Batch job(s) after the run (terminated, not deleted) for inspection, and the run's own "
            "storage container (its tasks' outputs and logs)."
        ),
    )
    keep_orphans: bool = field(
        default=False,
        metadata=setting(
            "Leave active Batch jobs of dead earlier runs of this workflow (same host and working directory) "
            "running; by default a run terminates them and their tasks before it submits (crash recovery). Jobs "
            "of live runs (heartbeat, see --azbatch-heartbeat-stale) are always left alone."
        ),
    )
    heartbeat_interval: float = field(
        default=600.0,
        metadata=setting(
            "Advanced: seconds between a run's heartbeats (one metadata update per Batch job of the run), which "
            "tell later runs of this workflow that it is alive.",
            metavar="SECONDS",
        ),
    )
    heartbeat_stale: float = field(
        default=1800.0,
        metadata=setting(
            "Advanced: seconds without a heartbeat after which another run of this workflow counts as dead and "
            "its Batch jobs are ended (at least 3 of that run's own heartbeat intervals). A run on this machine "
            "whose process has ended counts as dead at once.",
            metavar="SECONDS",
        ),
    )
