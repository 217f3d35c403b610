"""The settings Snakemake shows and parses: `ExecutorSettings` (`--azbatch-*` flags, profile keys,
`SNAKEMAKE_AZBATCH_*` variables). `config/` turns them into a checked `Config`."""

import types
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

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
BOOTSTRAP_MODES = ("auto", "pip", "offline", "container", "app-package", "none")
NODE_TOOLS = ("conda", "apptainer")
# Miniforge's documented stable download URL (always the latest release).
DEFAULT_CONDA_INSTALLER = "https://github.com/conda-forge/miniforge/releases/latest/download/Miniforge3-Linux-x86_64.sh"
DEFAULT_CONTAINER = "snakemake-azbatch"
DEFAULT_REPORT_DIR = ".snakemake/azbatch/reports"
# Batch's current Ubuntu LTS: its python3 (3.12) runs the pip and offline bootstraps (Snakemake 9 needs >= 3.11).
DEFAULT_POOL_IMAGE = "ubuntu-24.04"


class SettingsError(ApiError):
    """A bad setting; the message is one line naming the setting and what to do. (An ApiError, because Snakemake
    prints those as one line, without a traceback.)"""


def _setting(help: str, unset: Optional[str] = None, **metadata) -> dict:
    """A setting's metadata. `unset`: what an unset (None) setting means, for `--help`'s "Default: ..." line."""
    return {"help": help, "env_var": True, **({"unset": unset} if unset else {}), **metadata}


def default_text(f) -> str:
    """What `--help` says a setting's default is, from the dataclass field itself."""
    if "unset" in f.metadata:
        return f.metadata["unset"]
    value = f.default_factory() if f.default is MISSING else f.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "" or value == []:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help_with_defaults(cls):
    """Every setting's help ends with its default (Snakemake shows none for plugin settings), derived from the
    field, so the help cannot drift from the code. Field metadata is read-only: each field gets a new mapping."""
    for f in fields(cls):
        help_text = f.metadata["help"].rstrip()
        tail = "Required." if f.metadata.get("required") else f"Default: {default_text(f)}."
        f.metadata = types.MappingProxyType({**f.metadata, "help": f"{help_text} {tail}"})
    return cls


