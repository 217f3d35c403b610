"""`azbatch-local --simulate` with a pool start task: the simulated node "runs" it (no process) for SECONDS, reports
success, and only then takes tasks — Batch's waitForSuccess rule, through the same model as real nodes."""

from __future__ import annotations

from pathlib import Path

from support.services import ServiceHandle
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.service_config import PoolSpec
from snakemake_executor_plugin_azbatch.local.pool_file import start_task

SECONDS = 1.0


def test_simulated_start_task_succeeds_before_the_node_takes_tasks(make_service, tmp_path: Path) -> None:
    marker = tmp_path / "start-task-ran"
    pool = PoolSpec("st", 1, 1, start_task=start_task({"commandLine": f"/bin/sh -c 'touch {marker}'"}, "test"))
    svc: ServiceHandle = make_service(pools=[pool], simulate=SECONDS)
    client = svc.batch_client()
    node_id = client.list_nodes("st").__next__().id
    client.create_job({"id": "j", "poolInfo": {"poolId": "st"}})
    client.create_task("j", {"id": "t", "commandLine": "true"})
    states: list[str] = []

    def idle_after_start_task():
        node = client.get_node("st", node_id)
        states.append(node.state)
        return node if node.state in ("idle", "running") else None

    node = wait_for(idle_after_start_task, 30, lambda: f"node states seen: {states}")
    assert "waitingforstarttask" in states  # the task waited: nothing ran on the node before the start task ended
    info = node.start_task_info
    assert (info.state, info.result, info.exit_code, info.retry_count) == ("completed", "success", 0, 0)
    assert (info.end_time - info.start_time).total_seconds() >= SECONDS - 0.05  # it took its SECONDS
    task = wait_for(lambda: (t := client.get_task("j", "t")).state == "completed" and t, 30, "task never completed")
    assert task.execution_info.start_time >= info.end_time
    assert task.execution_info.result == "success"
    assert not marker.exists()  # no process ran
    stdout = b"".join(client.download_node_file("st", node_id, "startup/stdout.txt"))
    assert b"no start task ran" in stdout
