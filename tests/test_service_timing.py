"""Azure's timing, quotas and capacity on the local service (`--timing azure`, `--time-scale`, `--quota`,
`--spot-shortage`), over HTTP with the real azure-batch SDK, at a scaled time so each takes seconds: a resize's nodes
come after the allocation delay and boot before they are idle, autoscale samples reach formulas late and the
evaluation interval is scaled, core quotas stop a resize part-way with Batch's resizeErrors, the pool quota refuses a
pool, and a Spot shortage fails Spot allocations and preempts running Spot nodes after their eviction notice."""

from __future__ import annotations

import sys
import uuid

import pytest
from azure.core.exceptions import HttpResponseError

from support.waiting import wait_for

SCALE = 0.05  # allocation 3-9 s, boot 3-7.5 s, sample delay 3 s, PT5M → 15 s
WAIT = 60
IMAGE: dict = {}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    from snakemake_executor_plugin_azbatch.local.service_config import parse_quotas
    from support.services import start_service

    handle = start_service(tmp_path_factory.mktemp("timing"), {
        "timing": "azure", "time_scale": SCALE, "seed": 7, "pools": ["local:0:1"],
        "quotas": parse_quotas("standardESv3Family=4,spot=2")})
    IMAGE.update(handle.node_vm)
    yield handle
    handle.stop()


def body(pool_id: str, size: str = "standard_e2s_v3", **extra) -> dict:
    return {"id": pool_id, "vmSize": size, "virtualMachineConfiguration": IMAGE, "taskSlotsPerNode": 1, **extra}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def states(client, pool_id: str) -> list[str]:
    return sorted(getattr(n.state, "value", n.state) for n in client.list_nodes(pool_id))


def steady(client, pool_id: str):
    return wait_for(lambda: (p := client.get_pool(pool_id)).allocation_state == "steady" and p, WAIT,
                    lambda: f"pool {pool_id} never steady: {client.get_pool(pool_id).as_dict()}")


def test_nodes_come_after_the_allocation_delay_and_boot_before_idle(svc) -> None:
    client = svc.batch_client()
    pool_id = unique("slow")
    client.create_pool(body(pool_id, targetDedicatedNodes=1))
    first = client.get_pool(pool_id)
    assert (first.allocation_state, first.current_dedicated_nodes, states(client, pool_id)) == ("resizing", 0, [])
    pool = steady(client, pool_id)
    assert pool.current_dedicated_nodes == 1 and not pool.resize_errors
    assert states(client, pool_id) == ["starting"]  # allocated, still booting
    wait_for(lambda: states(client, pool_id) == ["idle"], WAIT, lambda: f"never idle: {states(client, pool_id)}")
    allocated = pool.allocation_state_transition_time - first.creation_time
    assert allocated.total_seconds() >= 60 * SCALE  # the smallest allocation delay, scaled
    client.begin_delete_pool(pool_id).result()


def test_core_quotas_stop_a_resize_part_way_with_batch_resize_errors(svc) -> None:
    client = svc.batch_client()
    dedicated, spot = unique("quota"), unique("spotquota")
    client.create_pool(body(dedicated, targetDedicatedNodes=3))  # 2 cores each, family quota 4
    client.create_pool(body(spot, "standard_d2s_v3", targetLowPriorityNodes=2))  # Spot quota 2 cores
    pool = steady(client, dedicated)
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes) == (3, 2)
    assert [(e.code, e["values"][0]["value"]) for e in pool.resize_errors] == [
        ("AccountCoreQuotaReached", "standardESv3Family cores")]
    pool = steady(client, spot)
    assert (pool.target_low_priority_nodes, pool.current_low_priority_nodes) == (2, 1)
    assert [e.code for e in pool.resize_errors] == ["AccountLowPriorityCoreQuotaReached"]
    client.begin_resize_pool(dedicated, {"targetDedicatedNodes": 1}).result()  # a new resize clears the errors
    pool = steady(client, dedicated)
    assert pool.current_dedicated_nodes == 1 and not pool.resize_errors
    client.begin_delete_pool(dedicated).result()
    client.begin_delete_pool(spot).result()


