"""REST shapes of pools, nodes, node counts, supported images and applications, built from the records.

Pools from the service's --pool/--container-pool options and pool files are fixed-size Linux pools whose VM size
is the smallest Dsv3 size with a core per task slot (or the pool file's vmSize) and whose image is what their nodes
really are (`node_system`: the stock node image, the host, or simulated nodes), so a client that reads the image
(the plugin picks the nodes' Python from it) sees what runs; pools created over the API report the vmSize and image
they were created with, which Pools_AddPool accepts only when the nodes can stand in for it. Container-enabled
pools report their containerConfiguration (registry passwords left out, as Batch does), pools with a start task
their startTask, and their nodes the start task's progress (startTaskInfo) and the node state it implies
(`NodeRecord.state`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..service_config import AppPackageSpec
from .batch_records import Records
from .pool_records import NodeRecord, PoolRecord

# General-purpose Dsv3 sizes by vCPUs: a local pool with N task slots reports the smallest with >= N cores.
VM_SIZES_BY_CORES = ((2, "standard_d2s_v3"), (4, "standard_d4s_v3"), (8, "standard_d8s_v3"),
                     (16, "standard_d16s_v3"), (32, "standard_d32s_v3"), (48, "standard_d48s_v3"),
                     (64, "standard_d64s_v3"))
# Node states (BatchNodeState, lower-case) → BatchNodeCounts property names.
NODE_COUNT_FIELDS = {
    name.lower(): name
    for name in (
        "creating", "idle", "offline", "preempted", "rebooting", "reimaging", "running", "starting",
        "startTaskFailed", "leavingPool", "unknown", "unusable", "waitingForStartTask", "deallocated",
        "deallocating", "upgradingOS",
    )
}


def pool_view(records: Records, pool: PoolRecord) -> dict[str, Any]:
    """BatchPool: the creation body's fields as given, runtime fields from the record."""
    spec = copy.deepcopy(pool.spec)
    vm = spec.pop("virtualMachineConfiguration", None) or vm_configuration(pool)
    for registry in (vm.get("containerConfiguration") or {}).get("containerRegistries") or []:
        registry.pop("password", None)  # a secret: Batch never returns it
    body: dict[str, Any] = {
        **spec,
        "id": pool.id,
        "url": f"{records.account_url}/pools/{pool.id}",
        "eTag": pool.etag,
        "lastModified": pool.last_modified,
        "creationTime": pool.creation_time,
        "state": pool.state,
        "stateTransitionTime": pool.state_transition_time,
        "allocationState": pool.allocation_state,
        "allocationStateTransitionTime": pool.allocation_state_transition_time,
        "vmSize": vm_size(pool),
        "resizeTimeout": pool.resize_timeout,
        "currentDedicatedNodes": sum(1 for n in pool.nodes if n.dedicated),
        "currentLowPriorityNodes": sum(1 for n in pool.nodes if not n.dedicated),
        "targetDedicatedNodes": pool.target_nodes,
        "targetLowPriorityNodes": pool.target_low_priority,
        "enableAutoScale": bool(pool.autoscale_formula),
        "enableInterNodeCommunication": bool(spec.get("enableInterNodeCommunication", False)),
        "taskSlotsPerNode": pool.slots,
        "taskSchedulingPolicy": {"nodeFillType": pool.node_fill_type},
        "virtualMachineConfiguration": vm,
        "targetNodeCommunicationMode": spec.get("targetNodeCommunicationMode", "default"),
        "currentNodeCommunicationMode": "simplified",
    }
    if pool.autoscale_formula:
        body["autoScaleFormula"] = pool.autoscale_formula
        body["autoScaleEvaluationInterval"] = pool.autoscale_interval
    else:
        body.pop("autoScaleFormula", None)
        body.pop("autoScaleEvaluationInterval", None)
    if pool.autoscale_run:
        body["autoScaleRun"] = copy.deepcopy(pool.autoscale_run)
    if pool.resize_errors and pool.allocation_state == "steady":  # Batch reports them once steady
        body["resizeErrors"] = copy.deepcopy(pool.resize_errors)
    if pool.start_task and "startTask" not in body:
        body["startTask"] = copy.deepcopy(pool.start_task)
    return body


