"""Settings of what tasks get on their nodes: VM sizes, container image, packages, resource files, bootstrap, node
Python and tools, links and transfers."""

from dataclasses import dataclass, field
from typing import Optional

from .setting_help import setting

BOOTSTRAP_MODES = ("auto", "pip", "offline", "container", "app-package", "none")
NODE_TOOLS = ("conda", "apptainer")
# Miniforge's documented stable download URL (always the latest release).
DEFAULT_CONDA_INSTALLER = "https://github.com/conda-forge/miniforge/releases/latest/download/Miniforge3-Linux-x86_64.sh"


# Runtime typing objects only (no `from __future__ import annotations`): Snakemake builds the flags from them.
@dataclass
class NodeFields:
    """What tasks get on their nodes and how files reach them."""

    vm_sizes: list[str] = field(
        default_factory=list,
        metadata=setting(
            "VM sizes the resource check does not know, or knows differently: NAME=CORES:MEM_MB:DISK_MB[:GPUS] "
            "(DISK_MB: the temporary disk holding task directories).",
            metavar="SIZE",
            nargs="+",
        ),
    )
    container_image: Optional[str] = field(
        default=None,
        metadata=setting(
            "Container image that runs every task (task containerSettings); it must provide Python and "
            "the same Snakemake version. A rule can override it with the resource azbatch_container_image.",
            metavar="IMAGE",
        ),
    )
    application_packages: list[str] = field(
        default_factory=list,
        metadata=setting(
            "Batch application packages to install on the node for every task, as NAME[:VERSION] "
            "(as published with `az batch application package create`); each package's bin/ is put on PATH.",
            metavar="NAME[:VERSION]",
            nargs="+",
        ),
    )
    resource_files: list[str] = field(
        default_factory=list,
        metadata=setting(
            "Extra resource files for every task, as [NODE_PATH=]SOURCE: SOURCE is a local file "
            "(uploaded) or an http(s) URL; NODE_PATH is relative to the task working directory "
            "(the file name when omitted).",
            metavar="[NODE_PATH=]SOURCE",
            nargs="+",
        ),
    )
    precommand: Optional[str] = field(
        default=None,
        metadata=setting(
            "Shell command run in every task before Snakemake (e.g. activating an environment).",
            metavar="COMMAND",
        ),
    )
    bootstrap: str = field(
        default="auto",
        metadata=setting(
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
        metadata=setting(
            "Python version (X.Y) of the nodes' python3, for which the offline wheelhouse is built.",
            unset="from the pool's image when known (e.g. Ubuntu 24.04: 3.12), else 3.12",
            metavar="X.Y",
        ),
    )
    node_packages: list[str] = field(
        default_factory=list,
        metadata=setting(
            "More Python requirements (pip syntax, e.g. matplotlib==3.9.2) the bootstrap installs with Snakemake "
            "into the node's environment (pip and offline modes), for the workflow's script: and run: code.",
            metavar="REQUIREMENT",
            nargs="+",
        ),
    )
    node_provides: list[str] = field(
        default_factory=list,
        metadata=setting(
            "Tools the pool's nodes already have from their image or start task (conda, apptainer), so the "
            "bootstrap does not install them; needed for --software-deployment-method conda / apptainer with "
            "bootstrap modes that cannot install them.",
            metavar="TOOL",
            nargs="+",
        ),
    )
    node_ca_bundle: Optional[str] = field(
        default=None,
        metadata=setting(
            "PEM file of CA certificates the nodes must trust besides their own (e.g. a TLS-inspecting proxy's "
            "CA): staged once (content-addressed), added to each node's trust store by the pip and offline "
            "bootstraps, and named by SSL_CERT_FILE / REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE / PIP_CERT for the "
            "bootstrap and every task.",
            metavar="PATH",
        ),
    )
    conda_installer: str = field(
        default=DEFAULT_CONDA_INSTALLER,
        metadata=setting(
            "URL of the conda installer (Miniforge) the nodes download once when the workflow uses "
            "--software-deployment-method conda (or apptainer, installed from conda-forge); e.g. a mirror the "
            "nodes reach.",
            metavar="URL",
        ),
    )
    mounted_paths: list[str] = field(
        default_factory=list,
        metadata=setting(
            "Absolute paths already mounted on the pool's nodes at the same location; inputs under them "
            "are used in place instead of being staged.",
            metavar="PATH",
            nargs="+",
        ),
    )
    managed_identity: Optional[str] = field(
        default=None,
        metadata=setting(
            "Resource id of the pool's user-assigned managed identity; when set, nodes read inputs and "
            "write outputs with it (identityReference) instead of SAS URLs.",
            unset="none (SAS URLs)",
            metavar="RESOURCE_ID",
        ),
    )
    sas_hours: float = field(
        default=48,
        metadata=setting(
            "Lifetime in hours of each SAS link given to nodes (more than 0; fractions allowed, e.g. 0.02 for "
            "72-second links in a rehearsal). Links are signed afresh as they age, so it need not cover the run, "
            "only the longest task. At most 168 with Microsoft Entra ID (a user-delegation SAS lives at most 7 "
            "days).",
            metavar="HOURS",
        ),
    )
    upload_concurrency: int = field(
        default=8,
        metadata=setting("Number of files uploaded or downloaded in parallel.", metavar="N"),
    )
    status_interval: Optional[float] = field(
        default=None,
        metadata=setting(
            "Seconds between status rounds (one task-list request per Batch job each round).",
            unset="Snakemake's --seconds-between-status-checks, at least 1 (1 for a loopback account URL, i.e. the "
            "local service)",
            metavar="SECONDS",
        ),
    )
