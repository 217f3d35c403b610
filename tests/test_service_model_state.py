"""`BatchState` called directly (no HTTP): REST shapes against the spec, validation errors, task counts, scheduling.

Node behaviour over HTTP with the real SDK is in test_service_nodes.py; these tests pin the model's contract with
the wire (dict shapes, BatchError codes) and the scheduler's placement rules, which HTTP cannot observe cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from support.spec_validation import validate_body
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.service_config import AppPackageSpec, BoundEndpoints, PoolSpec, ServiceConfig
from snakemake_executor_plugin_azbatch.local.api.batch_api import task_add_results
from snakemake_executor_plugin_azbatch.local.model.errors import BatchError
from snakemake_executor_plugin_azbatch.local.model.batch_state import BatchState
from snakemake_executor_plugin_azbatch.local.nodes.node_layout import app_package_env_name
from snakemake_executor_plugin_azbatch.local.service import make_backend
from snakemake_executor_plugin_azbatch.local.model.timestamps import duration_seconds

pytestmark = pytest.mark.quick

WAIT_SECONDS = 30


def check_shape(definition: str, body: Any) -> None:
    validate_body(definition, 200, body, {"$ref": f"#/definitions/{definition}"})


@pytest.fixture
def make_state(tmp_path: Path) -> Iterator:
    states: list[BatchState] = []

    def factory(pools: list[str] = ("p:2:2",), **overrides: Any) -> BatchState:
        config = ServiceConfig(
            root=tmp_path / f"s{len(states)}",
            pools=[PoolSpec.parse(p) for p in pools],
            **overrides,
        )
        endpoints = BoundEndpoints("http://127.0.0.1:9")
        state = BatchState(config, make_backend(config, endpoints), endpoints)
        states.append(state)
        state.start()
        return state

    try:
        yield factory
    finally:
        for state in states:
            state.stop()


def wait_completed(state: BatchState, job_id: str, task_id: str) -> dict:
    def completed() -> dict | None:
        task = state.get_task(job_id, task_id)
        return task if task["state"] == "completed" else None

    return wait_for(completed, WAIT_SECONDS, lambda: f"task {task_id} did not complete: {state.get_task(job_id, task_id)}")


def _wait_job_completed(state: BatchState, job_id: str) -> dict:
    def completed() -> dict | None:
        job = state.get_job(job_id)
        return job if job["state"] == "completed" else None

    return wait_for(completed, WAIT_SECONDS, lambda: f"job {job_id} did not complete: {state.get_job(job_id)}")


def error_of(call, *args) -> BatchError:
    with pytest.raises(BatchError) as info:
        call(*args)
    return info.value


def test_entities_match_the_spec_shapes(make_state) -> None:
    state = make_state(pools=["p:2:3"], app_packages=[AppPackageSpec("tools", "1.0", Path(__file__))])
    pool = state.get_pool("P")  # ids are case-insensitive
    check_shape("BatchPool", pool)
    assert pool["id"] == "p" and pool["taskSlotsPerNode"] == 3 and pool["currentDedicatedNodes"] == 2
    assert pool["virtualMachineConfiguration"] == state.node_system.vm_configuration()  # what the nodes are
    assert pool["vmSize"] == "standard_d4s_v3"  # the smallest Dsv3 size with a core for each of its 3 slots
    nodes = state.list_nodes("p")
    for node in nodes:
        check_shape("BatchNode", node)
    assert {n["state"] for n in nodes} == {"idle"}
    check_shape("BatchApplication", state.get_application("TOOLS"))

    job = state.create_job(
        {
            "id": "Shape-Job",
            "poolInfo": {"poolId": "p"},
            "jobPreparationTask": {"commandLine": "true"},
            "jobReleaseTask": {"commandLine": "true"},
            "commonEnvironmentSettings": [{"name": "A", "value": "1"}],
            "constraints": {"maxTaskRetryCount": 1},
            "metadata": [{"name": "k", "value": "v"}],
        }
    )
    check_shape("BatchJob", job)
    assert job["state"] == "active" and job["url"].endswith("/jobs/Shape-Job")
    results = task_add_results(state.add_task_collection(
        "shape-job",
        [
            {"id": "ok", "commandLine": "true", "environmentSettings": [{"name": "B", "value": "2"}]},
            {"id": "bad", "commandLine": "false", "requiredSlots": 2},
            {"id": "OK", "commandLine": "true"},
        ],
    ))
    for result in results:
        check_shape("BatchTaskCreateResult", result)
    assert [r["status"] for r in results] == ["success", "success", "clienterror"]
    assert results[2]["error"]["code"] == "TaskExists"
    ok = wait_completed(state, "shape-job", "ok")
    bad = wait_completed(state, "shape-job", "bad")
    for task in (ok, bad):
        check_shape("BatchTask", task)
    assert ok["executionInfo"]["result"] == "success" and ok["previousState"] == "running"
    assert bad["executionInfo"]["failureInfo"]["code"] == "FailureExitCode"
    assert bad["executionInfo"]["retryCount"] == 1  # the job's maxTaskRetryCount is the task default
    counts = state.job_task_counts("shape-job")
    check_shape("BatchTaskCountsResult", counts)
    assert counts["taskCounts"] == {"active": 0, "running": 0, "completed": 2, "succeeded": 1, "failed": 1}
    assert counts["taskSlotCounts"]["failed"] == 2
    state.terminate_job("shape-job", None)
    _wait_job_completed(state, "shape-job")
    job = state.get_job("shape-job")
    check_shape("BatchJob", job)
    assert job["executionInfo"]["terminateReason"] == "UserTerminate"
    for entry in state.job_prep_release_status("shape-job"):
        check_shape("BatchJobPreparationAndReleaseTaskStatus", entry)
        assert entry["jobReleaseTaskExecutionInfo"]["state"] == "completed"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"id": "x" * 65, "poolInfo": {"poolId": "p"}}, 400, "InvalidPropertyValue"),
        ({"id": "has space", "poolInfo": {"poolId": "p"}}, 400, "InvalidPropertyValue"),
        ({"poolInfo": {"poolId": "p"}}, 400, "MissingRequiredProperty"),
        ({"id": "nopool"}, 400, "MissingRequiredProperty"),
        ({"id": "ghost", "poolInfo": {"poolId": "ghost"}}, 404, "PoolNotFound"),
        ({"id": "deps", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": True}, 400, "InvalidPropertyValue"),
        ({"id": "rel", "poolInfo": {"poolId": "p"}, "jobReleaseTask": {"commandLine": "x"}}, 400,
         "InvalidPropertyValue"),
    ],
)
def test_create_job_refuses_bad_bodies(make_state, body: dict, status: int, code: str) -> None:
    state = make_state()
    err = error_of(state.create_job, body)
    assert (err.status, err.code) == (status, code)
    assert err.message


def test_job_ids_are_case_insensitive_and_unique(make_state) -> None:
    state = make_state()
    state.create_job({"id": "Dup", "poolInfo": {"poolId": "p"}})
    err = error_of(state.create_job, {"id": "dUP", "poolInfo": {"poolId": "p"}})
    assert (err.status, err.code) == (409, "JobExists")
    assert state.get_job("DUP")["id"] == "Dup"
    assert error_of(state.get_job, "nope").code == "JobNotFound"


def test_task_validation_and_collection_limits(make_state) -> None:
    state = make_state()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "jobPreparationTask": {"commandLine": "true"}})
    err = error_of(state.add_task_collection, "j", [{"id": f"t{i}", "commandLine": "true"} for i in range(101)])
    assert (err.status, err.code) == (413, "RequestBodyTooLarge")
    assert state.list_tasks("j") == []  # nothing of a refused collection is added
    results = task_add_results(state.add_task_collection(
        "j",
        [
            {"id": "jobpreparation", "commandLine": "true"},
            {"id": "nocmd"},
            {"id": "dep", "commandLine": "true", "dependsOn": {"taskIds": ["x"]}},
            {"id": "esc", "commandLine": "true", "resourceFiles": [{"httpUrl": "http://127.0.0.1/x",
                                                                      "filePath": "../x"}]},
        ],
    ))
    assert [r["error"]["code"] for r in results] == [
        "TaskIdSameAsJobPreparationTask",
        "MissingRequiredProperty",
        "TaskDependenciesNotSpecifiedOnJob",
        "InvalidPropertyValue",
    ]
    assert error_of(state.get_task, "j", "missing").code == "TaskNotFound"


def test_tasks_cannot_be_added_to_ended_jobs(make_state) -> None:
    state = make_state()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.terminate_job("j", "done here")
    err = error_of(state.add_task, "j", {"id": "late", "commandLine": "true"})
    assert err.code in ("JobBeingTerminated", "JobCompleted") and err.status == 409
    _wait_job_completed(state, "j")
    assert state.get_job("j")["executionInfo"]["terminateReason"] == "done here"
    assert error_of(state.add_task, "j", {"id": "late", "commandLine": "true"}).code == "JobCompleted"
    assert error_of(state.terminate_job, "j", None).code == "JobCompleted"


def test_update_job_terminates_when_all_tasks_complete(make_state) -> None:
    state = make_state()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "true"})
    wait_completed(state, "j", "t")
    assert state.get_job("j")["state"] == "active"  # noaction by default
    state.update_job("j", {"onAllTasksComplete": "terminatejob"})
    _wait_job_completed(state, "j")
    job = state.get_job("j")
    assert job["state"] == "completed" and job["executionInfo"]["terminateReason"] == "AllTasksComplete"
    assert error_of(state.update_job, "j", {"priority": 1}).code == "JobCompleted"


def _hold_slots(state: BatchState, job_id: str, ids: list[str], slots: int = 1) -> None:
    """Tasks that wait until a file named `release` appears in their node's shared dir (no wall clock)."""
    script = (
        "import os,time\n"
        "p=os.path.join(os.environ['AZ_BATCH_NODE_SHARED_DIR'],'release')\n"
        "while not os.path.exists(p): time.sleep(0.02)\n"
    )
    for task_id in ids:
        state.add_task(job_id, {"id": task_id, "commandLine": f'python -c "{script}"', "requiredSlots": slots})


