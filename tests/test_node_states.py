"""Unusable and preempted nodes while tasks wait: the local service marks a node unusable as Batch would (no new
tasks, running ones requeued, `errors` and node counts show it), and a run reports it in one warning, keeps going on
the other nodes, and ends with one line when no node could run tasks for --azbatch-unusable-wait seconds."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from support.services import start_service
from support.executor_runs import output_of, run_snakemake, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from snakemake_executor_plugin_azbatch.run.node_states import NodeStates
from snakemake_executor_plugin_azbatch.run.progress import NodeCounts

POOL = "states"
DISK_FULL = {"code": "DiskFull", "message": "The temporary disk of the node is full"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    handle = start_service(tmp_path_factory.mktemp("node-states"), {"pools": [f"{POOL}:2:1"]})
    try:
        yield handle
    finally:
        handle.stop()


def set_state(service, node_id: str, state: str, errors=None, pool: str = POOL) -> tuple[int, dict]:
    body = {"state": state, **({"errors": errors} if errors is not None else {})}
    request = urllib.request.Request(f"{service.account_url}/_local/pools/{pool}/nodes/{node_id}/state",
                                     data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def node_ids(service) -> list[str]:
    return sorted(n.id for n in service.batch_client().list_nodes(POOL))


def test_an_unusable_node_takes_no_tasks_and_its_running_task_is_requeued(service):
    client = service.batch_client()
    first, second = node_ids(service)
    client.create_job({"id": "unusable-node", "poolInfo": {"poolId": POOL}})
    client.create_task("unusable-node", {"id": "sleeper", "commandLine": "/bin/sh -c 'sleep 30'"})
    running = wait_for(lambda: (t := client.get_task("unusable-node", "sleeper")).state == "running" and t, 30,
                       "the task to run")
    victim = running.node_info.node_id
    other = second if victim == first else first
    status, node = set_state(service, victim, "unusable", [DISK_FULL])
    assert status == 200 and node["state"] == "unusable" and node["errors"] == [DISK_FULL]
    shown = client.get_node(POOL, victim)
    assert enum_text(shown.state) == "unusable" and [e.code for e in shown.errors] == ["DiskFull"]
    (counts,) = [c for c in client.list_pool_node_counts() if c.pool_id == POOL]
    assert (counts.dedicated.unusable, counts.dedicated.total) == (1, 2)
    assert [n.id for n in client.list_nodes(POOL, filter="state eq 'unusable'", select=["id", "errors"])] == [victim]
    # Requeued (not retried: no attempt is used up) and running on the node that is still usable.
    moved = wait_for(lambda: (t := client.get_task("unusable-node", "sleeper")).state == "running"
                     and t.node_info.node_id == other and t, 30, "the task to run on the other node")
    assert moved.execution_info.requeue_count == 1 and moved.execution_info.retry_count == 0
    status, node = set_state(service, victim, "idle")
    assert status == 200 and node["state"] == "idle" and "errors" not in node
    client.begin_delete_job("unusable-node", polling_interval=1).result()


def test_node_state_requests_that_cannot_apply_say_why(service):
    status, body = set_state(service, "nope", "unusable")
    assert (status, body["code"]) == (404, "NodeNotFound")
    status, body = set_state(service, node_ids(service)[0], "running")
    assert status == 400 and body["error"] == 'bad node state request: "state" must be one of unusable, idle'
    status, body = set_state(service, node_ids(service)[0], "unusable", [{"message": "no code"}])
    assert status == 400 and "BatchNodeError" in body["error"]


SNAKEFILE = """
    rule all:
        input: expand("out/{i}.txt", i=range(2))

    rule one:
        output: "out/{i}.txt"
        shell: "echo {wildcards.i} > {output}"
