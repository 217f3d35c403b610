"""Pools that change on the local service, over HTTP with the real azure-batch SDK: add, resize, stop, delete,
autoscale (enable, evaluate, disable, periodic evaluation), Spot nodes and their preemption, nodes leaving with
requeue / taskcompletion. Every response is validated against the Batch spec by the fixture's policy."""

from __future__ import annotations

import sys
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from support.waiting import wait_for

WAIT = 60
IMAGE: dict = {}  # the service's own node image (ServiceHandle.node_vm), set by `svc`
GROW_AND_SHRINK = (
    "$pending = max($PendingTasks.GetSample(1));"
    "$TargetLowPriorityNodes = min(3, ceil($pending / $TaskSlotsPerNode));"
    "$TargetDedicatedNodes = 0;"
    "$NodeDeallocationOption = taskcompletion;"
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    from support.services import start_service

    handle = start_service(tmp_path_factory.mktemp("pools"),
                            {"autoscale_min_interval": 1.0, "autoscale_sample_seconds": 0.2, "max_pool_nodes": 4})
    IMAGE.update(handle.node_vm)
    yield handle
    handle.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pool_body(pool_id: str, **extra) -> dict:
    return {"id": pool_id, "vmSize": "standard_d2s_v3", "virtualMachineConfiguration": IMAGE, "taskSlotsPerNode": 1,
            **extra}


def nodes_by_state(client, pool_id: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in client.list_nodes(pool_id):
        out.setdefault(getattr(node.state, "value", node.state), []).append(node)
    return out


def steady_with(client, pool_id: str, dedicated: int, low: int):
    def reached():
        pool = client.get_pool(pool_id)
        idle = nodes_by_state(client, pool_id).get("idle", [])
        if (pool.allocation_state == "steady" and pool.current_dedicated_nodes == dedicated
                and pool.current_low_priority_nodes == low and len(idle) == dedicated + low):
            return pool
        return None

    return wait_for(reached, WAIT, lambda: f"pool {pool_id} never steady at {dedicated}+{low}: "
                    f"{client.get_pool(pool_id).as_dict()} {nodes_by_state(client, pool_id)}")


def exists(client, pool_id: str) -> bool:
    try:
        return bool(client.get_pool(pool_id))
    except ResourceNotFoundError:
        return False


def error_code(exc: HttpResponseError) -> str:
    return exc.error.code if exc.error else ""


def test_fixed_pool_add_resize_and_delete(svc) -> None:
    client = svc.batch_client()
    pool_id = unique("fixed")
    before = dict(svc.spec_policy.validated)
    client.create_pool(pool_body(pool_id, targetDedicatedNodes=1, targetLowPriorityNodes=2,
                                 startTask={"commandLine": "true"}, metadata=[{"name": "k", "value": "v"}]))
    pool = steady_with(client, pool_id, 1, 2)
    assert (pool.vm_size, pool.virtual_machine_configuration.node_agent_sku_id) == ("standard_d2s_v3",
                                                                                    IMAGE["nodeAgentSKUId"])
    assert sorted(n.is_dedicated for n in client.list_nodes(pool_id)) == [False, False, True]
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}[pool_id]
    assert (counts.dedicated.idle, counts.low_priority.idle, counts.low_priority.total) == (1, 2, 2)

    with pytest.raises(HttpResponseError) as duplicate:
        client.create_pool(pool_body(pool_id.upper(), targetDedicatedNodes=1))
    assert (duplicate.value.status_code, error_code(duplicate.value)) == (409, "PoolExists")

    client.begin_resize_pool(pool_id, {"targetDedicatedNodes": 0, "targetLowPriorityNodes": 1,
                                       "nodeDeallocationOption": "taskcompletion"}).result()
    steady_with(client, pool_id, 0, 1)
    client.begin_resize_pool(pool_id, {"targetDedicatedNodes": 6}).result()
    pool = steady_with(client, pool_id, 4, 0)  # capped at max_pool_nodes; an omitted target is 0
    assert [e.code for e in pool.resize_errors] == ["AccountCoreQuotaReached"]

    client.begin_delete_pool(pool_id).result()
    wait_for(lambda: not exists(client, pool_id), WAIT, f"pool {pool_id} was never removed")
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)
    after = svc.spec_policy.validated
    for operation in ("Pools_GetPool", "Nodes_ListNodes", "Pools_ListPoolNodeCounts"):
        assert after.get(operation, 0) > before.get(operation, 0), operation


