"""The task state machine with a fake execution backend: retries, kills, wall clock, preparation and release
order, stale reports. No process runs; every step is the test's decision, so the order of events is exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from support.fake_backend import FakeBackend
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.service_config import BoundEndpoints, PoolSpec, ServiceConfig
from snakemake_executor_plugin_azbatch.local.model.batch_state import BatchState
from snakemake_executor_plugin_azbatch.local.pool_file import start_task
from snakemake_executor_plugin_azbatch.local.backends.task_outcomes import WALL_CLOCK_EXIT_CODE

pytestmark = pytest.mark.quick
WAIT_SECONDS = 10


@pytest.fixture
def model(tmp_path: Path) -> Iterator:
    made: list[BatchState] = []

    def factory(
        pools: tuple[str, ...] | list[PoolSpec] = ("p:1:2",), **overrides: Any
    ) -> tuple[BatchState, FakeBackend]:
        config = ServiceConfig(root=tmp_path / f"s{len(made)}",
                               pools=[PoolSpec.parse(p) if isinstance(p, str) else p for p in pools],
                               **overrides)
        backend = FakeBackend()
        state = BatchState(config, backend, BoundEndpoints("http://127.0.0.1:9"))
        made.append(state)
        state.start()
        return state, backend

    yield factory
    for state in made:
        state.stop()


def task_in(state: BatchState, job: str, task: str, *states: str) -> dict:
    return wait_for(lambda: (t := state.get_task(job, task))["state"] in states and t, WAIT_SECONDS,
                    lambda: f"{task} not in {states}: {state.get_task(job, task)}")


def test_a_failed_attempt_is_retried_then_fails_and_frees_its_slots(model) -> None:
    state, backend = model()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "x", "requiredSlots": 2, "constraints": {"maxTaskRetryCount": 1}})
    first = backend.attempt("t")
    assert state.list_nodes("p")[0]["runningTaskSlotsCount"] == 2
    assert backend.finish(first, 3) is None  # retried: nothing to upload
    second = backend.attempt("t", 2)
    assert second.ref.attempt == first.ref.attempt + 1
    assert backend.finish(second, 3) == (3, {"category": "usererror", "code": "FailureExitCode",
                                             "message": "The task exited with an exit code representing a failure"})
    task = state.get_task("j", "t")
    assert task["state"] == "completed" and task["executionInfo"]["retryCount"] == 1
    assert task["executionInfo"]["exitCode"] == 3
    node = state.list_nodes("p")[0]
    assert node["runningTaskSlotsCount"] == 0 and node["totalTasksRun"] == 2 and node["totalTasksSucceeded"] == 0


def test_a_report_about_an_earlier_attempt_is_ignored(model) -> None:
    state, backend = model()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "x", "constraints": {"maxTaskRetryCount": 1}})
    first = backend.attempt("t")
    backend.finish(first, 1)
    second = backend.attempt("t", 2)
    assert backend.events.attempt_started(first.ref) is False  # stale: the model moved on
    assert backend.events.attempt_exited(first.ref, 0, False) is None
    backend.finish(second, 0)
    assert state.get_task("j", "t")["executionInfo"]["result"] == "success"


def test_terminating_a_running_task_kills_its_attempt_and_keeps_the_exit_code(model) -> None:
    state, backend = model()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "x"})
    attempt = backend.attempt("t")
    assert backend.events.attempt_started(attempt.ref)
    state.terminate_task("j", "t")
    assert backend.kills == [attempt.ref]
    verdict = backend.events.attempt_exited(attempt.ref, 137, False)
    assert verdict is not None and verdict[1]["code"] == "TaskEnded"  # outputs are still uploaded
    backend.events.attempt_completed(attempt.ref, *verdict)
    info = state.get_task("j", "t")["executionInfo"]
    assert (info["exitCode"], info["failureInfo"]["category"]) == (137, "usererror")


def test_wall_clock_expiry_reports_batch_exit_code_without_retry(model) -> None:
    state, backend = model()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "x",
                         "constraints": {"maxWallClockTime": "PT1S", "maxTaskRetryCount": 3}})
    attempt = backend.attempt("t")
    assert attempt.timeout == 1.0
    backend.finish(attempt, 137, timed_out=True)
    info = state.get_task("j", "t")["executionInfo"]
    assert info["exitCode"] == WALL_CLOCK_EXIT_CODE and info["retryCount"] == 0
    assert (info["failureInfo"]["category"], info["failureInfo"]["code"]) == ("servererror", "TaskEnded")


def test_deleting_a_running_task_frees_its_slots_when_the_attempt_ends(model) -> None:
    state, backend = model()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "x"})
    attempt = backend.attempt("t")
    backend.events.attempt_started(attempt.ref)
    state.delete_task("j", "t")
    assert backend.kills == [attempt.ref]
    assert state.list_nodes("p")[0]["runningTasksCount"] == 1  # until the process is gone
    assert backend.events.attempt_exited(attempt.ref, 137, False) is None
    assert state.list_nodes("p")[0]["runningTasksCount"] == 0


def test_a_failed_preparation_sends_its_tasks_to_another_node(model) -> None:
    """Batch: the node whose preparation task failed takes none of the job's tasks; they go back to active and
    run where the preparation task succeeded."""
    state, backend = model(pools=("p:2:1",))
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"},
                      "jobPreparationTask": {"commandLine": "prep", "constraints": {"maxTaskRetryCount": 1}}})
    state.add_task("j", {"id": "a", "commandLine": "x"})
    state.add_task("j", {"id": "b", "commandLine": "x"})
    first, second = backend.job_task("preparation", 1), backend.job_task("preparation", 2)
    bad, good = first.node.node_id, second.node.node_id
    assert bad != good
    task_in(state, "j", "a", "preparing")
    task_in(state, "j", "b", "preparing")
    assert backend.attempts == []  # nothing launched before the preparation ends
    backend.finish_job_task(first, 1)
    retry = backend.job_task("preparation", 3)  # maxTaskRetryCount 1: one more run on the same node
    assert retry.node.node_id == bad
    backend.finish_job_task(retry, 1)
    waiting = task_in(state, "j", "a", "active")
    assert "failureInfo" not in waiting["executionInfo"] and waiting["previousState"] == "preparing"
    assert state.get_node("p", bad)["runningTasksCount"] == 0
    backend.finish_job_task(second)
    assert backend.finish(backend.attempt("b")) == (0, None)
    moved = backend.attempt("a")
    assert moved.node.node_id == good
    assert backend.finish(moved) == (0, None)
    assert task_in(state, "j", "a", "completed")["nodeInfo"]["nodeId"] == good
    statuses = {s["nodeId"]: s["jobPreparationTaskExecutionInfo"] for s in state.job_prep_release_status("j")}
    assert (statuses[bad]["result"], statuses[bad]["retryCount"], statuses[bad]["exitCode"]) == ("failure", 1, 1)
    assert statuses[bad]["failureInfo"]["code"] == "FailureExitCode"
    assert statuses[good]["result"] == "success"
    assert [r.node.node_id for r in backend.job_tasks].count(bad) == 2  # never prepared again for this job


def test_tasks_stay_active_when_the_preparation_failed_on_every_node(model) -> None:
    state, backend = model(pools=("p:1:2",))
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "jobPreparationTask": {"commandLine": "prep"}})
    state.add_task("j", {"id": "a", "commandLine": "x"})
    backend.finish_job_task(backend.job_task("preparation"), 2)
    task_in(state, "j", "a", "active")
    state.add_task("j", {"id": "late", "commandLine": "x"})
    with state.records.lock:
        state.scheduler.tick()  # a placement round: nothing fits anywhere
    assert state.get_task("j", "late")["state"] == "active" and state.get_task("j", "a")["state"] == "active"
    assert backend.attempts == [] and len(backend.job_tasks) == 1
    assert state.list_nodes("p")[0]["state"] == "idle"  # the node stays usable for other jobs
    state.create_job({"id": "other", "poolInfo": {"poolId": "p"}})
    state.add_task("other", {"id": "t", "commandLine": "x"})
    assert backend.finish(backend.attempt("t")) == (0, None)


def test_release_runs_after_the_running_tasks_end_and_then_the_job_completes(model) -> None:
    state, backend = model()
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}, "jobPreparationTask": {"commandLine": "prep"},
                      "jobReleaseTask": {"commandLine": "release"}})
    state.add_task("j", {"id": "t", "commandLine": "x"})
    backend.finish_job_task(backend.job_task("preparation"))
    attempt = backend.attempt("t")
    backend.events.attempt_started(attempt.ref)
    state.terminate_job("j", None)
    assert attempt.ref in backend.kills
    assert [r.ref.kind for r in backend.job_tasks] == ["preparation"]  # the task still holds its node
    verdict = backend.events.attempt_exited(attempt.ref, 137, False)
    assert [r.ref.kind for r in backend.job_tasks] == ["preparation"]  # ...while it uploads its outputs
    backend.events.attempt_completed(attempt.ref, *verdict)
    release = backend.job_task("release")
    assert state.get_job("j")["state"] == "terminating"
    backend.finish_job_task(release)
    wait_for(lambda: state.get_job("j")["state"] == "completed", WAIT_SECONDS, "job j never completed")
    entry = state.job_prep_release_status("j")[0]
    assert entry["jobReleaseTaskExecutionInfo"]["result"] == "success"


def test_nodes_take_tasks_only_once_the_backend_reports_them_ready(model, tmp_path: Path) -> None:
    class SlowNodes(FakeBackend):
        def start_node(self, node) -> None:
            self.nodes.append(node)  # ready later, when the test says so

    config = ServiceConfig(root=tmp_path / "slow", pools=[PoolSpec.parse("p:1:1")])
    backend = SlowNodes()
    state = BatchState(config, backend, BoundEndpoints("http://127.0.0.1:9"))
    state.start()
    try:
        assert state.list_nodes("p")[0]["state"] == "starting"
        state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        state.add_task("j", {"id": "t", "commandLine": "x"})
        assert state.get_task("j", "t")["state"] == "active" and backend.attempts == []
        node = backend.nodes[0]
        backend.events.node_ready(node.pool_id, node.node_id)
        assert backend.attempt("t").node == node
    finally:
        state.stop()


def recount(state: BatchState, job_id: str) -> dict:
    """Task counts recounted from the listed tasks, the slow way, to check the ones the model keeps as it goes."""
    counts = dict.fromkeys(("active", "running", "completed", "succeeded", "failed"), 0)
    slots = dict(counts)
    for task in state.list_tasks(job_id):
        n = task.get("requiredSlots", 1)
        buckets = ["running" if task["state"] == "preparing" else task["state"]]
        if task["state"] == "completed":
            buckets.append("succeeded" if task["executionInfo"]["result"] == "success" else "failed")
        for bucket in buckets:
            counts[bucket] += 1
            slots[bucket] += n
    return {"taskCounts": counts, "taskSlotCounts": slots}


def test_task_counts_and_placement_follow_every_transition(model) -> None:
    """The counts, the active queues and the free-slot index are kept up to date by the transitions themselves:
    after retries, failures, deletes and terminates they agree with a recount, and placement still backfills
    (spread, FIFO, a retried task keeps its place)."""
    state, backend = model(pools=("p:2:2",))
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task_collection("j", [
        {"id": "ok", "commandLine": "x"},
        {"id": "retried", "commandLine": "x", "constraints": {"maxTaskRetryCount": 1}},
        {"id": "wide", "commandLine": "x", "requiredSlots": 2},  # no node keeps two slots free: waits
        {"id": "deleted", "commandLine": "x"},  # backfills past "wide"
        {"id": "small", "commandLine": "x"},
    ])
    node0, node1 = (n.layout for n in state.pools["p"].nodes)
    ok, retried = backend.attempt("ok"), backend.attempt("retried")
    deleted, small = backend.attempt("deleted"), backend.attempt("small")
    assert (ok.node, retried.node, deleted.node, small.node) == (node0, node1, node0, node1)
    assert state.get_task("j", "wide")["state"] == "active"
    assert state.job_task_counts("j") == recount(state, "j")
    backend.finish(ok)
    assert backend.finish(retried, 3) is None  # active again, ahead of "wide" (submission order)
    again = backend.attempt("retried", 2)
    assert again.node == node0 and state.get_task("j", "wide")["state"] == "active"
    backend.events.attempt_started(deleted.ref)
    state.delete_task("j", "deleted")
    backend.events.attempt_exited(deleted.ref, 137, False)
    assert state.job_task_counts("j") == recount(state, "j")
    backend.finish(small)
    assert backend.attempt("wide").node == node1  # the node whose two slots are free now
    backend.finish(again, 4)  # fails for good
    backend.finish(backend.attempt("wide"))
    state.add_task("j", {"id": "never-fits", "commandLine": "x", "requiredSlots": 3})
    state.terminate_task("j", "never-fits")  # an active task completes at once
    counts = state.job_task_counts("j")
    assert counts == recount(state, "j")
    assert counts["taskCounts"] == {"active": 0, "running": 0, "completed": 5, "succeeded": 3, "failed": 2}
    assert counts["taskSlotCounts"]["completed"] == 8
    assert all(n["runningTaskSlotsCount"] == 0 for n in state.list_nodes("p"))


def pool_with_start_task(nodes: int, **task: Any) -> PoolSpec:
    return PoolSpec("p", nodes, 1, start_task=start_task({"commandLine": "setup", **task}, "test"))


def test_start_task_node_states_and_a_failed_start_task_keeps_tasks_off_its_node(model) -> None:
    state, backend = model(pools=[pool_with_start_task(2, maxTaskRetryCount=1)])
    nodes = [n["id"] for n in state.list_nodes("p")]
    assert [n["state"] for n in state.list_nodes("p")] == ["waitingforstarttask"] * 2
    info = state.get_node("p", nodes[0])["startTaskInfo"]
    assert info["state"] == "running" and info["retryCount"] == 0 and "endTime" not in info
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "x"})
    with state.records.lock:
        state.scheduler.tick()
    assert backend.attempts == []  # no node has finished its start task yet
    backend.finish_start_task(backend.start_task(nodes[0]), 5)
    retry = backend.start_task(nodes[0], 2)  # maxTaskRetryCount 1
    assert state.get_node("p", nodes[0])["startTaskInfo"]["retryCount"] == 1
    backend.finish_start_task(retry, 5)
    failed = state.get_node("p", nodes[0])
    assert failed["state"] == "starttaskfailed"
    assert {k: failed["startTaskInfo"][k] for k in ("state", "result", "exitCode", "retryCount")} == {
        "state": "completed", "result": "failure", "exitCode": 5, "retryCount": 1}
    assert failed["startTaskInfo"]["failureInfo"]["code"] == "FailureExitCode"
    assert state.list_node_counts()[0]["dedicated"]["startTaskFailed"] == 1
    with state.records.lock:
        state.scheduler.tick()
    assert backend.attempts == []  # the failed node takes nothing; the other still waits
    backend.finish_start_task(backend.start_task(nodes[1]))
    assert state.get_node("p", nodes[1])["startTaskInfo"]["result"] == "success"
    attempt = backend.attempt("t")
    assert attempt.node.node_id == nodes[1]
    assert state.get_node("p", nodes[1])["state"] == "running"
    backend.finish(attempt)
    assert state.get_node("p", nodes[1])["state"] == "idle"


def test_a_start_task_that_cannot_start_is_not_retried(model) -> None:
    state, backend = model(pools=[pool_with_start_task(1, maxTaskRetryCount=3)])
    node = state.list_nodes("p")[0]["id"]
    failure = {"category": "usererror", "code": "BlobNotFound", "message": "no such blob"}
    backend.finish_start_task(backend.start_task(node), None, failure)
    view = state.get_node("p", node)
    assert view["state"] == "starttaskfailed" and view["startTaskInfo"]["failureInfo"] == failure
    assert "exitCode" not in view["startTaskInfo"] and len(backend.start_tasks) == 1


def test_without_wait_for_success_a_node_takes_tasks_while_its_start_task_runs(model) -> None:
    state, backend = model(pools=[pool_with_start_task(1, waitForSuccess=False)])
    node = state.list_nodes("p")[0]
    assert node["state"] == "idle" and node["startTaskInfo"]["state"] == "running"
    state.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    state.add_task("j", {"id": "t", "commandLine": "x"})
    assert backend.finish(backend.attempt("t")) == (0, None)
    backend.finish_start_task(backend.start_task(node["id"]), 1)
    assert state.get_node("p", node["id"])["state"] == "idle"  # a failure does not stop the node either
    assert state.get_node("p", node["id"])["startTaskInfo"]["result"] == "failure"


def test_a_late_start_task_report_is_ignored(model) -> None:
    state, backend = model(pools=[pool_with_start_task(1, maxTaskRetryCount=1)])
    node = state.list_nodes("p")[0]["id"]
    first = backend.start_task(node)
    backend.finish_start_task(first, 1)
    backend.finish_start_task(first, 0)  # about the first run, which was already retried
    assert state.get_node("p", node)["state"] == "waitingforstarttask"
    backend.finish_start_task(backend.start_task(node, 2), 0)
    assert state.get_node("p", node)["state"] == "idle"
