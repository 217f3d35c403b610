"""Creating the run's pool when asked: the Pools_AddPool body, the autoscale formula, the preflight line.

Pure (no network): `batch_client.BatchService` sends what this builds, `run/pool_guard` decides when. Task slots per node
come from the VM size's vCPUs (`vm_sizes.BUILT_IN`, the table of common sizes; unknown sizes get 1 slot and a hint to
set --azbatch-pool-slots).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import vm_sizes

# Named images: (publisher, offer, sku, node agent SKU id); container pools need Docker-compatible images.
IMAGES = {
    "ubuntu-22.04": ("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", "batch.node.ubuntu 22.04"),
    "ubuntu-24.04": ("canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04"),
}
CONTAINER_IMAGES = {
    "ubuntu-22.04": ("microsoft-dsvm", "ubuntu-hpc", "2204", "batch.node.ubuntu 22.04"),
    "ubuntu-24.04": ("microsoft-dsvm", "ubuntu-hpc", "2404", "batch.node.ubuntu 24.04"),
}
IMAGE_REFERENCE = re.compile(r"^([^:\s]+):([^:\s]+):([^:\s]+)(?::([^:\s]+))?$")


@dataclass(frozen=True)
class PoolCreation:
    """What to create when the pool does not exist (resolved and checked by config/pool_plan.py)."""

    vm_size: str
    image: tuple[str, str, str, str]  # publisher, offer, sku, version
    node_agent: str
    image_name: str  # as the user gave it, for messages
    dedicated: int = 0
    spot: int = 0
    autoscale: tuple[int, int] | None = None  # (min, max) nodes
    autoscale_spot: bool = False
    formula: str | None = None  # a custom formula
    interval_minutes: float = 5.0
    slots: int = 1
    start_task: str | None = None
    containers: bool = False
    keep: bool = False
    registry: RegistryLogin | None = None  # containerRegistries of a container pool


@dataclass(frozen=True)
class RegistryLogin:
    """A private container registry the created pool's nodes log in to; the password came from the environment
    variable `password_variable` and is never shown (repr, messages)."""

    server: str
    username: str
    password_variable: str
    password: str = field(repr=False, default="")

    def body(self) -> dict:
        return {"registryServer": self.server, "username": self.username, "password": self.password}


def slots_for(vm_size: str) -> int | None:
    """One task slot per vCPU of the VM size, from the one VM-size table (vm_sizes.BUILT_IN)."""
    size = vm_sizes.BUILT_IN.get(vm_size.lower())
    return size.cores if size else None


def autoscale_formula(low: int, high: int, slots: int, spot: bool, initial: int = 0) -> str:
    """Nodes for the pending tasks (waiting + running), between low and high. The first evaluation, at creation,
    has no samples yet (Batch takes one every 30 s): it uses `initial`, the tasks the run knows are ready, so the
    first nodes are asked for at once rather than an interval later. Then recent samples only while few exist;
    then the larger of the latest sample and the 5-minute average, so a short lull does not shrink the pool.
    Leaving nodes finish their tasks (taskcompletion)."""
    target, other = ("$TargetLowPriorityNodes", "$TargetDedicatedNodes") if spot else (
        "$TargetDedicatedNodes", "$TargetLowPriorityNodes")
    return (
        "$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5);\n"
        f"$pending = $samples == 0 ? {max(0, initial)} : $samples < 70 ? max(0, $PendingTasks.GetSample(1)) : "
        "max($PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 5)));\n"
        f"$nodes = min({high}, max({low}, ($pending + {slots - 1}) / {slots}));\n"
        f"{target} = $nodes;\n"
        f"{other} = 0;\n"
        "$NodeDeallocationOption = taskcompletion;"
    )


def iso_minutes(minutes: float) -> str:
    return f"PT{round(minutes * 60, 3):g}S"


def pool_body(creation: PoolCreation, pool_id: str, container_images: tuple[str, ...] = (),
              ready_tasks: int = 0) -> dict:
    """The Pools_AddPool body; `ready_tasks`: tasks the run can submit at once (the generated formula's first
    target)."""
    publisher, offer, sku, version = creation.image
    vm: dict = {"imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": version},
                "nodeAgentSKUId": creation.node_agent}
    if creation.containers:
        vm["containerConfiguration"] = {"type": "dockerCompatible",
                                        **({"containerImageNames": list(container_images)} if container_images else {}),
                                        **({"containerRegistries": [creation.registry.body()]}
                                           if creation.registry else {})}
    body: dict = {"id": pool_id, "vmSize": creation.vm_size, "virtualMachineConfiguration": vm,
                  "taskSlotsPerNode": creation.slots, "taskSchedulingPolicy": {"nodeFillType": "pack"},
                  "metadata": [{"name": "created-by", "value": "snakemake-executor-plugin-azbatch"}]}
    if creation.autoscale is not None or creation.formula:
        low, high = creation.autoscale or (0, 0)
        body.update({"enableAutoScale": True, "autoScaleEvaluationInterval": iso_minutes(creation.interval_minutes),
                     "autoScaleFormula": creation.formula
                     or autoscale_formula(low, high, creation.slots, creation.autoscale_spot, ready_tasks)})
    else:
        body.update({"targetDedicatedNodes": creation.dedicated, "targetLowPriorityNodes": creation.spot})
    if creation.start_task:
        body["startTask"] = {"commandLine": creation.start_task, "waitForSuccess": True, "maxTaskRetryCount": 1,
                             "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}}
    return body


def describe(creation: PoolCreation, pool_id: str, price_dedicated: float | None = None,
             price_spot: float | None = None) -> str:
    """The preflight line: what will be created, and what a node-hour costs when a price is given."""
    if creation.formula:
        size = f"your autoscale formula (every {creation.interval_minutes:g} min)"
    elif creation.autoscale is not None:
        kind = "Spot" if creation.autoscale_spot else "dedicated"
        size = (f"autoscale {creation.autoscale[0]}-{creation.autoscale[1]} {kind} nodes on pending tasks "
                f"(every {creation.interval_minutes:g} min)")
    else:
        size = f"{creation.dedicated} dedicated + {creation.spot} Spot node(s)"
    if creation.registry:
        size += f"; logs in to {creation.registry.server} as {creation.registry.username}"
    fate = "kept after the run (--azbatch-keep-pool)" if creation.keep else "deleted at the end of the run"
    text = (f"azbatch: creating pool {pool_id}: {creation.vm_size}, {creation.slots} task slot(s) per node, "
            f"{creation.image_name}{' with containers' if creation.containers else ''}, {size}; {fate}")
    if price_dedicated is not None:
        text += f"; {price_dedicated:g} per dedicated node-hour, {price_spot:g} per Spot node-hour"
    return text