def test_bad_requests_get_batch_error_codes(svc) -> None:
    client = svc.batch_client()
    pool_id = unique("bad")
    cases = [
        (pool_body(pool_id, enableAutoScale=True, autoScaleFormula="$TargetDedicatedNodes = max(;"),
         400, "AutoScalingFormulaSyntaxError"),
        (pool_body(pool_id, enableAutoScale=True, autoScaleFormula="$TargetDedicatedNodes = 1;",
                   autoScaleEvaluationInterval="PT0.5S"), 400, "InvalidPropertyValue"),
        (pool_body(pool_id, enableAutoScale=True, autoScaleFormula="$TargetDedicatedNodes = 1;",
                   targetDedicatedNodes=1), 400, "InvalidPropertyValue"),
        (pool_body(pool_id), 400, "MissingRequiredProperty"),
    ]
    for body, status, code in cases:
        with pytest.raises(HttpResponseError) as err:
            client.create_pool(body)
        assert (err.value.status_code, error_code(err.value)) == (status, code), body
    assert not exists(client, pool_id)


def test_autoscale_grows_from_zero_runs_tasks_and_shrinks_when_idle(svc) -> None:
    client = svc.batch_client()
    pool_id = unique("auto")
    client.create_pool(pool_body(pool_id, enableAutoScale=True, autoScaleFormula=GROW_AND_SHRINK,
                                 autoScaleEvaluationInterval="PT1S"))
    pool = client.get_pool(pool_id)
    # As on Batch, the evaluation at creation comes before the pool's first sample: GetSample(1) fails there.
    assert pool.enable_auto_scale and pool.auto_scale_run.error.code == "AutoScalingFormulaEvaluationError"
    assert "only 0 samples" in pool.auto_scale_run.error.message
    assert pool.current_low_priority_nodes == 0
    wait_for(lambda: (client.get_pool(pool_id).auto_scale_run.results or "").startswith(
        "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;$pending=0"),
        WAIT, "the next evaluation, with a sample")

    job_id = unique("job")
    client.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}})
    py = sys.executable
    client.create_task_collection(job_id, {"value": [
        {"id": f"t{i}", "commandLine": f"{py} -c \"import time; time.sleep(1.5)\""} for i in range(3)]})
    grown = wait_for(lambda: (p := client.get_pool(pool_id)).current_low_priority_nodes == 3 and p, WAIT,
                     lambda: f"no Spot nodes joined: {client.get_pool(pool_id).as_dict()}")
    assert grown.current_dedicated_nodes == 0
    assert "$TargetLowPriorityNodes=3" in grown.auto_scale_run.results
    wait_for(lambda: all(t.state == "completed" for t in client.list_tasks(job_id)), WAIT, "tasks never completed")
    assert all(t.execution_info.result == "success" and not t.node_info.node_id.startswith("x")
               for t in client.list_tasks(job_id))
    wait_for(lambda: client.get_pool(pool_id).current_low_priority_nodes == 0, WAIT,
             lambda: f"idle Spot nodes never left: {client.get_pool(pool_id).as_dict()}")

    run = client.evaluate_pool_auto_scale(pool_id, {"autoScaleFormula": "$TargetDedicatedNodes = 2;"})
    assert run.results.startswith("$TargetDedicatedNodes=2;") and run.error is None
    failed = client.evaluate_pool_auto_scale(pool_id, {"autoScaleFormula": "$TargetDedicatedNodes = 1 / 0;"})
    assert failed.error.code == "AutoScalingFormulaEvaluationError" and "division by zero" in failed.error.message
    assert client.get_pool(pool_id).target_dedicated_nodes == 0  # evaluating applies nothing
    assert svc.spec_policy.validated.get("Pools_EvaluatePoolAutoScale", 0) >= 2

    with pytest.raises(HttpResponseError) as err:
        client.begin_resize_pool(pool_id, {"targetDedicatedNodes": 1}).result()
    assert err.value.status_code == 409
    client.disable_pool_auto_scale(pool_id)
    assert not client.get_pool(pool_id).enable_auto_scale
    client.enable_pool_auto_scale(pool_id, {"autoScaleFormula": "$TargetDedicatedNodes = 1;",
                                            "autoScaleEvaluationInterval": "PT1S"})
    steady_with(client, pool_id, 1, 0)
    client.begin_delete_job(job_id).result()
    client.begin_delete_pool(pool_id).result()