def test_autoscale_samples_arrive_late_and_the_interval_is_scaled(svc) -> None:
    client = svc.batch_client()
    pool_id = unique("auto")
    formula = "$TargetDedicatedNodes = min(1, max($PendingTasks.GetSample(1)));"
    client.create_pool(body(pool_id, enableAutoScale=True, autoScaleFormula=formula,
                            autoScaleEvaluationInterval="PT5M"))
    created = client.get_pool(pool_id).auto_scale_run.timestamp
    probe = "$TargetDedicatedNodes = max($PendingTasks.GetSample(1));"
    wait_for(lambda: (client.evaluate_pool_auto_scale(pool_id, {"autoScaleFormula": probe}).results or "")
             .startswith("$TargetDedicatedNodes=0;"), WAIT, "no sample ever reached the formula")
    job_id = unique("job")
    client.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}})
    client.create_task(job_id, {"id": "t", "commandLine": f"{sys.executable} -c pass"})
    assert client.evaluate_pool_auto_scale(pool_id, {"autoScaleFormula": probe}).results.startswith(
        "$TargetDedicatedNodes=0;")  # the sample taken now holds the task, but reaches formulas a minute later
    wait_for(lambda: (client.evaluate_pool_auto_scale(pool_id, {"autoScaleFormula": probe}).results or "")
             .startswith("$TargetDedicatedNodes=1;"), WAIT, "the sample with the task never reached the formula")
    assert client.get_pool(pool_id).auto_scale_run.timestamp == created  # not evaluated before its interval
    run = wait_for(lambda: (r := client.get_pool(pool_id).auto_scale_run).timestamp != created and r, WAIT,
                   "the pool was never evaluated again")
    assert (run.timestamp - created).total_seconds() >= 300 * SCALE * 0.95
    assert run.results.startswith("$TargetDedicatedNodes=1;")
    assert client.get_pool(pool_id).target_dedicated_nodes == 1  # the evaluation resized the pool
    client.begin_delete_job(job_id).result()
    client.begin_delete_pool(pool_id).result()


def test_pool_quota_refuses_a_pool_beyond_it(make_service) -> None:
    from snakemake_executor_plugin_azbatch.local.service_config import parse_quotas

    svc = make_service(pools=["local:0:1"], quotas=parse_quotas("pools=1"))
    client = svc.batch_client()
    with pytest.raises(HttpResponseError) as refused:
        client.create_pool(body("second", targetDedicatedNodes=1, virtualMachineConfiguration=svc.node_vm))
    assert (refused.value.status_code, refused.value.error.code) == (409, "PoolQuotaReached")


def test_spot_shortage_fails_allocation_and_preempts_after_the_notice(make_service) -> None:
    from snakemake_executor_plugin_azbatch.local.service_config import SpotShortage

    svc = make_service(pools=[], timing="azure", time_scale=0.005, spot_shortage=SpotShortage(6.0, 4.0))
    client = svc.batch_client()
    vm = svc.node_vm
    client.create_pool(body("spot", targetLowPriorityNodes=1, virtualMachineConfiguration=vm))
    wait_for(lambda: states(client, "spot") == ["idle"], WAIT, lambda: f"never idle: {states(client, 'spot')}")
    client.create_job({"id": "j", "poolInfo": {"poolId": "spot"}})
    client.create_task("j", {"id": "t", "commandLine": f"{sys.executable} -c \"import time; time.sleep(5)\""})
    wait_for(lambda: states(client, "spot") == ["preempted"], WAIT, "the Spot node was never preempted")
    task = client.get_task("j", "t")
    assert task.state == "active" and task.execution_info.requeue_count == 1
    client.create_pool(body("late", targetLowPriorityNodes=1, virtualMachineConfiguration=vm))
    pool = steady(client, "late")
    assert pool.current_low_priority_nodes == 0 and [e.code for e in pool.resize_errors] == ["AllocationFailed"]
    assert states(client, "spot") == ["preempted"]  # no capacity to come back to yet
    wait_for(lambda: client.get_task("j", "t").state == "completed", WAIT, "the task never ran after the shortage")
    client.begin_resize_pool("late", {"targetLowPriorityNodes": 1}).result()  # capacity is back
    pool = steady(client, "late")
    assert pool.current_low_priority_nodes == 1 and not pool.resize_errors