def _wait_running(state: BatchState, job_id: str, count: int) -> list[dict]:
    def running() -> list[dict] | None:
        tasks = [t for t in state.list_tasks(job_id) if t["state"] == "running"]
        return tasks if len(tasks) >= count else None

    return wait_for(running, WAIT_SECONDS, lambda: f"fewer than {count} running tasks: {state.list_tasks(job_id)}")


def _release_all(state: BatchState) -> None:
    for pool in state.pools.values():
        for node in pool.nodes:
            (node.root / "shared" / "release").write_text("go")


@pytest.mark.parametrize(("fill", "expected_nodes"), [("spread", 2), ("pack", 1)])
def test_node_fill_type_places_tasks(make_state, fill: str, expected_nodes: int) -> None:
    state = make_state(pools=["p:2:2"])
    state.pools["p"].node_fill_type = fill  # pools come from config; the fill type is fixed per pool
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    _hold_slots(state, "j", ["a", "b"])
    running = _wait_running(state, "j", 2)
    assert len({t["nodeInfo"]["nodeId"] for t in running}) == expected_nodes
    nodes = state.list_nodes("p")
    for node in nodes:
        check_shape("BatchNode", node)  # with recentTasks while busy
    assert sum(n["runningTaskSlotsCount"] for n in nodes) == 2
    assert {n["state"] for n in nodes if n["runningTasksCount"]} == {"running"}
    _release_all(state)
    for task_id in ("a", "b"):
        assert wait_completed(state, "j", task_id)["executionInfo"]["result"] == "success"


