"""Crash recovery: a run killed with SIGKILL leaves its Batch job and tasks active; the next run of the same
workflow (after Snakemake's own `--unlock`) ends them, says so, and produces the right outputs — while a live run of
the same workflow (same host name and path, elsewhere; or a --nolock run here) is named and left alone. The
heartbeat that tells them apart, and a job terminated by someone else, over the local service."""

from __future__ import annotations

import signal
import subprocess
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from azure.core.exceptions import HttpResponseError
from support.executor_runs import output_of, run_snakemake, snakemake_command, snakemake_env, write_files
from support.processes import processes_with
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.run import recovery
from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text, error_code
from snakemake_executor_plugin_azbatch.azure_api.batch_client import BatchService
from snakemake_executor_plugin_azbatch.config import resolve
from snakemake_executor_plugin_azbatch.run.run_identity import (
    HEARTBEAT_EVERY_KEY, HEARTBEAT_KEY, HOST_KEY, PROCESS_KEY, RUN_KEY, SPACE_KEY, WORKFLOW_KEY, RunIdentity,
    heartbeat_text, parse_heartbeat, process_alive, workflow_key,
)
from snakemake_executor_plugin_azbatch.run.run_watch import RunWatch
from snakemake_executor_plugin_azbatch.staging import Staging

pytestmark = pytest.mark.no_report  # no test here reads a run report

SLEEP_MARKER = "613.75"  # a sleep duration no other test uses, to find leftover task processes

SNAKEFILE = f"""
    rule all:
        input: expand("out/{{i}}.txt", i=range(2))

    rule slow:
        output: "out/{{i}}.txt"
        params: delay=config.get("delay", "{SLEEP_MARKER}")
        shell: "sleep {{params.delay}} && echo value-{{wildcards.i}} > {{output}}"
"""


def _jobs_of(client, label):
    return [j for j in client.list_jobs() if j.id.startswith(f"sm-{label}-")]


