"""Start tasks and job preparation tasks as Batch runs them, over HTTP with the real SDK (host nodes, real
processes, spec-validated responses): node states and startTaskInfo, a failed start task keeping tasks off its
node, a failed preparation task leaving tasks active until a node whose preparation succeeded runs them.

One service for the module. Nodes wait on a gate file in their own shared directory where a test must see an
intermediate state, so nothing depends on timing.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from support.static_http import handler_for
from support.waiting import wait_for

from support.services import ServiceHandle, start_service
from snakemake_executor_plugin_azbatch.local.service_config import PoolSpec
from snakemake_executor_plugin_azbatch.local.pool_file import start_task

WAIT_SECONDS = 60
# Node index 0 fails (its start task is retried once), index 1 waits for its gate, then succeeds.
SETUP_SCRIPT = """\
echo "start task on $AZ_BATCH_NODE_ID in $PWD as $AZ_BATCH_TASK_USER_IDENTITY: $GREETING job=${AZ_BATCH_JOB_ID-none}"
echo "a line on stderr" >&2
case "$AZ_BATCH_NODE_ID" in *_0) exit 5;; esac
while [ ! -e "$AZ_BATCH_NODE_SHARED_DIR/gate" ]; do sleep 0.1; done
"""
PREP_COMMAND = (
    "/bin/sh -c 'case $AZ_BATCH_NODE_ID in *_0) echo no tools here >&2; exit 3;; esac; "
    'while [ ! -e "$AZ_BATCH_NODE_SHARED_DIR/prep-gate" ]; do sleep 0.1; done\''
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(SETUP_SCRIPT.encode()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    setup = start_task(
        {
            "commandLine": "/bin/sh setup.sh",
            "resourceFiles": [{"httpUrl": f"http://127.0.0.1:{server.server_address[1]}/setup.sh",
                               "filePath": "setup.sh"}],
            "environmentSettings": [{"name": "GREETING", "value": "hello"}],
            "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
            "maxTaskRetryCount": 1,
        },
        "test",
    )
    pools = [PoolSpec("starting", 2, 1, "standard_e4s_v3", start_task=setup), PoolSpec("prepfail", 2, 1)]
    handle = start_service(tmp_path_factory.mktemp("start-and-prep"), {"pools": pools})
    try:
        yield handle
    finally:
        handle.stop()
        server.shutdown()
        server.server_close()


def node_ids(client, pool_id: str) -> list[str]:
    return sorted((n.id for n in client.list_nodes(pool_id)), key=lambda i: int(i.rsplit("_", 1)[1]))  # by index


def node_in(client, pool_id: str, node_id: str, state: str):
    return wait_for(lambda: (n := client.get_node(pool_id, node_id)).state == state and n, WAIT_SECONDS,
                    lambda: f"node {node_id} never {state}: {client.get_node(pool_id, node_id).as_dict()}")


def task_in(client, job_id: str, task_id: str, state: str):
    return wait_for(lambda: (t := client.get_task(job_id, task_id)).state == state and t, WAIT_SECONDS,
                    lambda: f"task {task_id} never {state}: {client.get_task(job_id, task_id).as_dict()}")


def node_file(client, pool_id: str, node_id: str, path: str) -> str:
    return b"".join(client.download_node_file(pool_id, node_id, path)).decode()


def test_start_task_node_states_and_a_failed_start_task_keeps_tasks_off_its_node(svc: ServiceHandle) -> None:
    client = svc.batch_client()
    failing, waiting = node_ids(client, "starting")
    pool = client.get_pool("starting")
    assert pool.vm_size == "standard_e4s_v3" and pool.start_task.command_line == "/bin/sh setup.sh"
    assert pool.start_task.wait_for_success and pool.start_task.max_task_retry_count == 1

    failed = node_in(client, "starting", failing, "starttaskfailed")
    info = failed.start_task_info
    assert (info.state, info.result, info.exit_code, info.retry_count) == ("completed", "failure", 5, 1)
    assert info.failure_info.code == "FailureExitCode" and info.end_time >= info.start_time
    assert failed.start_task.command_line == "/bin/sh setup.sh"
    stdout = node_file(client, "starting", failing, "startup/stdout.txt")
    startup = svc.root / "nodes" / "starting" / failing / "startup"
    assert stdout == f"start task on {failing} in {startup / 'wd'} as PoolAdmin: hello job=none\n"
    assert node_file(client, "starting", failing, "startup/stderr.txt") == "a line on stderr\n"
    listed = {f.name for f in client.list_node_files("starting", failing, recursive=True)}
    assert {"startup/stdout.txt", "startup/stderr.txt", "startup/wd/setup.sh"} <= listed

    held = node_in(client, "starting", waiting, "waitingforstarttask")
    assert held.start_task_info.state == "running" and held.start_task_info.end_time is None
    counts = next(c for c in client.list_pool_node_counts() if c.pool_id == "starting").dedicated
    assert (counts.start_task_failed, counts.waiting_for_start_task, counts.idle) == (1, 1, 0)

    job_id = f"start-{uuid.uuid4().hex[:6]}"
    client.create_job({"id": job_id, "poolInfo": {"poolId": "starting"}})
    try:
        client.create_tasks(job_id, [{"id": f"t{i}", "commandLine": "/bin/sh -c 'echo ran'"} for i in range(2)])
        assert all(t.state == "active" for t in client.list_tasks(job_id))  # no node may run them yet
        (svc.root / "nodes" / "starting" / waiting / "shared" / "gate").touch()
        ready = node_in(client, "starting", waiting, "idle")
        assert ready.start_task_info.result == "success" and ready.start_task_info.exit_code == 0
        for task_id in ("t0", "t1"):
            task = task_in(client, job_id, task_id, "completed")
            assert task.execution_info.result == "success" and task.node_info.node_id == waiting
        assert client.get_node("starting", failing).total_tasks_run == 0
        assert client.get_node("starting", failing).state == "starttaskfailed"
    finally:
        client.begin_delete_job(job_id).result()


def test_a_failed_preparation_task_leaves_tasks_active_until_a_prepared_node_runs_them(svc: ServiceHandle) -> None:
    client = svc.batch_client()
    bad, good = node_ids(client, "prepfail")
    job_id = f"prep-{uuid.uuid4().hex[:6]}"
    client.create_job({"id": job_id, "poolInfo": {"poolId": "prepfail"},
                       "jobPreparationTask": {"commandLine": PREP_COMMAND}})
    try:
        # Placed in one round (spread): one task on each node; both wait for their node's preparation task.
        client.create_tasks(job_id, [{"id": name, "commandLine": f"/bin/sh -c 'echo {name}'"}
                                     for name in ("first", "second")])

        def requeued_and_waiting():
            tasks = {t.id: t for t in client.list_tasks(job_id)}
            back = [t for t in tasks.values() if t.state == "active" and t.previous_state == "preparing"]
            held = [t for t in tasks.values() if t.state == "preparing"]
            return back and held and (back[0], held[0])

        requeued, held = wait_for(requeued_and_waiting, WAIT_SECONDS, lambda: str(client.list_tasks(job_id)))
        assert requeued.node_info.node_id == bad and held.node_info.node_id == good
        assert requeued.execution_info.failure_info is None and requeued.execution_info.start_time is None
        assert client.get_task(job_id, requeued.id).state == "active"  # still: its only other node prepares
        statuses = {s.node_id: s for s in client.list_job_preparation_and_release_task_status(job_id)}
        failed = statuses[bad].job_preparation_task_execution_info
        assert (failed.state, failed.result, failed.exit_code) == ("completed", "failure", 3)
        assert failed.failure_info.code == "FailureExitCode"
        assert statuses[good].job_preparation_task_execution_info.state == "running"
        stderr_path = f"{failed.task_root_directory}/stderr.txt"
        assert node_file(client, "prepfail", bad, stderr_path) == "no tools here\n"
        assert client.get_node("prepfail", bad).state == "idle"  # usable for other jobs, just not this one

        (svc.root / "nodes" / "prepfail" / good / "shared" / "prep-gate").touch()
        for task_id in (held.id, requeued.id):
            task = task_in(client, job_id, task_id, "completed")
            assert task.execution_info.result == "success" and task.node_info.node_id == good
        counts = client.get_job_task_counts(job_id).task_counts
        assert (counts.succeeded, counts.failed, counts.active) == (2, 0, 0)
        statuses = {s.node_id: s for s in client.list_job_preparation_and_release_task_status(job_id)}
        assert statuses[good].job_preparation_task_execution_info.result == "success"
        assert statuses[bad].job_preparation_task_execution_info.retry_count == 0  # ran once, not again
    finally:
        client.begin_delete_job(job_id).result()


def test_responses_of_this_module_were_validated(svc: ServiceHandle) -> None:
    checked = set(svc.spec_policy.validated)
    assert {"Nodes_GetNode", "Pools_GetPool", "Jobs_ListJobPreparationAndReleaseTaskStatus",
            "Pools_ListPoolNodeCounts", "Nodes_ListNodeFiles"} <= checked