def test_slots_limit_concurrency_and_oversized_tasks_stay_active(make_state) -> None:
    state = make_state(pools=["p:1:2"])
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "huge", "commandLine": "true", "requiredSlots": 3})
    _hold_slots(state, "j", ["wide"], slots=2)
    _hold_slots(state, "j", ["narrow"], slots=1)
    _wait_running(state, "j", 1)
    tasks = {t["id"]: t for t in state.list_tasks("j")}
    assert tasks["wide"]["state"] == "running"
    assert tasks["narrow"]["state"] == "active"  # the node's two slots are taken
    assert tasks["huge"]["state"] == "active" and "nodeInfo" not in tasks["huge"]
    _release_all(state)
    wait_completed(state, "j", "narrow")
    assert state.get_task("j", "huge")["state"] == "active"
    counts = state.job_task_counts("j")["taskCounts"]
    assert counts["active"] == 1 and counts["succeeded"] == 2


def test_fifo_order_on_one_slot(make_state) -> None:
    state = make_state(pools=["p:1:1"])
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    order = ["t3", "t1", "t2", "t0"]
    state.add_task_collection(
        "j",
        [
            {"id": t, "commandLine": f"/bin/sh -c 'echo {t} >> $AZ_BATCH_NODE_SHARED_DIR/order'"}
            for t in order
        ],
    )
    for task_id in order:
        wait_completed(state, "j", task_id)
    node = state.pools["p"].nodes[0]
    assert (node.root / "shared" / "order").read_text().split() == order