# Field types must be runtime typing objects (Optional[...], no `from __future__ import annotations`): Snakemake
# builds the --azbatch-* argparse flags from them, and silently drops the plugin when it cannot.
@_help_with_defaults
@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    account_url: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Batch account URL, e.g. https://NAME.REGION.batch.azure.com. "
            "Falls back to AZURE_BATCH_ENDPOINT (which, as in the Azure CLI, may omit https://).",
            metavar="URL",
        ),
    )
    account_name: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Batch account name. Falls back to AZURE_BATCH_ACCOUNT.",
            unset="the account URL's first host label",
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
            "Id of the Batch pool that runs the jobs; it must exist unless --azbatch-pool-vm-size asks the run "
            "to create it. "
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
            "Keep the run's Batch job(s) after the run (terminated, not deleted) for inspection, and the run's own "
            "storage container (its tasks' outputs and logs)."
        ),
    )
    keep_orphans: bool = field(
        default=False,
        metadata=_setting(
            "Leave active Batch jobs of dead earlier runs of this workflow (same host and working directory) "
            "running; by default a run terminates them and their tasks before it submits (crash recovery). Jobs "
            "of live runs (heartbeat, see --azbatch-heartbeat-stale) are always left alone."
        ),
    )
    no_adopt: bool = field(
        default=False,
        metadata=_setting(
            "Never adopt the tasks of a dead earlier run of this workflow: end its Batch jobs at start and submit "
            "everything anew. By default a job whose content key (rule, wildcards, params, code, software "
            "environment, input contents, threads, resources, pool) matches a task the dead run left running or "
            "finished takes that task instead of submitting (docs/how-it-runs.md)."
        ),
    )
    leave_on_hangup: bool = field(
        default=False,
        metadata=_setting(
            "On SIGHUP (a closed terminal, a dropped SSH session) exit and leave the run's tasks running on Batch "
            "for the next run of this workflow to adopt (with --rerun-incomplete); by default SIGHUP ends the "
            "run's tasks like SIGTERM and Ctrl-C."
        ),
    )
    heartbeat_interval: float = field(
        default=600.0,
        metadata=_setting(
            "Advanced: seconds between a run's heartbeats (one metadata update per Batch job of the run), which "
            "tell later runs of this workflow that it is alive.",
            metavar="SECONDS",
        ),
    )
    heartbeat_stale: float = field(
        default=1800.0,
        metadata=_setting(
            "Advanced: seconds without a heartbeat after which another run of this workflow counts as dead and "
            "its Batch jobs are ended (at least 3 of that run's own heartbeat intervals). A run on this machine "
            "whose process has ended counts as dead at once.",
            metavar="SECONDS",
        ),
    )
    vm_sizes: list[str] = field(
        default_factory=list,
        metadata=_setting(
            "VM sizes the resource check does not know, or knows differently: NAME=CORES:MEM_MB:DISK_MB[:GPUS] "
            "(DISK_MB: the temporary disk holding task directories).",
            metavar="SIZE",
            nargs="+",
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
            "(the file name when omitted).",
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
            "How Python and Snakemake get onto the nodes: 'pip' (a job preparation task installs the run's "
            "Snakemake version with uv from the package index into the node's shared directory, once per node; "
            "the node needs python3 >= 3.11 and internet), 'offline' (the same from a wheelhouse the plugin builds "
            "here and uploads once; nodes need no internet), 'container' (the container image provides it), "
            "'app-package' (the application packages provide it), 'none' (the node image provides it), or 'auto' "
            "(container when an image is set, app-package when packages are set, else pip).",
            choices=list(BOOTSTRAP_MODES),
            metavar="MODE",
        ),
    )
    node_python: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Python version (X.Y) of the nodes' python3, for which the offline wheelhouse is built.",
            unset="from the pool's image when known (e.g. Ubuntu 24.04: 3.12), else 3.12",
            metavar="X.Y",
        ),
    )
    node_packages: list[str] = field(
        default_factory=list,
        metadata=_setting(
            "More Python requirements (pip syntax, e.g. matplotlib==3.9.2) the bootstrap installs with Snakemake "
            "into the node's environment (pip and offline modes), for the workflow's script: and run: code.",
            metavar="REQUIREMENT",
            nargs="+",
        ),
    )
    node_provides: list[str] = field(
        default_factory=list,
        metadata=_setting(
            "Tools the pool's nodes already have from their image or start task (conda, apptainer), so the "
            "bootstrap does not install them; needed for --software-deployment-method conda / apptainer with "
            "bootstrap modes that cannot install them.",
            metavar="TOOL",
            nargs="+",
        ),
    )
    node_ca_bundle: Optional[str] = field(
        default=None,
        metadata=_setting(
            "PEM file of CA certificates the nodes must trust besides their own (e.g. a TLS-inspecting proxy's "
            "CA): staged once (content-addressed), added to each node's trust store by the pip and offline "
            "bootstraps, and named by SSL_CERT_FILE / REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE / PIP_CERT for the "
            "bootstrap and every task.",
            metavar="PATH",
        ),
    )
    conda_installer: str = field(
        default=DEFAULT_CONDA_INSTALLER,
        metadata=_setting(
            "URL of the conda installer (Miniforge) the nodes download once when the workflow uses "
            "--software-deployment-method conda (or apptainer, installed from conda-forge); e.g. a mirror the "
            "nodes reach.",
            metavar="URL",
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
            unset="none (SAS URLs)",
            metavar="RESOURCE_ID",
        ),
    )
    sas_hours: float = field(
        default=48,
        metadata=_setting(
            "Lifetime in hours of each SAS link given to nodes (more than 0; fractions allowed, e.g. 0.02 for "
            "72-second links in a rehearsal). Links are signed afresh as they age, so it need not cover the run, "
            "only the longest task. At most 168 with Microsoft Entra ID (a user-delegation SAS lives at most 7 "
            "days).",
            metavar="HOURS",
        ),
    )
    upload_concurrency: int = field(
        default=8,
        metadata=_setting("Number of files uploaded or downloaded in parallel.", metavar="N"),
    )
    status_interval: Optional[float] = field(
        default=None,
        metadata=_setting(
            "Seconds between status rounds (one task-list request per Batch job each round).",
            unset="Snakemake's --seconds-between-status-checks, at least 1 (1 for a loopback account URL, i.e. the "
            "local service)",
            metavar="SECONDS",
        ),
    )
    # ---- scale: submission, inputs, polling, retention (config/scale.py) ----
    submit_concurrency: int = field(
        default=4,
        metadata=_setting(
            "Task-collection requests (up to 100 tasks each) sent in parallel when many jobs are ready.",
            metavar="N",
        ),
    )
    input_manifest_threshold: int = field(
        default=50,
        metadata=_setting(
            "A task with more inputs than this gets them through one content-addressed manifest blob that it "
            "fetches and checks (sha256) itself, instead of one resource file each (Batch refuses task "
            "definitions over 1 MB).",
            metavar="N",
        ),
    )
    status_interval_max: Optional[float] = field(
        default=None,
        metadata=_setting(
            "Longest wait between status rounds: the interval starts at --azbatch-status-interval, grows while "
            "no task completes and drops back when one does.",
            unset="10 times the interval, at most 60",
            metavar="SECONDS",
        ),
    )
    unusable_wait: float = field(
        default=120.0,
        metadata=_setting(
            "Seconds a run waits while no node of a pool can run tasks (all unusable, e.g. Batch lost contact "
            "with them or their disks are full) for Batch to recover one; then it ends with one line and "
            "terminates its Batch job.",
            metavar="SECONDS",
        ),
    )
    task_retention: int = field(
        default=60,
        metadata=_setting(
            "Minutes Batch keeps a finished task's directory on its node (the task's retentionTime); outputs "
            "and logs are already in Blob storage by then. 0 keeps Batch's default (7 days).",
            metavar="MINUTES",
        ),
    )
    outage_tolerance: float = field(
        default=10.0,
        metadata=_setting(
            "Minutes the run waits, saying so, while the Batch account or the staging storage account is "
            "unreachable mid-run (tasks keep running on Batch meanwhile); after that the run ends and terminates "
            "its Batch jobs.",
            metavar="MINUTES",
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
            unset="none (no cost estimate)",
            metavar="PRICE[,LOW_PRIORITY_PRICE]",
        ),
    )
    price_node_hour: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Price of one node-hour (the VM's hourly price; a task uses slots / slots-per-node of a node) for the "
            "report's cost estimate, as DEDICATED[,LOW_PRIORITY]; one value prices both.",
            unset="none (no cost estimate)",
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
    # ---- pool creation (config/pool_creation.py, pool_creation.py) ----
    pool_vm_size: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Create the pool --azbatch-pool-id with this VM size (e.g. standard_d4s_v3) when it does not exist.",
            unset="none (never create a pool)",
            metavar="VM_SIZE",
        ),
    )
    pool_image: str = field(
        default=DEFAULT_POOL_IMAGE,
        metadata=_setting(
            "Image of a created pool: ubuntu-24.04, ubuntu-22.04 (its python3 3.10 is too old for the pip and "
            "offline bootstraps), or PUBLISHER:OFFER:SKU[:VERSION] together with --azbatch-pool-node-agent.",
            metavar="IMAGE",
        ),
    )
    pool_node_agent: Optional[str] = field(
        default=None,
        metadata=_setting("Node agent SKU id for a PUBLISHER:OFFER:SKU image, e.g. 'batch.node.ubuntu 24.04'.",
                          metavar="SKU_ID"),
    )
    pool_nodes: Optional[str] = field(
        default=None,
        metadata=_setting("Fixed size of a created pool: DEDICATED[,SPOT] nodes, e.g. 0,4.",
                          unset="none (autoscale, see --azbatch-pool-autoscale)", metavar="DEDICATED[,SPOT]"),
    )
    pool_autoscale: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Autoscale a created pool between MIN and MAX nodes on its pending tasks (grows from zero, shrinks "
            "when idle, lets running tasks finish).",
            unset="0-4 unless --azbatch-pool-nodes is given",
            metavar="MIN-MAX",
        ),
    )
    pool_spot: bool = field(
        default=False,
        metadata=_setting("The autoscaled nodes of a created pool are Spot (low-priority) nodes."),
    )
    pool_autoscale_formula: Optional[str] = field(
        default=None,
        metadata=_setting("Your own autoscale formula for a created pool (replaces the generated one).",
                          unset="none (the generated formula)", metavar="FORMULA"),
    )
    pool_autoscale_interval: float = field(
        default=5.0,
        metadata=_setting("Minutes between autoscale evaluations of a created pool (Batch's minimum is 5).",
                          metavar="MINUTES"),
    )
    pool_slots: Optional[int] = field(
        default=None,
        metadata=_setting("Task slots per node of a created pool.", unset="the VM size's vCPUs (1 if unknown)",
                          metavar="N"),
    )
    pool_start_task: Optional[str] = field(
        default=None,
        metadata=_setting("Start task command line of a created pool (runs on every node as it joins, as admin).",
                          metavar="COMMAND"),
    )
    pool_containers: bool = field(
        default=False,
        metadata=_setting("A created pool runs container tasks (containerConfiguration; named images become "
                          "Microsoft's container-ready Ubuntu HPC images)."),
    )
    pool_registry: Optional[str] = field(
        default=None,
        metadata=_setting(
            "Private container registry the nodes of a created container pool log in to (containerRegistries), "
            "e.g. myregistry.azurecr.io; needs --azbatch-pool-registry-user and "
            "--azbatch-pool-registry-password-var.",
            metavar="SERVER",
        ),
    )
    pool_registry_user: Optional[str] = field(
        default=None,
        metadata=_setting("User name for --azbatch-pool-registry (for Azure Container Registry: a token or "
                          "service principal name).", metavar="NAME"),
    )
    pool_registry_password_var: Optional[str] = field(
        default=None,
        metadata=_setting("Name of the environment variable that holds the password for --azbatch-pool-registry "
                          "(the password itself never goes on a command line).", metavar="VARIABLE"),
    )
    keep_pool: bool = field(
        default=False,
        metadata=_setting("Keep a pool this run created instead of deleting it at the end (a pool the run did "
                          "not create is never deleted)."),
    )
