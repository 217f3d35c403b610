"""`azbatch-local --simulate`: nodes that run no process, driven over HTTP with the real azure-batch SDK (every
response validated against the spec by the fixtures' clients) and outputs checked in the real Azurite.

Nothing here asserts on speed; the one time comparison checks that a simulated task takes at least its SECONDS.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from support.services import ServiceHandle, start_service
from support.executor_runs import delta, output_of, run_snakemake, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.backends.simulated_backend import IO_THREADS, chosen_to_fail
from snakemake_executor_plugin_azbatch.local.backends.task_outcomes import WALL_CLOCK_EXIT_CODE

WAIT_SECONDS = 60
SECONDS = 1.0
IDENTITY = {"resourceId": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n"}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    """One simulated service for this module: a small pool, and a pool of 2000 nodes."""
    handle = start_service(tmp_path_factory.mktemp("simulated"),
                            {"pools": ["sim:2:1", "big:2000:2"], "simulate": SECONDS})
    try:
        yield handle
    finally:
        handle.stop()


def new_job(client, job_id: str, pool: str = "sim", **extra: Any) -> str:
    client.create_job({"id": job_id, "poolInfo": {"poolId": pool}, **extra})
    return job_id


def wait_completed(client, job_id: str, task_ids: list[str]) -> dict[str, Any]:
    def done():
        tasks = {t.id: t for t in client.list_tasks(job_id)}
        return tasks if all(tasks[t].state == "completed" for t in task_ids) else None

    return wait_for(done, WAIT_SECONDS, lambda: f"tasks of {job_id} never completed: "
                    f"{[(t.id, t.state) for t in client.list_tasks(job_id)]}")


def writable_container_url(svc: ServiceHandle, container: str) -> str:
    storage = svc.endpoints.storage
    token = generate_container_sas(
        storage.account_name, container, account_key=storage.account_key,
        permission=ContainerSasPermissions(read=True, write=True, create=True, list=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    return f"{storage.blob_url}/{container}?{token}"


def node_dirs(svc: ServiceHandle, pool: str) -> set[str]:
    root = svc.root / "nodes" / pool
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


# ---------------------------------------------------------------------------------------------------- states


def test_tasks_pass_through_batch_states_on_slots_and_no_process_runs(simulated) -> None:
    client = simulated.batch_client()
    job_id = new_job(client, "states")
    ids = ["a", "b", "c"]  # two slots in the pool: c waits for one
    # One collection keeps the order (the SDK's create_tasks submits the last task first).
    client.create_task_collection(job_id, {"value": [{"id": t, "commandLine": "/bin/sh -c 'touch ran'"} for t in ids]})
    seen: dict[str, set[str]] = {t: set() for t in ids}

    def observe():
        for task in client.list_tasks(job_id):
            seen[task.id].add(task.state)
        return all("completed" in states for states in seen.values())

    wait_for(observe, WAIT_SECONDS, lambda: f"states seen: {seen}")
    assert {"active", "running", "completed"} <= seen["c"], seen
    a, b, c = (client.get_task(job_id, t) for t in ids)
    assert a.node_info.node_id != b.node_info.node_id  # spread over the two one-slot nodes
    assert c.execution_info.start_time >= min(a.execution_info.end_time, b.execution_info.end_time)  # a slot freed
    for task_id in ids:
        task = client.get_task(job_id, task_id)
        info = task.execution_info
        assert (task.state, task.previous_state, info.result, info.exit_code) == ("completed", "running", "success", 0)
        assert info.end_time - info.start_time >= timedelta(seconds=SECONDS - 0.05)  # took its SECONDS
        task_dir = (simulated.root / "nodes" / "sim" / task.node_info.node_id / task.node_info.task_root_directory)
        assert not (task_dir / "wd" / "ran").exists()  # no process ran
        stdout = b"".join(client.download_task_file(job_id, task_id, "stdout.txt"))
        assert b"no process ran" in stdout
        assert b"".join(client.download_task_file(job_id, task_id, "stderr.txt")) == b""
        names = {f.name for f in client.list_task_files(job_id, task_id)}
        assert {"stdout.txt", "stderr.txt", "wd"} <= names
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.completed, counts.succeeded, counts.failed, counts.active) == (3, 3, 0, 0)
    nodes = list(client.list_nodes("sim"))
    assert sum(n.total_tasks_run for n in nodes) >= 3 and all(n.state == "idle" for n in nodes)


def test_terminate_delete_wall_clock_and_job_actions_on_simulated_nodes(make_service) -> None:
    svc = make_service(pools=["long:1:2"], simulate=600.0)  # tasks never end by themselves
    client = svc.batch_client()
    job_id = new_job(client, "actions", pool="long")
    client.create_task_collection(job_id, {"value": [
        {"id": "timed", "commandLine": "x", "constraints": {"maxWallClockTime": "PT1S"}},
        {"id": "stopped", "commandLine": "x"},
        {"id": "waiting", "commandLine": "x"},  # no free slot until one of the others ends
    ]})
    client.update_job(job_id, {"onAllTasksComplete": "terminatejob"})  # set on an empty job, it would end at once
    wait_for(lambda: client.get_task(job_id, "stopped").state == "running", WAIT_SECONDS, "stopped never ran")
    client.terminate_task(job_id, "stopped")
    timed = wait_completed(client, job_id, ["timed", "stopped"])
    info = timed["timed"].execution_info
    assert (info.exit_code, info.failure_info.code, info.failure_info.category) == (
        WALL_CLOCK_EXIT_CODE, "TaskEnded", "servererror")
    stopped = timed["stopped"].execution_info
    assert stopped.failure_info.code == "TaskEnded" and stopped.failure_info.category == "usererror"
    wait_for(lambda: client.get_task(job_id, "waiting").state == "running", WAIT_SECONDS, "waiting never ran")
    client.delete_task(job_id, "waiting")  # the last task gone: every task completed, so the job terminates
    job = wait_for(lambda: (j := client.get_job(job_id)).state == "completed" and j, WAIT_SECONDS, "job never ended")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    wait_for(lambda: all(n.running_task_slots_count == 0 for n in client.list_nodes("long")), WAIT_SECONDS,
             "the deleted task's slots were never freed")


def test_preempted_simulated_tasks_are_requeued(make_service) -> None:
    svc = make_service(pools=["spot:1:1"], simulate=SECONDS, preempt_fraction=1.0, seed=7)
    client = svc.batch_client()
    job_id = new_job(client, "preempt", pool="spot")
    client.create_task(job_id, {"id": "victim", "commandLine": "x"})
    info = wait_completed(client, job_id, ["victim"])["victim"].execution_info
    assert (info.result, info.requeue_count, info.exit_code) == ("success", 1, 0)
    assert client.get_node("spot", client.get_task(job_id, "victim").node_info.node_id).total_tasks_run == 2


# ---------------------------------------------------------------------------------------------------- outputs


def test_literal_outputs_become_placeholder_blobs_wildcards_match_nothing(simulated) -> None:
    client = simulated.batch_client()
    container = simulated.blob_service_client().create_container("simulated-outputs")
    url = writable_container_url(simulated, container.container_name)
    identity_url = f"{simulated.endpoints.storage.blob_url}/{container.container_name}"

    def out(pattern: str, condition: str = "tasksuccess", path: str | None = None, identity: bool = False) -> dict:
        dest: dict[str, Any] = {"containerUrl": identity_url, "identityReference": IDENTITY} if identity else {
            "containerUrl": url}
        if path is not None:
            dest["path"] = path
        return {"filePattern": pattern, "destination": {"container": dest},
                "uploadOptions": {"uploadCondition": condition}}

    job_id = new_job(client, "outputs")
    client.create_task(job_id, {
        "id": "producer",
        "commandLine": "python -c 'never runs'",
        "environmentSettings": [{"name": "OUT", "value": "results"}],
        "outputFiles": [
            out("results/sample.txt", path="runs/x/files/results/sample.txt"),
            out("$OUT/expanded.vcf", identity=True),  # no path: the file's name; env expanded
            out("../stdout.txt", "taskcompletion", "runs/x/batch/stdout.txt"),  # the real file
            out("logs/a.lo[g]", "taskcompletion", "runs/x/files/logs/a.log"),  # wildcard: nothing written
            out("res/**/*", path="tree"),
            out("results/never.txt", "taskfailure", "never.txt"),
        ],
    })
    task = wait_completed(client, job_id, ["producer"])["producer"]
    assert task.execution_info.result == "success", task.as_dict()
    names = {b.name for b in container.list_blobs()}
    assert names == {"runs/x/files/results/sample.txt", "expanded.vcf", "runs/x/batch/stdout.txt"}
    placeholder = container.download_blob("runs/x/files/results/sample.txt").readall()
    assert b"placeholder" in placeholder and b"results/sample.txt" in placeholder and len(placeholder) < 512
    assert b"results/expanded.vcf" in container.download_blob("expanded.vcf").readall()
    stdout = container.download_blob("runs/x/batch/stdout.txt").readall()
    assert stdout == b"".join(client.download_task_file(job_id, "producer", "stdout.txt"))
    log = b"".join(client.download_task_file(job_id, "producer", "fileuploadout.txt")).decode()
    assert "matched no files" in log and "sig=" not in log  # no SAS in the agent's log


def test_upload_errors_fail_a_simulated_task_like_a_real_one(simulated) -> None:
    client = simulated.batch_client()
    container = simulated.blob_service_client().create_container("simulated-readonly")
    storage = simulated.endpoints.storage
    read_only = generate_container_sas(storage.account_name, container.container_name,
                                       account_key=storage.account_key,
                                       permission=ContainerSasPermissions(read=True, list=True),
                                       expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    job_id = new_job(client, "upload-denied")
    client.create_task(job_id, {"id": "t", "commandLine": "x", "outputFiles": [{
        "filePattern": "out.txt",
        "destination": {"container": {"containerUrl": f"{storage.blob_url}/{container.container_name}?{read_only}"}},
        "uploadOptions": {"uploadCondition": "tasksuccess"}}]})
    info = wait_completed(client, job_id, ["t"])["t"].execution_info
    assert (info.result, info.exit_code, info.failure_info.code) == ("failure", 0, "FileUploadMiscError")
    assert b"out.txt" in b"".join(client.download_task_file(job_id, "t", "fileuploaderr.txt"))


# ---------------------------------------------------------------------------------------------------- failures


def failed_tasks(svc: ServiceHandle, job_id: str, count: int) -> dict[str, Any]:
    client = svc.batch_client()
    new_job(client, job_id)
    ids = [f"t{i:02d}" for i in range(count)]
    client.create_tasks(job_id, [{"id": t, "commandLine": "x", "constraints": {"maxTaskRetryCount": 1}}
                                 for t in ids])
    tasks = wait_completed(client, job_id, ids)
    return {t: task for t, task in tasks.items() if task.execution_info.result == "failure"}


def test_simulate_fail_fails_a_seeded_fraction_the_same_way_every_run(make_service) -> None:
    fraction, seed, count = 0.3, 3, 40
    first = make_service(pools=["sim:2:4"], simulate=0.0, simulate_fail=fraction, seed=seed)
    failed = failed_tasks(first, "fail-job", count)
    assert 0 < len(failed) < count  # a fraction, not none or all (fixed ids and seed: always the same number)
    for task in failed.values():
        info = task.execution_info
        assert (info.exit_code, info.retry_count) == (1, 1)  # every attempt of a chosen task fails
        assert (info.failure_info.code, info.failure_info.category) == ("FailureExitCode", "usererror")
    client = first.batch_client()
    some = next(iter(failed))
    assert b"simulated failure" in b"".join(client.download_task_file("fail-job", some, "stderr.txt"))
    counts = client.get_job_task_counts("fail-job").task_counts
    assert (counts.failed, counts.succeeded) == (len(failed), count - len(failed))
    first.stop()

    again = make_service(pools=["sim:2:4"], simulate=0.0, simulate_fail=fraction, seed=seed)
    assert failed_tasks(again, "fail-job", count).keys() == failed.keys()  # same ids and seed: same tasks
    other_seed = {f"t{i:02d}" for i in range(count) if chosen_to_fail(seed + 1, "fail-job", f"t{i:02d}", fraction)}
    assert other_seed != failed.keys()


# ---------------------------------------------------------------------------------------------------- prep/release


def test_preparation_and_release_tasks_on_simulated_nodes(simulated) -> None:
    client = simulated.batch_client()
    job_id = new_job(client, "prep-release", jobPreparationTask={"commandLine": "prepare"},
                     jobReleaseTask={"commandLine": "release"})
    ids = ["p1", "p2", "p3", "p4"]
    client.create_tasks(job_id, [{"id": t, "commandLine": "x"} for t in ids])
    seen: set[str] = set()

    def observe():
        states = {t.id: t.state for t in client.list_tasks(job_id)}
        seen.update(states.values())
        return all(s == "completed" for s in states.values())

    wait_for(observe, WAIT_SECONDS, lambda: f"states seen: {seen}")
    assert "preparing" in seen  # the first tasks wait while the preparation task "runs"
    statuses = list(client.list_job_preparation_and_release_task_status(job_id))
    assert len(statuses) == 2  # once per node
    for status in statuses:
        prep = status.job_preparation_task_execution_info
        assert (prep.state, prep.exit_code, prep.result) == ("completed", 0, "success")
        assert status.job_release_task_execution_info is None
        files = {f.name for f in client.list_node_files("sim", status.node_id, recursive=True)}
        assert f"workitems/{job_id}/job-1/jobpreparation/stdout.txt" in files
    client.begin_terminate_job(job_id, {"terminateReason": "done"}).result()
    wait_for(lambda: client.get_job(job_id).state == "completed", WAIT_SECONDS, "job never completed")
    for status in client.list_job_preparation_and_release_task_status(job_id):
        release = status.job_release_task_execution_info
        assert (release.state, release.exit_code, release.result) == ("completed", 0, "success")


# ---------------------------------------------------------------------------------------------------- large pools


def test_a_pool_of_2000_simulated_nodes_is_cheap_and_lists_in_pages(simulated) -> None:
    threads = [t.name for t in threading.enumerate() if t.name.startswith("azbatch-simulated")]
    assert len(threads) <= 1 + IO_THREADS  # one clock and the I/O threads, whatever the number of nodes
    assert node_dirs(simulated, "big") == set()  # no directory per node at start

    client = simulated.batch_client()
    before = simulated.metrics()["operations"].get("Nodes_ListNodes", {}).get("count", 0)
    nodes = list(client.list_nodes("big"))
    pages = simulated.metrics()["operations"]["Nodes_ListNodes"]["count"] - before
    assert len(nodes) == 2000 and len({n.id for n in nodes}) == 2000
    assert pages == 2  # 1000 per page, then the odata.nextLink
    assert {n.state for n in nodes} == {"idle"}
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}["big"]
    assert (counts.dedicated.idle, counts.dedicated.total) == (2000, 2000)
    assert client.get_pool("big").current_dedicated_nodes == 2000

    job_id = new_job(client, "big-pool", pool="big")
    client.create_tasks(job_id, [{"id": f"b{i}", "commandLine": "x"} for i in range(3)])
    tasks = wait_completed(client, job_id, ["b0", "b1", "b2"])
    used = {t.node_info.node_id for t in tasks.values()}
    assert len(used) == 3  # spread: the idlest nodes first
    assert node_dirs(simulated, "big") == used  # directories only where a task ran
    busy = [n for n in client.list_nodes("big", filter="totalTasksRun gt 0")]
    assert {n.id for n in busy} == used


# ---------------------------------------------------------------------------------------------------- the plugin


def test_the_plugin_runs_a_workflow_on_simulated_nodes_and_downloads_placeholders(simulated, tmp_path: Path) -> None:
    workdir = write_files(tmp_path / "fanout", {"Snakefile": """
        rule all:
            input: "gathered.txt"

        rule part:
            output: "parts/{i}.txt"
            shell: "echo {wildcards.i} > {output}"

        rule gather:
            input: expand("parts/{i}.txt", i=range(4))
            output: "gathered.txt"
            shell: "cat {input} > {output}"
    """})
    before = simulated.metrics()
    result = run_snakemake(simulated, workdir, container="simulated-plugin")
    assert result.returncode == 0, output_of(result)
    after = simulated.metrics()
    for path in [*(f"parts/{i}.txt" for i in range(4)), "gathered.txt"]:
        content = (workdir / path).read_text()
        assert "placeholder written by azbatch-local --simulate" in content and path in content  # no command ran
    assert delta(before, after, "operations", "Tasks_CreateTaskCollection") == 2  # the parts, then the gather
