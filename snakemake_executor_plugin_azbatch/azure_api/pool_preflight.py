"""Preflight of a pool the run uses: why reading it failed (one line naming the setting to fix) and what the run needs
to know of it (`PoolInfo`, pools/pool_info.py)."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from ..settings.executor_settings import SettingsError
from ..pools.pool_info import PoolInfo
from .azure_sdk import enum_text, error_code, error_text


def read_failure(e: Exception, pool_id: str, account: str, *, keyed: bool, setting: str) -> SettingsError:
    """The one line for a failed read of the pool: missing, credentials, access, unreachable."""
    if isinstance(e, ResourceNotFoundError):
        return SettingsError(
            f"azbatch: pool {pool_id!r} does not exist in Batch account {account}; "
            f"check {setting} (`az batch pool list` shows the pools)"
        )
    if isinstance(e, HttpResponseError):
        code = error_code(e)
        if isinstance(e, ClientAuthenticationError) and not keyed and e.response is None:
            # azure-identity found no credential at all (no `az login`, no managed identity, ...).
            return SettingsError(
                f"azbatch: no Microsoft Entra ID credential for {account}; run `az login` "
                "or set --azbatch-account-key (or SNAKEMAKE_AZBATCH_ACCOUNT_KEY / AZURE_BATCH_ACCESS_KEY)"
            )
        if isinstance(e, ClientAuthenticationError) or code == "AuthenticationFailed":
            # Batch answers a wrong shared key with 403 AuthenticationFailed.
            return SettingsError(
                f"azbatch: Batch account {account} rejected the credentials; check "
                "--azbatch-account-name / --azbatch-account-key (or `az login` for Entra ID)"
            )
        if e.status_code == 403:
            return SettingsError(
                f"azbatch: access to pool {pool_id!r} denied (403); check --azbatch-account-key, or give your "
                "Entra ID identity Azure Batch Job Submitter on the Batch account"
            )
        return SettingsError(f"azbatch: cannot read pool {pool_id!r}: {error_text(e)}")
    if isinstance(e, ServiceRequestError):
        return SettingsError(
            f"azbatch: Batch account {account} is not reachable ({type(e).__name__}); check "
            "--azbatch-account-url"
        )
    # e.g. credential errors from azure-identity
    return SettingsError(
        f"azbatch: cannot authenticate to {account} ({type(e).__name__}); set "
        "--azbatch-account-key or sign in with `az login`"
    )


def pool_info(pool: Any, pool_id: str, setting: str) -> PoolInfo:
    """What the run needs of an existing pool; a pool that is not active or cannot get nodes is one line."""
    state = enum_text(pool.state)
    if state and state != "active":
        raise SettingsError(
            f"azbatch: pool {pool_id!r} is {state}, not active; choose another pool with {setting}"
        )
    slots = int(pool.task_slots_per_node or 1)
    dedicated = int(pool.current_dedicated_nodes or 0)
    low = int(pool.current_low_priority_nodes or 0)
    target = int(pool.target_dedicated_nodes or 0) + int(pool.target_low_priority_nodes or 0)
    autoscale = bool(pool.enable_auto_scale)
    warnings = []
    if dedicated + low == 0:
        if autoscale:
            warnings.append(
                f"azbatch: pool {pool_id!r} has no nodes yet; tasks wait until its autoscale formula adds some"
            )
        elif target == 0:
            raise SettingsError(
                f"azbatch: pool {pool_id!r} has no nodes and cannot grow (target 0, no autoscale); resize it "
                f"(`az batch pool resize --pool-id {pool_id} --target-dedicated-nodes N`) or pick another "
                f"pool with {setting}"
            )
        else:
            warnings.append(f"azbatch: pool {pool_id!r} has no nodes yet; it is resizing to {target}")
    vm = getattr(pool, "virtual_machine_configuration", None)
    containers = getattr(vm, "container_configuration", None) is not None
    ref = getattr(vm, "image_reference", None)
    parts = tuple(str(getattr(ref, name, None) or "") for name in ("publisher", "offer", "sku"))
    image = parts if all(parts) else None
    return PoolInfo(
        pool_id, slots, dedicated, low, target, autoscale, tuple(warnings), containers, pool.vm_size or None, image
    )
