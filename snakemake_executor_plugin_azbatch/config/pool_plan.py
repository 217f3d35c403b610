"""Pool creation settings (--azbatch-pool-*): VM size, image, size or autoscale range, slots, start task, the
container registry login (its password read from the environment variable the settings name)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..pools.pool_creation import CONTAINER_IMAGES, IMAGE_REFERENCE, IMAGES, PoolCreation, RegistryLogin, slots_for
from ..settings.executor_settings import DEFAULT_AUTOSCALE, SettingsError
from .machines import resolve_vm_sizes
from .values import SettingValues, flag, where

CREATION_ONLY = ("pool_nodes", "pool_autoscale", "pool_autoscale_formula", "pool_slots", "pool_start_task",
                 "pool_node_agent", "pool_registry", "pool_registry_user", "pool_registry_password_var")
REGISTRY = ("pool_registry", "pool_registry_user", "pool_registry_password_var")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _flag(values: SettingValues, name: str) -> bool:
    value = values.get(name)
    if isinstance(value, str):  # from a SNAKEMAKE_AZBATCH_* variable
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _image(values: SettingValues, containers: bool) -> tuple[tuple[str, str, str, str], str, str]:
    name = str(values.get("pool_image") or values.defaults["pool_image"]).strip()
    named = (CONTAINER_IMAGES if containers else IMAGES).get(name.lower())
    agent = values.get("pool_node_agent")
    if named:
        return (named[0], named[1], named[2], "latest"), agent or named[3], name
    m = IMAGE_REFERENCE.match(name)
    if not m:
        raise SettingsError(f"azbatch: {where('pool_image')} {name!r}: use ubuntu-24.04, ubuntu-22.04 or "
                            "PUBLISHER:OFFER:SKU[:VERSION]")
    if not agent:
        raise SettingsError(f"azbatch: {where('pool_image')} {name!r} needs {flag('pool_node_agent')}, e.g. "
                            "'batch.node.ubuntu 24.04' (`az batch pool supported-images list` shows the pairs)")
    return (m.group(1), m.group(2), m.group(3), m.group(4) or "latest"), agent, name


def _counts(values: SettingValues) -> tuple[int, int]:
    raw = str(values.get("pool_nodes")).strip()
    m = re.fullmatch(r"(\d+)(?:\s*,\s*(\d+))?", raw)
    if not m or int(m.group(1)) + int(m.group(2) or 0) == 0:
        raise SettingsError(f"azbatch: {where('pool_nodes')} {raw!r}: expected DEDICATED[,SPOT] node counts with "
                            "at least one node, e.g. 2 or 0,4 (or use --azbatch-pool-autoscale)")
    return int(m.group(1)), int(m.group(2) or 0)


def _range(values: SettingValues) -> tuple[int, int]:
    raw = values.get("pool_autoscale")
    if raw in (None, ""):
        return DEFAULT_AUTOSCALE
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(raw))
    if not m or int(m.group(2)) < max(1, int(m.group(1))):
        raise SettingsError(f"azbatch: {where('pool_autoscale')} {raw!r}: expected MIN-MAX nodes with MAX ≥ 1 and "
                            "MAX ≥ MIN, e.g. 0-10")
    return int(m.group(1)), int(m.group(2))


def _slots(values: SettingValues, vm_size: str) -> int:
    raw = values.get("pool_slots")
    if raw in (None, ""):
        return slots_for(vm_size) or 1
    try:
        slots = int(raw)
    except (TypeError, ValueError):
        slots = 0
    if not 1 <= slots <= 256:
        raise SettingsError(f"azbatch: {where('pool_slots')} {raw!r}: expected a whole number from 1 to 256")
    return slots


def _registry(values: SettingValues, containers: bool) -> RegistryLogin | None:
    given = {name: str(values.get(name) or "").strip() for name in REGISTRY}
    if not any(given.values()):
        return None
    if not containers:
        raise SettingsError(f"azbatch: {flag('pool_registry')} applies to a container pool; set "
                            f"{flag('pool_containers')} too")
    missing = [name for name in REGISTRY if not given[name]]
    if missing:
        raise SettingsError(f"azbatch: a private registry for the created pool needs {', '.join(map(flag, REGISTRY))}; "
                            f"{flag(missing[0])} is missing")
    server, variable = given["pool_registry"], given["pool_registry_password_var"]
    if "/" in server.removeprefix("https://") or not re.fullmatch(r"(https://)?[A-Za-z0-9.-]+(:\d+)?/?", server):
        raise SettingsError(f"azbatch: {where('pool_registry')} {server!r}: give the registry's host name, e.g. "
                            "myregistry.azurecr.io")
    if not VARIABLE_NAME.match(variable):
        raise SettingsError(f"azbatch: {where('pool_registry_password_var')} must name an environment variable "
                            "(e.g. REGISTRY_PASSWORD), not hold the password")
    password = values.environ.get(variable, "")
    if not password:
        raise SettingsError(f"azbatch: environment variable {variable} ({flag('pool_registry_password_var')}) is "
                            f"unset or empty; export the password for {server} in it")
    return RegistryLogin(server.removeprefix("https://").rstrip("/"), given["pool_registry_user"], variable, password)


@dataclass(frozen=True)
class PoolPlan:
    """The pool the run creates (None: --azbatch-pool-id must exist) and VM sizes the resource check is told of."""

    creation: PoolCreation | None  # create --azbatch-pool-id when it does not exist
    vm_sizes: tuple  # vm_sizes.VmSize entries from --azbatch-vm-sizes


def resolve_pool_plan(values: SettingValues) -> PoolPlan:
    creation = _pool_creation(values)
    return PoolPlan(creation=creation, vm_sizes=resolve_vm_sizes(values))


def _pool_creation(values: SettingValues) -> PoolCreation | None:
    vm_size = str(values.get("pool_vm_size") or "").strip()
    if not vm_size:
        given = [name for name in CREATION_ONLY if values.get(name) not in (None, "")]
        if given:
            raise SettingsError(f"azbatch: {flag(given[0])} only applies to a pool the run creates; set "
                                f"{flag('pool_vm_size')} too (e.g. standard_d4s_v3)")
        return None
    containers = _flag(values, "pool_containers")
    image, agent, name = _image(values, containers)
    if values.get("pool_nodes") not in (None, "") and values.get("pool_autoscale") not in (None, ""):
        raise SettingsError(f"azbatch: give either {flag('pool_nodes')} or {flag('pool_autoscale')}, not both")
    try:
        interval = float(values.get("pool_autoscale_interval") or values.defaults["pool_autoscale_interval"])
    except (TypeError, ValueError):
        interval = 0.0
    if interval <= 0:
        raise SettingsError(f"azbatch: {where('pool_autoscale_interval')} must be a positive number of minutes")
    fixed = values.get("pool_nodes") not in (None, "") and not values.get("pool_autoscale_formula")
    dedicated, spot = _counts(values) if fixed else (0, 0)
    return PoolCreation(
        vm_size=vm_size, image=image, node_agent=agent, image_name=name, dedicated=dedicated, spot=spot,
        autoscale=None if fixed else _range(values), autoscale_spot=_flag(values, "pool_spot"),
        formula=values.get("pool_autoscale_formula") or None, interval_minutes=interval,
        slots=_slots(values, vm_size), start_task=values.get("pool_start_task") or None,
        containers=containers, keep=_flag(values, "keep_pool"),
        registry=_registry(values, containers),
    )