def test_durations_and_app_package_names() -> None:
    assert duration_seconds("PT1.5S") == 1.5
    assert duration_seconds("P1DT2H3M4S") == 86400 + 7200 + 180 + 4
    assert duration_seconds("P10675199DT2H48M5.4775807S") is None  # Batch's "unlimited"
    assert duration_seconds(None) is None
    assert app_package_env_name("my-app.x", "1.0#b") == "AZ_BATCH_APP_PACKAGE_my_app_x_1_0_b"
    assert app_package_env_name("Tools", None) == "AZ_BATCH_APP_PACKAGE_Tools"


def test_task_failure_with_exit_options_terminates_the_job(make_state) -> None:
    state = make_state()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "onTaskFailure": "performexitoptionsjobaction"})
    state.add_task(
        "j",
        {
            "id": "tolerated",
            "commandLine": "python -c 'raise SystemExit(3)'",
            "exitConditions": {"exitCodes": [{"code": 3, "exitOptions": {"jobAction": "none"}}]},
        },
    )
    wait_completed(state, "j", "tolerated")
    assert state.get_job("j")["state"] == "active"
    state.add_task("j", {"id": "fatal", "commandLine": "python -c 'raise SystemExit(1)'"})
    wait_completed(state, "j", "fatal")
    _wait_job_completed(state, "j")
    assert state.get_job("j")["executionInfo"]["terminateReason"] == "TaskFailed"


def test_job_max_wall_clock_time_terminates_running_tasks(make_state) -> None:
    state = make_state()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "constraints": {"maxWallClockTime": "PT0.5S"}})
    state.add_task("j", {"id": "long", "commandLine": "sleep 300"})
    job = _wait_job_completed(state, "j")
    assert job["executionInfo"]["terminateReason"] == "MaxWallClockTimeExpiry"
    assert wait_completed(state, "j", "long")["executionInfo"]["failureInfo"]["code"] == "TaskEnded"


def test_terminating_a_job_kills_a_running_preparation_task(make_state) -> None:
    state = make_state(pools=["p:1:1"])
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "jobPreparationTask": {"commandLine": "sleep 300"}})
    state.add_task("j", {"id": "waits", "commandLine": "true"})
    wait_for(lambda: state.get_task("j", "waits")["state"] == "preparing", WAIT_SECONDS, "task waits never preparing")
    state.terminate_job("j", None)
    assert _wait_job_completed(state, "j")["state"] == "completed"
    task = state.get_task("j", "waits")
    assert task["state"] == "completed" and task["executionInfo"]["failureInfo"]["code"] == "TaskEnded"