def test_shrinking_with_requeue_puts_running_tasks_back(svc) -> None:
    client = svc.batch_client()
    pool_id = unique("requeue")
    client.create_pool(pool_body(pool_id, targetDedicatedNodes=1))
    steady_with(client, pool_id, 1, 0)
    job_id = unique("job")
    client.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}})
    client.create_task(job_id, {"id": "long", "commandLine": f"{sys.executable} -c \"import time; time.sleep(60)\""})
    wait_for(lambda: client.get_task(job_id, "long").state == "running", WAIT, "the task never ran")
    client.begin_resize_pool(pool_id, {"targetDedicatedNodes": 0, "nodeDeallocationOption": "requeue"}).result()
    task = wait_for(lambda: (t := client.get_task(job_id, "long")).state == "active" and t, WAIT,
                    lambda: f"task not requeued: {client.get_task(job_id, 'long').as_dict()}")
    assert task.execution_info.requeue_count == 1
    steady_with(client, pool_id, 0, 0)
    client.begin_delete_job(job_id).result()
    client.begin_delete_pool(pool_id).result()


def test_spot_nodes_are_preempted_by_the_fault_option(make_service) -> None:
    svc = make_service(preempt_fraction=1.0, pools=[])
    client = svc.batch_client()
    client.create_pool(pool_body("spot", targetLowPriorityNodes=1))
    steady_with(client, "spot", 0, 1)
    client.create_job({"id": "j", "poolInfo": {"poolId": "spot"}})
    client.create_task("j", {"id": "t", "commandLine": f"{sys.executable} -c \"import time; time.sleep(3)\""})
    wait_for(lambda: nodes_by_state(client, "spot").get("preempted"), WAIT, "the Spot node was never preempted",
             interval=0.02)
    task = wait_for(lambda: (t := client.get_task("j", "t")).state == "completed" and t, WAIT,
                    "the requeued task never completed on the restarted node")
    assert (task.execution_info.requeue_count, task.execution_info.result) == (1, "success")
    assert list(nodes_by_state(client, "spot")) == ["idle"]


def test_a_created_pool_claims_only_an_image_its_nodes_can_stand_in_for(svc) -> None:
    """The nodes here are the host: a pool that claims an image with another python3 is refused (400, naming the
    image to use), so a client reading the pool's image never sees a Python its nodes do not have."""
    client = svc.batch_client()
    other = ({"publisher": "debian", "offer": "debian-13", "sku": "13", "version": "latest"}, "batch.node.debian 13")
    if svc.service.state.node_system.python != "3.10":
        other = ({"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts",
                  "version": "latest"}, "batch.node.ubuntu 22.04")
    pool_id = unique("claims")
    body = {**pool_body(pool_id, targetDedicatedNodes=1),
            "virtualMachineConfiguration": {"imageReference": other[0], "nodeAgentSKUId": other[1]}}
    with pytest.raises(HttpResponseError) as err:
        client.create_pool(body)
    assert (err.value.status_code, error_code(err.value)) == (400, "InvalidPropertyValue")
    own = IMAGE["imageReference"]
    assert f"cannot stand in for {other[0]['publisher']}/{other[0]['offer']}/{other[0]['sku']}" in str(err.value)
    assert f"imageReference {own['publisher']}/{own['offer']}/{own['sku']}" in str(err.value)
    assert not exists(client, pool_id)
    client.create_pool(pool_body(pool_id, targetDedicatedNodes=0))  # its own image is accepted and reported
    pool = client.get_pool(pool_id)
    assert pool.virtual_machine_configuration.image_reference.offer == own["offer"]
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_a_registry_password_is_kept_secret(svc) -> None:
    """As Batch: a pool's containerRegistries come back without their password (x-ms-secret). (The server is a
    URL here because the spec validating every response says `format: uri`.)"""
    client = svc.batch_client()
    pool_id = unique("registry")
    vm = {**IMAGE, "containerConfiguration": {"type": "dockerCompatible", "containerRegistries": [
        {"registryServer": "https://myreg.azurecr.io", "username": "puller", "password": "s3cret-value"}]}}
    client.create_pool({**pool_body(pool_id, targetDedicatedNodes=0), "virtualMachineConfiguration": vm})
    for pool in (client.get_pool(pool_id), next(p for p in client.list_pools() if p.id == pool_id)):
        registry = pool.virtual_machine_configuration.container_configuration.container_registries[0]
        assert (registry.registry_server, registry.username) == ("https://myreg.azurecr.io", "puller")
        assert registry.password is None
        assert "s3cret" not in str(pool.as_dict())
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