def test_next_run_ends_the_jobs_and_tasks_of_a_killed_run(local_service, tmp_path):
    label = "crash-recovery"
    workdir = write_files(tmp_path / label, {"Snakefile": SNAKEFILE})
    client = local_service.batch_client()
    env = snakemake_env(local_service, "crash", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    proc = subprocess.Popen(
        snakemake_command(), cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first = None
    try:
        def running():
            jobs = _jobs_of(client, label)
            return jobs and any(enum_text(t.state) == "running" for t in client.list_tasks(jobs[0].id)) and jobs[0]

        first = wait_for(running, 120, "a running task of the first run", interval=0.5)
        wait_for(lambda: processes_with(SLEEP_MARKER), 120, "a task process on the node", interval=0.5)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert enum_text(client.get_job(first.id).state) == "active"  # nothing ended it: the process died
    meta = {m.name: m.value for m in client.get_job(first.id).metadata}
    assert meta[WORKFLOW_KEY] == workflow_key(str(workdir))

    unlock = run_snakemake(local_service, workdir, "--unlock", container="crash")
    assert unlock.returncode == 0, output_of(unlock)
    # A live run of the same workflow elsewhere (same host name and path, another container): left alone.
    live = {**meta, RUN_KEY: "run-elsewhere", SPACE_KEY: "0123456789abcdef",
            HEARTBEAT_KEY: heartbeat_text(datetime.now(timezone.utc))}
    _other_run_job(client, first.pool_info.pool_id, f"sm-{label}-elsewhere", live)
    again = run_snakemake(
        local_service, workdir, "--config", "delay=0", container="crash", SNAKEMAKE_AZBATCH_KEEP_JOB="true"
    )
    text = output_of(again)
    assert again.returncode == 0, text
    assert f"azbatch: Batch job {first.id} of an earlier run" in text, text
    assert sum(f"Batch job {first.id} of an earlier run" in line for line in text.splitlines()) == 1, text

    assert enum_text(client.get_job(first.id).state) == "completed", text  # terminated
    assert client.get_job(first.id).execution_info.termination_reason.startswith("ended by run "), text
    assert f"azbatch: Batch job sm-{label}-elsewhere belongs to a live run of this workflow" in text, text
    assert enum_text(client.get_job(f"sm-{label}-elsewhere").state) == "active"
    client.begin_delete_job(f"sm-{label}-elsewhere", polling_interval=1).result()
    assert all(enum_text(t.state) == "completed" for t in client.list_tasks(first.id))
    active = [j.id for j in _jobs_of(client, label) if enum_text(j.state) == "active"]
    assert active == [], active
    wait_for(lambda: not processes_with(SLEEP_MARKER), 60, "task processes of the first run to end", interval=0.5)
    for i in range(2):
        assert (workdir / "out" / f"{i}.txt").read_text() == f"value-{i}\n"
    for job in _jobs_of(client, label):
        client.begin_delete_job(job.id, polling_interval=1).result()


def _other_run_job(client, pool_id, job_id, meta: dict[str, str]) -> None:
    """A Batch job as another run of the plugin would have created it, with that run's metadata."""
    client.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}, "onAllTasksComplete": "noaction",
                       "metadata": [{"name": k, "value": v} for k, v in meta.items()]})


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_cleanup_ends_dead_runs_only_and_names_who_did_it(local_service, tmp_path):
    """Same host name and working directory (the same workflow key): a run elsewhere with a fresh heartbeat is left
    alone with one line; a stale heartbeat, or a process gone on this machine, is a dead run whose job is ended with
    a reason naming this run; another workflow's job is not looked at. Over HTTP with the real SDK."""
    client = local_service.batch_client()
    key = workflow_key(str(tmp_path))
    me = RunIdentity.current(key, "20260101T000000-aaaaaa", 600.0)
    now = datetime.now(timezone.utc)
    fresh, old = heartbeat_text(now - timedelta(minutes=5)), heartbeat_text(now - timedelta(hours=2))
    base = {WORKFLOW_KEY: key, HOST_KEY: me.host}
    jobs = {
        # another container, same host name and path: other machine space, fresh heartbeat
        "sm-rec-live": {**base, RUN_KEY: "run-live", SPACE_KEY: "0123456789abcdef", PROCESS_KEY: "1:1",
                        HEARTBEAT_KEY: fresh, HEARTBEAT_EVERY_KEY: "600"},
        "sm-rec-stale": {**base, RUN_KEY: "run-stale", SPACE_KEY: "0123456789abcdef", PROCESS_KEY: "1:1",
                         HEARTBEAT_KEY: old, HEARTBEAT_EVERY_KEY: "600"},
        # this machine, its process gone (e.g. SIGKILL): dead at once despite a fresh heartbeat
        "sm-rec-killed": {**base, RUN_KEY: "run-killed", SPACE_KEY: me.space, PROCESS_KEY: f"{_dead_pid()}:1",
                          HEARTBEAT_KEY: fresh, HEARTBEAT_EVERY_KEY: "600"},
        # this machine, its process alive (a --nolock run in the same directory)
        "sm-rec-nolock": {**base, RUN_KEY: "run-nolock", SPACE_KEY: me.space, PROCESS_KEY: me.process,
                          HEARTBEAT_KEY: fresh, HEARTBEAT_EVERY_KEY: "600"},
        "sm-rec-other": {**base, WORKFLOW_KEY: "ffffffffffffffff", RUN_KEY: "run-other", HEARTBEAT_KEY: old},
    }
    for job_id, meta in jobs.items():
        _other_run_job(client, local_service.pool_id, job_id, meta)
    batch = BatchService(resolve(None, local_service.env), credential_factory=lambda: None)
    # What the dead runs left in storage: their own containers, which the executor's callback deletes.
    config = resolve(None, environ={**local_service.env, "SNAKEMAKE_AZBATCH_STORAGE_CONTAINER": "recovery"})
    infos = []
    staging = Staging(config, lambda: None, tmp_path / "record", SimpleNamespace(info=infos.append))
    blobs = local_service.blob_service_client()
    for run in ("run-killed", "run-stale", "run-live"):
        blobs.create_container(staging.run_container_name(run))

    def dead_run(run: str) -> None:
        ended.append(run)
        staging.remove_dead_run_container(run)

    lines, ended = [], []
    try:
        found = recovery.end_earlier_runs(batch, me, 1800.0, keep=False, delete=False,
                                          logger=SimpleNamespace(warning=lines.append), on_dead_run=dead_run)
        left = {c.name for c in blobs.list_containers(name_starts_with="recovery-run-")}
        assert left == {staging.run_container_name("run-live")}, (left, infos)
        assert len(infos) == 2 and all("of the dead run" in line for line in infos), infos
        states = {job_id: enum_text(client.get_job(job_id).state) for job_id in jobs}
        assert states == {"sm-rec-live": "active", "sm-rec-stale": "completed", "sm-rec-killed": "completed",
                          "sm-rec-nolock": "active", "sm-rec-other": "active"}, (states, lines)
        assert sorted(found.dead_runs) == sorted(ended) == ["run-killed", "run-stale"]
        reason = client.get_job("sm-rec-stale").execution_info.termination_reason
        assert reason == f"ended by run {me.run} on {me.host}"[:64]
        assert len(lines) == 4, lines  # one per job of another run of this workflow
        live = [line for line in lines if "sm-rec-live" in line]
        assert live == [f"azbatch: Batch job sm-rec-live belongs to a live run of this workflow (run run-live on host "
                        f"{me.host}, heartbeat 5 min ago); left alone (it is ended only once its heartbeat is 30 min "
                        "old)"], lines
        assert any("sm-rec-stale" in line and "no heartbeat for 2.0 h" in line and "terminating" in line
                   for line in lines), lines
        assert any("sm-rec-killed" in line and "has ended" in line for line in lines), lines
    finally:
        for job_id in jobs:
            client.begin_delete_job(job_id, polling_interval=1).result()
        batch.close()
        staging.close()
        blobs.delete_container(staging.run_container_name("run-live"))


