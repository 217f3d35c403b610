"""A rule's resources against what its pool's VM size offers, before anything is submitted. Batch reserves slots
only: it does not enforce or reserve memory, disk or GPUs, so a task asking for more memory than a node has is
killed by the kernel with no hint. Here a rule that cannot fit stops the run with one line; `threads` above the
node's cores only warn (Snakemake on the node runs with the cores it has)."""

from __future__ import annotations

from typing import Any, Mapping

from ..pools.vm_sizes import VmSize

RESOURCE_NAMES = ("mem_mb", "disk_mb", "gpu", "gpus", "nvidia_gpu")


def _number(resources: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        value = resources.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _show(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def fit_problem(rule: str, pool_id: str, size: VmSize, resources: Mapping[str, Any]) -> str | None:
    """One line naming rule, ask and offer when the rule cannot run on a node of `size`, else None."""
    where = f"pool {pool_id!r} ({size.name})"
    fix = "give the rule a pool with a larger VM size (resource azbatch_pool) or lower the request"
    mem = _number(resources, "mem_mb")
    if mem is not None and mem > size.mem_mb:
        return f"azbatch: rule {rule} asks for mem_mb={_show(mem)} but a node of {where} has {size.mem_mb} MB; {fix}"
    disk = _number(resources, "disk_mb")
    if disk is not None and size.disk_mb is not None and disk > size.disk_mb:
        return (
            f"azbatch: rule {rule} asks for disk_mb={_show(disk)} but a node of {where} has a {size.disk_mb} MB "
            f"temporary disk (where Batch puts task directories); {fix}"
        )
    gpus = _number(resources, "gpu", "gpus", "nvidia_gpu")
    if gpus is not None and gpus > size.gpus:
        return f"azbatch: rule {rule} asks for {_show(gpus)} GPU(s) but a node of {where} has {size.gpus}; {fix}"
    return None


def threads_warning(rule: str, pool_id: str, size: VmSize, threads: int) -> str | None:
    if threads > size.cores:
        return (
            f"azbatch: rule {rule} asks for {threads} threads but a node of pool {pool_id!r} ({size.name}) has "
            f"{size.cores} cores; it runs with {size.cores}"
        )
    return None