def vm_size(pool: PoolRecord) -> str:
    """The size given (API, pool file), else the smallest Dsv3 size with a core for every task slot (Batch allows
    up to 4 slots per core, so the largest stands for more)."""
    if pool.vm_size:
        return pool.vm_size
    return next((name for cores, name in VM_SIZES_BY_CORES if cores >= pool.slots), VM_SIZES_BY_CORES[-1][1])


def vm_configuration(pool: PoolRecord) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(pool.system_vm or {})
    if pool.container_configuration is not None:
        config["containerConfiguration"] = copy.deepcopy(pool.container_configuration)
    return config


def node_view(records: Records, node: NodeRecord) -> dict[str, Any]:
    pool = records.pools.get(node.pool_id.lower())
    size = vm_size(pool) if pool else VM_SIZES_BY_CORES[0][1]
    recent = []
    for job_key, task_key in sorted(node.running_tasks):
        job = records.jobs.get(job_key)
        task = job.tasks.get(task_key) if job else None
        if job is None or task is None:
            continue
        recent.append(
            {
                "taskUrl": task.rest["url"],
                "jobId": job.id,
                "taskId": task.rest["id"],
                "taskState": task.state,
                "executionInfo": copy.deepcopy(task.rest["executionInfo"]),
            }
        )
    body: dict[str, Any] = {
        "id": node.id,
        "url": records.node_url(node),
        "state": node.state,
        "schedulingState": "enabled",
        "stateTransitionTime": node.state_transition_time,
        "lastBootTime": node.allocation_time,
        "allocationTime": node.allocation_time,
        "ipAddress": "127.0.0.1",
        "affinityId": f"TVM:{node.id}",
        "vmSize": size,
        "totalTasksRun": node.total_tasks_run,
        "runningTasksCount": len(node.running_tasks),
        "runningTaskSlotsCount": node.used_slots,
        "totalTasksSucceeded": node.total_tasks_succeeded,
        "isDedicated": node.dedicated,
        "nodeAgentInfo": {"version": "1.11.0", "lastUpdateTime": node.allocation_time},
        "virtualMachineInfo": {"imageReference": _image(records, node)},
    }
    if recent:
        body["recentTasks"] = recent
    if node.start_task:
        body["startTask"] = copy.deepcopy(node.start_task)
    if node.start_task_info:
        body["startTaskInfo"] = copy.deepcopy(node.start_task_info)
    if node.unusable:
        body["errors"] = copy.deepcopy(node.unusable)
    return body


def _image(records: Records, node: NodeRecord) -> dict[str, Any]:
    pool = records.pools.get(node.pool_id.lower())
    vm = (pool.spec.get("virtualMachineConfiguration") or vm_configuration(pool)) if pool else {}
    return copy.deepcopy(vm.get("imageReference") or {})


def node_counts_view(pool: PoolRecord) -> dict[str, Any]:
    """BatchPoolNodeCounts: dedicated and Spot (lowPriority) nodes by state."""
    counts = {kind: dict.fromkeys(NODE_COUNT_FIELDS.values(), 0) for kind in ("dedicated", "lowPriority")}
    for node in pool.nodes:
        counts["dedicated" if node.dedicated else "lowPriority"][NODE_COUNT_FIELDS.get(node.state, "unknown")] += 1
    for bucket in counts.values():
        bucket["total"] = sum(bucket.values())
    return {"poolId": pool.id, **counts}


def supported_images_view(pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One BatchSupportedImage per distinct (node agent SKU, image) the pools use."""
    images: dict[str, dict[str, Any]] = {}
    for pool in pools:
        vm = pool.get("virtualMachineConfiguration") or {}
        sku = vm.get("nodeAgentSKUId")
        if sku and vm.get("imageReference"):
            key = json.dumps([sku, vm["imageReference"]], sort_keys=True)
            images[key] = {
                "nodeAgentSKUId": sku,
                "imageReference": vm["imageReference"],
                "osType": "linux",
                "verificationType": "verified",
            }
    return list(images.values())


def applications_view(specs: list[AppPackageSpec]) -> dict[str, dict[str, Any]]:
    """BatchApplication entries by lower-cased id."""
    apps: dict[str, dict[str, Any]] = {}
    for spec in specs:
        app = apps.setdefault(spec.name.lower(), {"id": spec.name, "displayName": spec.name, "versions": []})
        if spec.version not in app["versions"]:
            app["versions"].append(spec.version)
    return apps