"""


def test_a_run_names_unusable_nodes_and_runs_on_the_others(service, tmp_path):
    first, second = node_ids(service)
    set_state(service, first, "unusable")  # no errors: Batch lost contact with it
    try:
        workdir = write_files(tmp_path / "some-unusable", {"Snakefile": SNAKEFILE})
        result = run_snakemake(service, workdir, container="some-unusable", SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL="0.3")
    finally:
        set_state(service, first, "idle")
    assert result.returncode == 0, output_of(result)
    assert [(workdir / f"out/{i}.txt").read_text() for i in range(2)] == ["0\n", "1\n"]
    warnings = [line for line in result.stderr.splitlines() if "unusable (" in line]
    assert warnings == [
        f"azbatch: pool {POOL}: 1 of 2 node(s) unusable ({first}: no errors reported): Batch runs no tasks there "
        f"and they still cost money; tasks run on the pool's other nodes. See `az batch node show --pool-id {POOL} "
        "--node-id ID`: without errors Batch lost contact and recovers the node itself, with errors reboot, reimage "
        "or delete it"
    ], output_of(result)


def test_a_run_ends_in_one_line_when_no_node_could_run_tasks_for_the_wait(service, tmp_path):
    nodes = node_ids(service)
    for node in nodes:
        set_state(service, node, "unusable", [DISK_FULL])
    try:
        workdir = write_files(tmp_path / "all-unusable", {"Snakefile": SNAKEFILE})
        result = run_snakemake(service, workdir, container="all-unusable", SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL="0.3",
                               SNAKEMAKE_AZBATCH_UNUSABLE_WAIT="2")
        client = service.batch_client()
        leftover = [j.id for j in client.list_jobs() if j.id.startswith("sm-all-unusable-")]
    finally:
        for node in nodes:
            set_state(service, node, "idle")
    assert result.returncode != 0, output_of(result)
    assert not (workdir / "out").exists()
    assert "Traceback" not in result.stderr
    detail = "; ".join(f"{n}: DiskFull: The temporary disk of the node is full" for n in nodes)
    assert (f"azbatch: pool {POOL}: 2 of 2 node(s) unusable ({detail}): Batch runs no tasks there and they still "
            "cost money; no node can run tasks now; the run ends unless Batch recovers one within 2 s") in result.stderr
    ending = (f"azbatch: no node of pool {POOL} could run tasks for 2 s: 2 of 2 node(s) unusable ({detail}). See "
              f"their errors with `az batch node show --pool-id {POOL} --node-id ID`; reboot, reimage or delete them "
              "or resize the pool, then run again (--azbatch-unusable-wait waits longer)")
    assert ending in result.stderr, output_of(result)
    assert leftover == []  # the run's Batch job was terminated and deleted: nothing left active or billing


# ---- the reporting logic, on counts as Pools_ListPoolNodeCounts gives them -----------------------------------


class Log:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def warning(self, text):
        self.lines.append(("warning", text))

    def info(self, text):
        self.lines.append(("info", text))

    def debug(self, text):
        pass


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def counts(total=2, idle=0, unusable=0, preempted=0, start_task_failed=0):
    states = {"total": total, "idle": idle, "unusable": unusable, "preempted": preempted,
              "start_task_failed": start_task_failed}
    return NodeCounts.from_sdk(SimpleNamespace(**states)), NodeCounts()


class Nodes:
    """A client whose filtered node list answers with the given unusable nodes, counting requests."""

    def __init__(self, *ids):
        self.ids = ids
        self.requests = 0

    def list_nodes(self, pool, filter, select):
        self.requests += 1
        return [SimpleNamespace(id=i, errors=[]) for i in self.ids]


@pytest.mark.quick
def test_unusable_nodes_are_reported_once_per_change_and_named_with_one_list():
    log, clock, client = Log(), Clock(), Nodes("n1")
    states = NodeStates(lambda: client, log, wait=120, clock=clock)
    for _ in range(3):
        states.observe({"P": counts(total=3, idle=2, unusable=1)})
    assert client.requests == 1 and len(log.lines) == 1
    assert log.lines[0][1].startswith("azbatch: pool P: 1 of 3 node(s) unusable (n1: no errors reported)")
    client.ids = ("n1", "n2")
    states.observe({"P": counts(total=3, idle=1, unusable=2)})
    assert client.requests == 2 and log.lines[-1][1].startswith("azbatch: pool P: 2 of 3 node(s) unusable (n1: ")
    states.observe({"P": counts(total=3, idle=3)})
    assert log.lines[-1] == ("info", "azbatch: pool P: no node is unusable any more") and client.requests == 2


@pytest.mark.quick
def test_preempted_nodes_are_reported_once_per_change():
    log = Log()
    states = NodeStates(lambda: Nodes(), log, wait=120, clock=Clock())
    states.observe({"P": counts(total=2, preempted=2)})
    states.observe({"P": counts(total=2, preempted=2)})
    states.observe({"P": counts(total=2, idle=2)})
    states.observe({"P": counts(total=2, idle=1, preempted=1)})
    assert [text for _, text in log.lines] == [
        "azbatch: pool P: 2 node(s) preempted (Spot); Batch requeues their tasks, which run again when nodes are "
        "available (dedicated nodes are never preempted)",
        "azbatch: pool P: 1 node(s) preempted (Spot); Batch requeues their tasks, which run again when nodes are "
        "available (dedicated nodes are never preempted)",
    ]


@pytest.mark.quick
def test_a_pool_is_dead_only_after_the_wait_without_any_usable_node():
    clock = Clock()
    states = NodeStates(lambda: Nodes("n1", "n2"), Log(), wait=120, clock=clock)
    states.observe({"P": counts(total=2, unusable=1, start_task_failed=1)})  # neither node can run tasks
    clock.now = 119
    states.observe({"P": counts(total=2, unusable=1, start_task_failed=1)})
    assert states.dead == {}
    clock.now = 130
    states.observe({"P": counts(total=2, idle=1, unusable=1)})  # one recovered: the clock starts again
    clock.now = 200
    states.observe({"P": counts(total=2, unusable=2)})
    clock.now = 319
    states.observe({"P": counts(total=2, unusable=2)})
    assert states.dead == {}
    clock.now = 320
    states.observe({"P": counts(total=2, unusable=2)})
    assert states.dead["p"].startswith("azbatch: no node of pool P could run tasks for 120 s: 2 of 2 node(s) unusable")
    states.observe({"Q": counts(total=2, start_task_failed=2)})  # start task failures are node_health's
    clock.now = 1000
    states.observe({"Q": counts(total=2, start_task_failed=2)})
    assert "q" not in states.dead
