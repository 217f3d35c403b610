"""What the run knows of an existing pool (`PoolInfo`: slots, nodes, growth, containers, VM size, image) and whether a
rule's container image fits it. Pure: azure_api/pool_preflight.py reads it from Batch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolInfo:
    id: str
    slots_per_node: int
    dedicated_nodes: int
    low_priority_nodes: int
    target_nodes: int
    autoscale: bool
    warnings: tuple[str, ...] = ()
    container_enabled: bool = False  # virtualMachineConfiguration.containerConfiguration is set
    vm_size: str | None = None
    image: tuple[str, str, str] | None = None  # imageReference (publisher, offer, sku), when it names one

    def container_problem(self, rule: str, image: str | None) -> str | None:
        """Batch requires containerSettings on every task of a container-enabled pool and forbids them on any
        other pool; one line naming rule and pool when `image` (None: no container) does not fit."""
        where = "virtualMachineConfiguration.containerConfiguration"
        if image and not self.container_enabled:
            return (
                f"azbatch: rule {rule} runs in container image {image!r} but pool {self.id!r} has no container "
                f"support ({where} is not set); give the rule a container-enabled pool (resource azbatch_pool) or "
                "no image"
            )
        if not image and self.container_enabled:
            return (
                f"azbatch: rule {rule} has no container image but pool {self.id!r} is container-enabled ({where}), "
                "where Batch runs every task in a container; set --azbatch-container-image or the rule's resource "
                "azbatch_container_image, or give the rule another pool (resource azbatch_pool)"
            )
        return None