def test_higher_priority_jobs_are_scheduled_first(make_state) -> None:
    state = make_state(pools=["p:1:1"])
    state.create_job({"id": "block", "poolInfo": {"poolId": "p"}})
    _hold_slots(state, "block", ["holder"])
    _wait_running(state, "block", 1)
    state.create_job({"id": "low", "poolInfo": {"poolId": "p"}, "priority": -10})
    state.create_job({"id": "high", "poolInfo": {"poolId": "p"}, "priority": 100})
    line = "/bin/sh -c 'echo {0} >> $AZ_BATCH_NODE_SHARED_DIR/prio'"
    state.add_task("low", {"id": "l", "commandLine": line.format("low")})
    state.add_task("high", {"id": "h", "commandLine": line.format("high")})
    _release_all(state)
    wait_completed(state, "low", "l")
    wait_completed(state, "high", "h")
    node = state.pools["p"].nodes[0]
    assert (node.root / "shared" / "prio").read_text().split() == ["high", "low"]


def test_max_parallel_tasks_limits_a_job(make_state) -> None:
    state = make_state(pools=["p:2:2"])
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "maxParallelTasks": 1})
    _hold_slots(state, "j", ["a", "b"])
    _wait_running(state, "j", 1)
    assert [t["state"] for t in state.list_tasks("j")] == ["running", "active"]
    _release_all(state)
    for task_id in ("a", "b"):
        assert wait_completed(state, "j", task_id)["executionInfo"]["result"] == "success"


def test_deleting_a_terminating_job_removes_it(make_state) -> None:
    state = make_state(pools=["p:1:1"])
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    _hold_slots(state, "j", ["held"])
    _wait_running(state, "j", 1)
    state.terminate_job("j", None)
    state.delete_job("j")
    try:
        state.delete_job("j")  # a second delete while the job is still deleting is accepted...
    except BatchError as err:
        assert err.code == "JobNotFound"  # ...and once it is gone, the job is simply not found
    wait_for(lambda: "j" not in state.jobs, WAIT_SECONDS, lambda: f"job was never removed: {state.get_job('j')}")
    assert error_of(state.get_job, "j").code == "JobNotFound"
    assert all(n["runningTasksCount"] == 0 for n in state.list_nodes("p"))


def test_prep_failure_without_wait_for_success_does_not_fail_tasks(make_state) -> None:
    state = make_state(pools=["p:1:1"])
    state.create_job(
        {"id": "j", "poolInfo": {"poolId": "p"},
         "jobPreparationTask": {"commandLine": "false", "waitForSuccess": False}}
    )
    state.add_task("j", {"id": "t", "commandLine": "true"})
    assert wait_completed(state, "j", "t")["executionInfo"]["result"] == "success"
    prep = state.job_prep_release_status("j")[0]["jobPreparationTaskExecutionInfo"]
    assert prep["result"] == "failure" and prep["exitCode"] == 1


def test_deleting_an_active_job_runs_its_release_task(make_state) -> None:
    state = make_state(pools=["p:1:1"])
    state.create_job(
        {"id": "j", "poolInfo": {"poolId": "p"}, "jobPreparationTask": {"commandLine": "true"},
         "jobReleaseTask": {"commandLine": "/bin/sh -c 'echo r >> $AZ_BATCH_NODE_SHARED_DIR/released'"}}
    )
    state.add_task("j", {"id": "t", "commandLine": "true"})
    wait_completed(state, "j", "t")
    state.delete_job("j")
    wait_for(lambda: "j" not in state.jobs, WAIT_SECONDS, "deleted job j was never removed")
    node = state.pools["p"].nodes[0]
    assert (node.root / "shared" / "released").read_text() == "r\n"