def test_heartbeat_rewrites_all_metadata_and_a_terminated_job_is_named(local_service):
    """Jobs_UpdateJob replaces the whole metadata list: the watch sends every key (the workflow item too) with a
    new heartbeat. A job terminated by someone else ends the run with one line carrying Batch's terminateReason."""
    client = local_service.batch_client()
    me = RunIdentity.current("1111111111111111", "20260101T000000-bbbbbb", 600.0)
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    metadata = [{"name": "snakemake-workflow", "value": "/w/Snakefile"}, *me.metadata(start)]
    client.create_job({"id": "sm-beat", "poolInfo": {"poolId": local_service.pool_id}, "metadata": metadata})
    batch = BatchService(resolve(None, local_service.env), credential_factory=lambda: None)
    ended = []
    watch = RunWatch(batch, me, SimpleNamespace(debug=print), ended.append)
    try:
        watch.jobs["sm-beat"] = (local_service.pool_id, metadata[:1])  # tracked without starting the thread
        watch.beat()
        meta = {m.name: m.value for m in client.get_job("sm-beat").metadata}
        assert meta["snakemake-workflow"] == "/w/Snakefile" and meta[RUN_KEY] == me.run
        assert set(meta) == {"snakemake-workflow", *(m["name"] for m in metadata)}
        assert parse_heartbeat(meta[HEARTBEAT_KEY]) > start + timedelta(minutes=59)
        client.update_job("sm-beat", {"priority": 1})  # a PATCH without metadata leaves it as it is
        assert {m.name: m.value for m in client.get_job("sm-beat").metadata} == meta
        with pytest.raises(HttpResponseError) as refused:  # Batch requires name and value of every item
            client.update_job("sm-beat", {"metadata": [{"name": "x"}]})
        assert refused.value.status_code == 400 and error_code(refused.value) == "MissingRequiredProperty"
        client.begin_terminate_job("sm-beat", {"terminateReason": "ended by run X on host-b"},
                                   polling_interval=1).result()
        watch.beat()
        assert ended == ["azbatch: Batch job sm-beat of this run was terminated outside this run (terminateReason: "
                         "ended by run X on host-b), which ended its tasks (job state completed); the run ends and "
                         "its other Batch jobs are terminated"], ended
    finally:
        client.begin_delete_job("sm-beat", polling_interval=1).result()
        batch.close()


def test_a_run_whose_job_someone_else_terminates_ends_saying_who(local_service, tmp_path):
    """The user of a run whose Batch job another run (or anyone) terminates reads Batch's terminateReason in the
    one line that ends the run, not only `Task Was Ended by User Request`."""
    label = "ended-elsewhere"
    workdir = write_files(tmp_path / label, {"Snakefile": SNAKEFILE})
    client = local_service.batch_client()
    env = snakemake_env(local_service, "ended", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    proc = subprocess.Popen(snakemake_command(), cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def running():
            jobs = _jobs_of(client, label)
            return jobs and any(enum_text(t.state) == "running" for t in client.list_tasks(jobs[0].id)) and jobs[0]

        job = wait_for(running, 120, "a running task", interval=0.5)
        client.begin_terminate_job(job.id, {"terminateReason": "ended by run R2 on host-b"}, polling_interval=1)
        text, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, text
    lines = [line for line in text.splitlines() if "was terminated outside this run" in line]
    assert lines == [f"Error: azbatch: Batch job {job.id} of this run was terminated outside this run "
                     "(terminateReason: ended by run R2 on host-b), which ended its tasks (job state completed); the "
                     "run ends and its other Batch jobs are terminated"], text
    assert "Traceback" not in text
    wait_for(lambda: not processes_with(SLEEP_MARKER), 60, "the run's task processes to end", interval=0.5)
    for old in _jobs_of(client, label):
        client.begin_delete_job(old.id, polling_interval=1).result()


@pytest.mark.quick
def test_workflow_key_depends_on_host_and_directory(tmp_path):
    a = workflow_key(str(tmp_path), "host1")
    assert a == workflow_key(str(tmp_path) + "/", "host1")
    assert a != workflow_key(str(tmp_path), "host2")
    assert a != workflow_key(str(tmp_path / "x"), "host1")


@pytest.mark.quick
def test_own_process_is_alive_and_a_reused_pid_is_not():
    me = RunIdentity.current("k", "r", 600.0)
    assert process_alive(me.process)
    pid = me.process.partition(":")[0]
    assert not process_alive(f"{pid}:1")  # same pid, other start time: a reused pid
    assert not process_alive(f"{_dead_pid()}:1")
