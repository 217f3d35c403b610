"""Settings of a pool the run creates (checked in config/pool_plan.py, built by pools/pool_creation.py)."""

from dataclasses import dataclass, field
from typing import Optional

from .setting_help import setting

# Batch's current Ubuntu LTS: its python3 (3.12) runs the pip and offline bootstraps (Snakemake 9 needs >= 3.11).
DEFAULT_POOL_IMAGE = "ubuntu-24.04"
DEFAULT_AUTOSCALE = (0, 4)  # MIN, MAX nodes of a created pool without --azbatch-pool-nodes


# Runtime typing objects only (no `from __future__ import annotations`): Snakemake builds the flags from them.
@dataclass
class PoolFields:
    """The pool the run creates when it does not exist."""

    pool_vm_size: Optional[str] = field(
        default=None,
        metadata=setting(
            "Create the pool --azbatch-pool-id with this VM size (e.g. standard_d4s_v3) when it does not exist.",
            unset="none (never create a pool)",
            metavar="VM_SIZE",
        ),
    )
    pool_image: str = field(
        default=DEFAULT_POOL_IMAGE,
        metadata=setting(
            "Image of a created pool: ubuntu-24.04, ubuntu-22.04 (its python3 3.10 is too old for the pip and "
            "offline bootstraps), or PUBLISHER:OFFER:SKU[:VERSION] together with --azbatch-pool-node-agent.",
            metavar="IMAGE",
        ),
    )
    pool_node_agent: Optional[str] = field(
        default=None,
        metadata=setting("Node agent SKU id for a PUBLISHER:OFFER:SKU image, e.g. 'batch.node.ubuntu 24.04'.",
                          metavar="SKU_ID"),
    )
    pool_nodes: Optional[str] = field(
        default=None,
        metadata=setting("Fixed size of a created pool: DEDICATED[,SPOT] nodes, e.g. 0,4.",
                          unset="none (autoscale, see --azbatch-pool-autoscale)", metavar="DEDICATED[,SPOT]"),
    )
    pool_autoscale: Optional[str] = field(
        default=None,
        metadata=setting(
            "Autoscale a created pool between MIN and MAX nodes on its pending tasks (grows from zero, shrinks "
            "when idle, lets running tasks finish).",
            unset=f"{DEFAULT_AUTOSCALE[0]}-{DEFAULT_AUTOSCALE[1]} unless --azbatch-pool-nodes is given",
            metavar="MIN-MAX",
        ),
    )
    pool_spot: bool = field(
        default=False,
        metadata=setting("The autoscaled nodes of a created pool are Spot (low-priority) nodes."),
    )
    pool_autoscale_formula: Optional[str] = field(
        default=None,
        metadata=setting("Your own autoscale formula for a created pool (replaces the generated one).",
                          unset="none (the generated formula)", metavar="FORMULA"),
    )
    pool_autoscale_interval: float = field(
        default=5.0,
        metadata=setting("Minutes between autoscale evaluations of a created pool (Batch's minimum is 5).",
                          metavar="MINUTES"),
    )
    pool_slots: Optional[int] = field(
        default=None,
        metadata=setting("Task slots per node of a created pool.", unset="the VM size's vCPUs (1 if unknown)",
                          metavar="N"),
    )
    pool_start_task: Optional[str] = field(
        default=None,
        metadata=setting("Start task command line of a created pool (runs on every node as it joins, as admin).",
                          metavar="COMMAND"),
    )
    pool_containers: bool = field(
        default=False,
        metadata=setting("A created pool runs container tasks (containerConfiguration; named images become "
                          "Microsoft's container-ready Ubuntu HPC images)."),
    )
    pool_registry: Optional[str] = field(
        default=None,
        metadata=setting(
            "Private container registry the nodes of a created container pool log in to (containerRegistries), "
            "e.g. myregistry.azurecr.io; needs --azbatch-pool-registry-user and "
            "--azbatch-pool-registry-password-var.",
            metavar="SERVER",
        ),
    )
    pool_registry_user: Optional[str] = field(
        default=None,
        metadata=setting("User name for --azbatch-pool-registry (for Azure Container Registry: a token or "
                          "service principal name).", metavar="NAME"),
    )
    pool_registry_password_var: Optional[str] = field(
        default=None,
        metadata=setting("Name of the environment variable that holds the password for --azbatch-pool-registry "
                          "(the password itself never goes on a command line).", metavar="VARIABLE"),
    )
    keep_pool: bool = field(
        default=False,
        metadata=setting("Keep a pool this run created instead of deleting it at the end (a pool the run did "
                          "not create is never deleted)."),
    )
