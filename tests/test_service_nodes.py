"""Simulated Batch nodes, driven over HTTP with the real azure-batch SDK, files through the real Azurite.

Every response is validated against Microsoft's Batch spec by the fixture's policy. Waiting uses deadlines only to
fail instead of hanging; nothing asserts on durations.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import (
    ContainerSasPermissions,
    generate_container_sas,
)

from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.service_config import AppPackageSpec
from support.blob_access import blob_url, container_url, make_container

WAIT_SECONDS = 60
PROBE = (
    "import json,os,sys; json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), 'argv': sys.argv[1:]},"
    " open('probe.json','w'))"
)
IDENTITY = {"resourceId": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n"}


# ---------------------------------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_job(svc, client, prefix: str, pool: str | None = None, **extra: Any) -> str:
    job_id = unique(prefix)
    client.create_job({"id": job_id, "poolInfo": {"poolId": pool or svc.pool_id}, **extra})
    return job_id


def wait_task(client, job_id: str, task_id: str, states: tuple[str, ...] = ("completed",)):
    def reached():
        task = client.get_task(job_id, task_id)
        return task if task.state in states else None

    return wait_for(reached, WAIT_SECONDS,
                    lambda: f"task {task_id} never reached {states}: {client.get_task(job_id, task_id).as_dict()}")


def wait_job(client, job_id: str, state: str):
    def reached():
        job = client.get_job(job_id)
        return job if job.state == state else None

    return wait_for(reached, WAIT_SECONDS, lambda: f"job {job_id} never reached {state}: {client.get_job(job_id).as_dict()}")


def run_task(client, job_id: str, body: dict[str, Any]):
    client.create_task(job_id, body)
    return wait_task(client, job_id, body["id"])


def task_root(svc, task) -> Path:
    info = task.node_info
    return svc.root / "nodes" / info.pool_id / info.node_id / info.task_root_directory


def error_code(err: HttpResponseError) -> str:
    return err.error.code if err.error is not None else ""


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended too


def wait_pid_gone(pid: int) -> None:
    wait_for(lambda: pid_gone(pid), WAIT_SECONDS, f"process {pid} is still alive")


def read_pid(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), WAIT_SECONDS, f"{path} was never written"))


def blob_names(container_client) -> set[str]:
    return {b.name for b in container_client.list_blobs()}


# ---------------------------------------------------------------------------------------------------- pools


def test_pool_and_nodes_look_like_a_linux_batch_pool(local_service) -> None:
    client = local_service.batch_client()
    spec = local_service.config.pools[0]
    pool = client.get_pool(spec.id)
    assert pool.state == "active" and pool.allocation_state == "steady"
    assert pool.task_slots_per_node == spec.slots
    assert pool.current_dedicated_nodes == pool.target_dedicated_nodes == spec.nodes
    assert pool.enable_auto_scale is False
    assert pool.task_scheduling_policy.node_fill_type == "spread"
    # What the nodes really are (here: the host, whose python3 the image names), on a VM size with a core per slot.
    assert pool.virtual_machine_configuration.node_agent_sku_id == local_service.node_vm["nodeAgentSKUId"]
    assert pool.virtual_machine_configuration.image_reference.sku == local_service.node_vm["imageReference"]["sku"]
    cores = {"standard_d2s_v3": 2, "standard_d4s_v3": 4, "standard_d8s_v3": 8, "standard_d16s_v3": 16}
    assert cores[pool.vm_size] >= spec.slots
    assert pool.vm_size == "standard_d2s_v3" or cores[pool.vm_size] // 2 < spec.slots  # the smallest that fits
    nodes = list(client.list_nodes(spec.id))
    assert len(nodes) == spec.nodes and len({n.id for n in nodes}) == spec.nodes
    for node in nodes:
        assert node.ip_address == "127.0.0.1" and node.scheduling_state == "enabled"
        assert node.state in ("idle", "running")
        root = local_service.root / "nodes" / spec.id / node.id
        for sub in ("shared", "startup", "applications", "workitems"):
            assert (root / sub).is_dir()


# ---------------------------------------------------------------------------------------------------- processes


def test_command_runs_without_shell_in_wd_with_batch_environment(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(
        local_service, client, "env", commonEnvironmentSettings=[{"name": "FROM_JOB", "value": "job"}]
    )
    task = run_task(
        client,
        job_id,
        {
            "id": "probe",
            "commandLine": f'python -c "{PROBE}" \'$HOME\' "two words"',
            "environmentSettings": [{"name": "FROM_TASK", "value": "task"}],
        },
    )
    assert task.execution_info.result == "success", task.as_dict()
    assert task.execution_info.exit_code == 0
    root = task_root(local_service, task)
    probe = json.loads((root / "wd" / "probe.json").read_text())
    env = probe["env"]
    assert probe["argv"] == ["$HOME", "two words"]  # no shell: no expansion, shlex quoting
    assert Path(probe["cwd"]) == root / "wd"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    node_root = local_service.root / "nodes" / task.node_info.pool_id / task.node_info.node_id
    assert env["AZ_BATCH_ACCOUNT_NAME"] == local_service.config.account_name
    assert env["AZ_BATCH_ACCOUNT_URL"] == local_service.account_url
    assert env["AZ_BATCH_POOL_ID"] == task.node_info.pool_id
    assert env["AZ_BATCH_NODE_ID"] == task.node_info.node_id
    assert env["AZ_BATCH_NODE_IS_DEDICATED"] == "true"
    assert env["AZ_BATCH_NODE_ROOT_DIR"] == str(node_root)
    assert env["AZ_BATCH_NODE_SHARED_DIR"] == str(node_root / "shared")
    assert env["AZ_BATCH_NODE_STARTUP_DIR"] == str(node_root / "startup")
    assert env["AZ_BATCH_JOB_ID"] == job_id and env["AZ_BATCH_TASK_ID"] == "probe"
    assert env["AZ_BATCH_TASK_DIR"] == str(root)
    assert env["AZ_BATCH_TASK_WORKING_DIR"] == str(root / "wd")
    assert env["FROM_JOB"] == "job" and env["FROM_TASK"] == "task"
    assert not any(k.startswith("SNAKEMAKE_AZBATCH") for k in env)  # the node does not inherit the host's env
    assert root == node_root / "workitems" / job_id / "job-1" / "probe"
    assert (root / "stdout.txt").is_file() and (root / "stderr.txt").is_file()


def test_state_machine_and_execution_info(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "states")
    nodes_before = list(client.list_nodes(local_service.pool_id))
    ok = run_task(client, job_id, {"id": "ok", "commandLine": "/bin/sh -c 'echo out; echo err >&2'"})
    assert ok.state == "completed" and ok.previous_state == "running"
    assert ok.state_transition_time >= ok.previous_state_transition_time
    info = ok.execution_info
    assert info.result == "success" and info.exit_code == 0 and info.failure_info is None
    assert info.start_time <= info.end_time and info.retry_count == 0 and info.requeue_count == 0
    node_info = ok.node_info
    assert node_info.node_url.endswith(f"/pools/{node_info.pool_id}/nodes/{node_info.node_id}")
    assert node_info.affinity_id and node_info.task_root_directory_url.startswith(local_service.account_url)
    root = task_root(local_service, ok)
    assert (root / "stdout.txt").read_text() == "out\n" and (root / "stderr.txt").read_text() == "err\n"

    bad = run_task(client, job_id, {"id": "bad", "commandLine": "python -c 'import sys; sys.exit(7)'"})
    assert bad.execution_info.result == "failure" and bad.execution_info.exit_code == 7
    failure = bad.execution_info.failure_info
    assert (failure.category, failure.code) == ("usererror", "FailureExitCode")

    missing = run_task(client, job_id, {"id": "missing", "commandLine": "no-such-program-here --x"})
    assert missing.execution_info.failure_info.code == "CommandProgramNotFound"
    assert missing.execution_info.exit_code is None

    # The service is shared with earlier tests: count what this test's three tasks added over the pool's nodes.
    nodes_after = list(client.list_nodes(local_service.pool_id))
    assert sum(n.total_tasks_run for n in nodes_after) == sum(n.total_tasks_run for n in nodes_before) + 3
    assert sum(n.total_tasks_succeeded for n in nodes_after) == sum(n.total_tasks_succeeded for n in nodes_before) + 1
    counts = client.get_job_task_counts(job_id)
    assert counts.task_counts.completed == 3 and counts.task_counts.succeeded == 1
    assert counts.task_counts.failed == 2 and counts.task_slot_counts.completed == 3


def test_retries_count_and_stop_at_success(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "retry")
    always = run_task(
        client,
        job_id,
        {"id": "always", "commandLine": "python -c 'raise SystemExit(3)'", "constraints": {"maxTaskRetryCount": 2}},
    )
    assert always.execution_info.retry_count == 2 and always.execution_info.exit_code == 3
    assert always.execution_info.last_retry_time is not None
    assert always.execution_info.failure_info.code == "FailureExitCode"
    # Fails on the first try only: a marker in the node's shared dir survives between attempts.
    script = (
        "import os; p=os.path.join(os.environ['AZ_BATCH_NODE_SHARED_DIR'], os.environ['AZ_BATCH_JOB_ID']);"
        " first=not os.path.exists(p); open(p,'a').close(); raise SystemExit(1 if first else 0)"
    )
    second = run_task(
        client,
        job_id,
        {"id": "second", "commandLine": f'python -c "{script}"', "constraints": {"maxTaskRetryCount": -1}},
    )
    assert second.execution_info.result == "success" and second.execution_info.retry_count == 1


def test_max_wall_clock_time_kills_the_process_group(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "timeout")
    client.create_task(
        job_id,
        {
            "id": "slow",
            "commandLine": "/bin/sh -c 'sleep 300 & echo $! > child.pid; wait'",
            "constraints": {"maxWallClockTime": "PT1S", "maxTaskRetryCount": 3},
        },
    )
    task = wait_task(client, job_id, "slow", ("running", "completed"))
    child = read_pid(task_root(local_service, task) / "wd" / "child.pid")
    task = wait_task(client, job_id, "slow")
    info = task.execution_info
    # TaskEnded in the server-error category as Batch documents it; the exit code a Linux node reports for the
    # SIGKILL that ended it (-9), not Batch's Windows 0xC000013A (-1073741510).
    assert info.result == "failure" and info.failure_info.code == "TaskEnded"
    assert info.failure_info.category == "servererror" and "maxWallClockTime" in info.failure_info.message
    assert info.exit_code == -9 and info.retry_count == 0  # ended tasks are not retried
    wait_pid_gone(child)


def test_terminate_task_kills_the_process_group(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "term")
    client.create_task(job_id, {"id": "long", "commandLine": "/bin/sh -c 'sleep 300 & echo $! > child.pid; wait'"})
    task = wait_task(client, job_id, "long", ("running",))
    child = read_pid(task_root(local_service, task) / "wd" / "child.pid")
    client.terminate_task(job_id, "long")
    task = wait_task(client, job_id, "long")
    assert task.execution_info.result == "failure"
    assert task.execution_info.failure_info.code == "TaskEnded"
    wait_pid_gone(child)
    # An active task that is terminated completes without running.
    client.create_task(job_id, {"id": "huge", "commandLine": "true", "requiredSlots": 1000})
    client.terminate_task(job_id, "huge")
    assert wait_task(client, job_id, "huge").execution_info.failure_info.code == "TaskEnded"


def test_container_settings_on_a_pool_without_containers_fail_as_on_batch(local_service) -> None:
    """Batch accepts the task and then fails it (ContainerPoolNotSupported) without running its command."""
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "container")
    task = run_task(
        client,
        job_id,
        {
            "id": "boxed",
            "commandLine": "/bin/sh -c 'touch ran'",
            "containerSettings": {"imageName": "quay.io/biocontainers/samtools:1.17", "containerRunOptions": "--rm"},
        },
    )
    info = task.execution_info
    assert info.result == "failure" and info.exit_code is None
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "ContainerPoolNotSupported")
    assert not (task_root(local_service, task) / "wd" / "ran").exists()


# ---------------------------------------------------------------------------------------------------- jobs


def test_job_preparation_runs_once_per_node_and_release_at_job_end(make_service) -> None:
    svc = make_service(pools=["prep:1:2"])
    client = svc.batch_client()
    count_script = "import os; open(os.path.join(os.environ['AZ_BATCH_NODE_SHARED_DIR'], 'prep-runs'),'a').write('x')"
    job_id = new_job(
        svc,
        client,
        "prep",
        pool="prep",
        jobPreparationTask={"commandLine": f'python -c "{count_script}"'},
        jobReleaseTask={"commandLine": "/bin/sh -c 'echo released > $AZ_BATCH_NODE_SHARED_DIR/released'"},
    )
    client.create_tasks(job_id, [{"id": f"t{i}", "commandLine": f'python -c "{PROBE}"'} for i in range(3)])
    tasks = [wait_task(client, job_id, f"t{i}") for i in range(3)]
    assert all(t.execution_info.result == "success" for t in tasks)
    node_root = svc.root / "nodes" / "prep" / tasks[0].node_info.node_id
    assert (node_root / "shared" / "prep-runs").read_text() == "x"  # once for three tasks on this node
    env = json.loads((task_root(svc, tasks[0]) / "wd" / "probe.json").read_text())["env"]
    prep_dir = node_root / "workitems" / job_id / "job-1" / "jobpreparation"
    assert env["AZ_BATCH_JOB_PREP_DIR"] == str(prep_dir)
    assert env["AZ_BATCH_JOB_PREP_WORKING_DIR"] == str(prep_dir / "wd")
    statuses = list(client.list_job_preparation_and_release_task_status(job_id))
    assert len(statuses) == 1
    prep = statuses[0].job_preparation_task_execution_info
    assert prep.state == "completed" and prep.exit_code == 0 and prep.result == "success"
    assert statuses[0].job_release_task_execution_info is None
    client.begin_terminate_job(job_id, {"terminateReason": "done"}).result()
    wait_job(client, job_id, "completed")
    assert (node_root / "shared" / "released").read_text() == "released\n"
    release = list(client.list_job_preparation_and_release_task_status(job_id))[0].job_release_task_execution_info
    assert release.state == "completed" and release.exit_code == 0


def test_terminate_and_delete_job_stop_running_tasks(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "jobterm")
    client.create_task(job_id, {"id": "long", "commandLine": "/bin/sh -c 'sleep 300 & echo $! > child.pid; wait'"})
    task = wait_task(client, job_id, "long", ("running",))
    child = read_pid(task_root(local_service, task) / "wd" / "child.pid")
    client.begin_terminate_job(job_id, {"terminateReason": "stop it"}).result()
    job = wait_job(client, job_id, "completed")
    assert job.execution_info.termination_reason == "stop it" and job.previous_state == "terminating"
    assert wait_task(client, job_id, "long").execution_info.failure_info.code == "TaskEnded"
    wait_pid_gone(child)
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job_id, {"id": "late", "commandLine": "true"})
    assert info.value.status_code == 409 and error_code(info.value) == "JobCompleted"

    job_id = new_job(local_service, client, "jobdel")
    client.create_task(job_id, {"id": "long", "commandLine": "/bin/sh -c 'sleep 300 & echo $! > child.pid; wait'"})
    task = wait_task(client, job_id, "long", ("running",))
    child = read_pid(task_root(local_service, task) / "wd" / "child.pid")
    client.begin_delete_job(job_id).result()
    wait_pid_gone(child)
    with pytest.raises(HttpResponseError) as info:
        client.get_job(job_id)
    assert info.value.status_code == 404


def test_all_tasks_complete_terminates_the_job(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "autoend", onAllTasksComplete="noaction")
    run_task(client, job_id, {"id": "one", "commandLine": "true"})
    client.update_job(job_id, {"onAllTasksComplete": "terminatejob"})
    job = wait_job(client, job_id, "completed")
    assert job.execution_info.termination_reason == "AllTasksComplete"


def test_add_task_collection_reports_each_task(local_service) -> None:
    client = local_service.batch_client()
    job_id = new_job(local_service, client, "coll")
    result = client.create_task_collection(
        job_id,
        {"value": [{"id": "a", "commandLine": "true"}, {"id": "A", "commandLine": "true"},
                   {"id": "b c", "commandLine": "true"}]},
    )
    by_id = {r.task_id: r for r in result.result_values}
    assert by_id["a"].status == "success" and by_id["a"].location.endswith(f"/jobs/{job_id}/tasks/a")
    assert by_id["A"].status == "clienterror" and by_id["A"].error.code == "TaskExists"
    assert by_id["b c"].status == "clienterror" and by_id["b c"].error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as info:
        client.create_task_collection(
            job_id, {"value": [{"id": f"t{i}", "commandLine": "true"} for i in range(101)]}
        )
    assert error_code(info.value) == "RequestBodyTooLarge"


# ---------------------------------------------------------------------------------------------------- files


def test_resource_files_from_container_blob_and_identity(local_service) -> None:
    client = local_service.batch_client()
    container = make_container(local_service, "inputs")
    container.upload_blob("data/a.txt", b"alpha")
    container.upload_blob("data/sub/b.txt", b"beta")
    container.upload_blob("other/c.txt", b"gamma")
    container.upload_blob("tool.sh", b"#!/bin/sh\necho tool ran\n")
    name = container.container_name
    job_id = new_job(local_service, client, "resources")
    task = run_task(
        client,
        job_id,
        {
            "id": "inputs",
            "commandLine": "./bin/tool.sh",
            "resourceFiles": [
                {"storageContainerUrl": container_url(local_service, name), "blobPrefix": "data/",
                 "filePath": "in"},
                {"httpUrl": blob_url(local_service, name, "tool.sh"), "filePath": "bin/tool.sh", "fileMode": "0755"},
                {"storageContainerUrl": container_url(local_service, name, sas=False), "blobPrefix": "other",
                 "identityReference": IDENTITY},
            ],
        },
    )
    assert task.execution_info.result == "success", task.as_dict()
    wd = task_root(local_service, task) / "wd"
    assert (wd / "in" / "data" / "a.txt").read_bytes() == b"alpha"
    assert (wd / "in" / "data" / "sub" / "b.txt").read_bytes() == b"beta"
    assert not (wd / "in" / "other").exists()
    assert (wd / "other" / "c.txt").read_bytes() == b"gamma"
    assert oct((wd / "bin" / "tool.sh").stat().st_mode & 0o777) == "0o755"
    assert oct((wd / "other" / "c.txt").stat().st_mode & 0o777) == "0o770"  # Batch's default fileMode
    assert (wd.parent / "stdout.txt").read_text() == "tool ran\n"


@pytest.mark.parametrize(
    ("kind", "code"),
    [("missing-blob", "BlobNotFound"), ("wrong-key", "BlobAccessDenied"), ("no-sas", "BlobAccessDenied")],
)
def test_failed_resource_download_fails_before_the_command(local_service, kind: str, code: str) -> None:
    client = local_service.batch_client()
    container = make_container(local_service, "bad")
    container.upload_blob("x.txt", b"x")
    name = container.container_name
    storage = local_service.endpoints.storage
    if kind == "missing-blob":
        rf = {"httpUrl": blob_url(local_service, name, "absent.txt"), "filePath": "absent.txt"}
    elif kind == "wrong-key":
        token = generate_container_sas(
            storage.account_name, name, account_key="d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudC1rZXk=",
            permission=ContainerSasPermissions(read=True, list=True),
            expiry=datetime.now(timezone.utc) + timedelta(hours=1),
        )
        rf = {"storageContainerUrl": f"{storage.blob_url}/{name}?{token}"}
    else:
        rf = {"storageContainerUrl": container_url(local_service, name, sas=False)}
    job_id = new_job(local_service, client, "badres")
    task = run_task(client, job_id, {"id": "t", "commandLine": "/bin/sh -c 'touch ran'", "resourceFiles": [rf]})
    failure = task.execution_info.failure_info
    assert task.execution_info.result == "failure"
    assert (failure.category, failure.code) == ("usererror", code)
    assert "sig=" not in (failure.message or "")  # SAS signatures never appear in failure messages
    assert not (task_root(local_service, task) / "wd" / "ran").exists()


def test_output_files_patterns_conditions_and_paths(local_service) -> None:
    client = local_service.batch_client()
    container = make_container(local_service, "outputs")
    url = container_url(local_service, container.container_name, read=True, write=True, create=True, list=True)
    make_files = (
        "import os; os.makedirs('res/deep', exist_ok=True);"
        " [open(p,'w').write(p) for p in ('res/a.txt','res/deep/b.txt','res/c.log','one.bam','x1.dat','.hidden.txt')];"
        " print('hello')"
    )

    def out(pattern: str, condition: str, path: str | None = None, identity: bool = False) -> dict:
        dest: dict[str, Any] = {"containerUrl": url}
        if identity:
            dest = {"containerUrl": container_url(local_service, container.container_name, sas=False),
                    "identityReference": IDENTITY}
        if path is not None:
            dest["path"] = path
        return {"filePattern": pattern, "destination": {"container": dest},
                "uploadOptions": {"uploadCondition": condition}}

    job_id = new_job(local_service, client, "outputs")
    task = run_task(
        client,
        job_id,
        {
            "id": "producer",
            "commandLine": f'python -c "{make_files}"',
            "outputFiles": [
                out("res/**/*.txt", "tasksuccess", "tree"),
                out("one.bam", "taskcompletion", "renamed/one.bam"),
                out("x?.dat", "taskcompletion", identity=True),
                out("res/[ab].txt", "taskcompletion", "bracket"),
                out("../std*.txt", "taskcompletion", "logs"),
                out("$AZ_BATCH_TASK_DIR/stdout.t[x]t", "taskcompletion", "absolute"),  # env expanded, absolute
                out("*.txt", "taskfailure", "never"),
            ],
        },
    )
    assert task.execution_info.result == "success", task.as_dict()
    names = blob_names(container)
    assert {"tree/a.txt", "tree/deep/b.txt"} <= names
    assert "renamed/one.bam" in names and "x1.dat" in names and "bracket/a.txt" in names
    assert {"logs/stdout.txt", "logs/stderr.txt", "absolute/stdout.txt"} <= names
    assert not any(n.startswith("never/") for n in names)
    assert not any(".hidden" in n or n.endswith(".log") for n in names)
    assert container.download_blob("logs/stdout.txt").readall() == b"hello\n"
    root = task_root(local_service, task)
    assert "uploaded" in (root / "fileuploadout.txt").read_text()

    failed = run_task(
        client,
        job_id,
        {
            "id": "failer",
            "commandLine": "/bin/sh -c 'echo bad > err.txt; exit 2'",
            "outputFiles": [
                out("err.txt", "taskfailure", "failures/err.txt"),
                out("err.txt", "tasksuccess", "ok"),
                out("absent-*.txt", "taskcompletion", "absent"),  # matching nothing is no error
            ],
        },
    )
    assert failed.execution_info.exit_code == 2
    assert failed.execution_info.failure_info.code == "FailureExitCode"
    assert "failures/err.txt" in blob_names(container) and "ok" not in blob_names(container)


def test_output_upload_failure_is_reported_like_batch(local_service) -> None:
    client = local_service.batch_client()
    container = make_container(local_service, "readonly")
    job_id = new_job(local_service, client, "uploadfail")

    def uploading(task_id: str, command: str, pattern: str, url: str):
        return run_task(client, job_id, {
            "id": task_id,
            "commandLine": command,
            "outputFiles": [{"filePattern": pattern, "destination": {"container": {"containerUrl": url}},
                             "uploadOptions": {"uploadCondition": "taskcompletion"}}],
        })

    write = "/bin/sh -c 'echo data > result.txt'"
    read_only = container_url(local_service, container.container_name, read=True, list=True)
    task = uploading("t", write, "result.txt", read_only)
    writable = container_url(local_service, container.container_name, read=True, write=True, create=True)
    missing = uploading("missing", "true", "never-made.txt", writable)
    # Batch documents write permission for an output container: create alone is refused before any upload.
    create_only = uploading("create-only", write, "result.txt",
                            container_url(local_service, container.container_name, create=True))
    gone = container_url(local_service, "no-such-container", read=True, write=True, create=True)
    no_container = uploading("no-container", write, "result.txt", gone)
    # As on Batch, a pattern (even a plain path) that matches nothing uploads nothing and is no error; both upload
    # logs are written on every upload, fileuploaderr.txt empty then.
    assert missing.execution_info.result == "success"
    assert "never-made.txt" in (task_root(local_service, missing) / "fileuploadout.txt").read_text()
    assert (task_root(local_service, missing) / "fileuploaderr.txt").read_text() == ""
    info = task.execution_info
    assert info.exit_code == 0 and info.result == "failure"
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "FileUploadMiscError")
    errors = (task_root(local_service, task) / "fileuploaderr.txt").read_text()
    assert "readonly" in errors and "without write (w), which Batch requires" in errors and "sig=" not in errors
    info = create_only.execution_info
    assert (info.result, info.failure_info.code) == ("failure", "FileUploadMiscError")
    errors = (task_root(local_service, create_only) / "fileuploaderr.txt").read_text()
    assert "grants 'c' without write (w)" in errors and "sig=" not in errors
    assert blob_names(container) == set()
    info = no_container.execution_info
    assert (info.result, info.failure_info.category, info.failure_info.code) == (
        "failure", "usererror", "FileUploadContainerNotFound")
    assert "ContainerNotFound" in b"".join(client.download_task_file(job_id, "no-container", "fileuploaderr.txt")).decode()


# ---------------------------------------------------------------------------------------------------- service-wide


def test_application_packages_are_listed_and_installed(make_service, tmp_path: Path) -> None:
    package = tmp_path / "tools.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("bin/hello.sh", "#!/bin/sh\necho hello from package\n")
        for name, mode in (("bin/hello", 0o100755), ("share/data.txt", 0o100640)):  # Unix modes, as `zip` keeps them
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, mode << 16
            archive.writestr(info, "#!/bin/sh\necho hello from bin\n" if name == "bin/hello" else "data\n")
    svc = make_service(pools=["apps:1:2"], app_packages=[AppPackageSpec("my-tools", "1.0", package)])
    client = svc.batch_client()
    apps = list(client.list_applications())
    assert [(a.id, a.versions) for a in apps] == [("my-tools", ["1.0"])]
    assert client.get_application("my-tools").display_name == "my-tools"
    with pytest.raises(HttpResponseError) as info:
        client.get_application("nope")
    assert info.value.status_code == 404 and error_code(info.value) == "ApplicationNotFound"
    job_id = new_job(svc, client, "apps", pool="apps")
    task = run_task(
        client,
        job_id,
        {
            "id": "uses",
            "commandLine": "/bin/sh -c 'cat $AZ_BATCH_APP_PACKAGE_my_tools_1_0/bin/hello.sh'",
            "applicationPackageReferences": [{"applicationId": "my-tools", "version": "1.0"}],
        },
    )
    assert task.execution_info.result == "success", task.as_dict()
    assert "hello from package" in (task_root(svc, task) / "stdout.txt").read_text()
    node_root = svc.root / "nodes" / "apps" / task.node_info.node_id
    installed = node_root / "applications" / "my-tools_1.0"
    assert (installed / "bin" / "hello.sh").is_file()
    # The zip's Unix mode bits are kept, as unzip keeps them: bin/hello runs as it is.
    assert [oct(p.stat().st_mode & 0o777) for p in (installed / "bin/hello", installed / "share/data.txt")] == [
        "0o755", "0o640"]
    ran = run_task(client, job_id, {"id": "runs-hello", "commandLine": "/bin/sh -c '$AZ_BATCH_APP_PACKAGE_my_tools_1_0/bin/hello'",
                                    "applicationPackageReferences": [{"applicationId": "my-tools", "version": "1.0"}]})
    assert ran.execution_info.result == "success", ran.as_dict()
    assert (task_root(svc, ran) / "stdout.txt").read_text() == "hello from bin\n"
    unknown = run_task(
        client,
        job_id,
        {"id": "unknown", "commandLine": "true", "applicationPackageReferences": [{"applicationId": "ghost"}]},
    )
    assert unknown.execution_info.failure_info.code == "ApplicationPackageError"


def test_preempted_tasks_are_requeued_and_run_again(make_service) -> None:
    svc = make_service(pools=["spot:1:1"], preempt_fraction=1.0, seed=7)
    client = svc.batch_client()
    job_id = new_job(svc, client, "preempt", pool="spot")
    script = "import os,time; open('starts','a').write('x'); time.sleep(2)"
    task = run_task(client, job_id, {"id": "victim", "commandLine": f'python -c "{script}"'})
    info = task.execution_info
    assert info.result == "success" and info.requeue_count == 1 and info.last_requeue_time is not None
    # Started again after the kill (the first start may be killed before Python got to write its mark).
    assert (task_root(svc, task) / "wd" / "starts").read_text() in ("x", "xx")
    assert client.get_node("spot", task.node_info.node_id).total_tasks_run == 2


def test_stop_kills_every_task_process(make_service) -> None:
    svc = make_service(pools=["stop:1:1"])
    client = svc.batch_client()
    job_id = new_job(svc, client, "stop", pool="stop")
    client.create_task(job_id, {"id": "long", "commandLine": "/bin/sh -c 'sleep 300 & echo $! > child.pid; wait'"})
    task = wait_task(client, job_id, "long", ("running",))
    child = read_pid(task_root(svc, task) / "wd" / "child.pid")
    svc.stop()
    wait_pid_gone(child)
