"""Adoption over the local service: a rerun after a crash takes over the tasks the dead run left on Batch (those
still running are followed, those finished after the crash have their outputs downloaded) instead of submitting
them again; a task whose input changed is submitted anew and the dead one ended. SIGHUP cancels like SIGTERM, or
with --azbatch-leave-on-hangup leaves the tasks for the next run to adopt."""

from __future__ import annotations

import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.blob_access import sas_expiry
from support.executor_runs import output_of, run_snakemake, snakemake_command, snakemake_env, write_files
from support.processes import processes_with
from support.services import ServiceHandle, start_service
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.adoption.content_key import key_from_display_name
from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from snakemake_executor_plugin_azbatch.run.run_identity import ADOPTED_FROM_KEY, RUN_KEY, RunIdentity, why_dead
from snakemake_executor_plugin_azbatch.staging.run_container import run_container_name

LONG = "21.37"  # seconds; durations no other test uses, to find the task processes
SHORT = "2.19"
SHORT_SCRIPT = f"""
    import time
    time.sleep({SHORT})
    with open(snakemake.output[0], "w") as out:
        out.write(f"short-{{snakemake.wildcards.i}}\\n")
"""
WAIT = 120

SNAKEFILE = f"""
    rule all:
        input: expand("out/long{{i}}.txt", i=range(3)), expand("out/short{{i}}.txt", i=range(2)), "out/changed.txt"

    rule long:
        input: "in/data.txt"
        output: "out/long{{i}}.txt"
        shell: "sleep {LONG} && cat {{input}} > {{output}} && echo long-{{wildcards.i}} >> {{output}}"

    rule short:
        input: "in/data.txt"
        output: "out/short{{i}}.txt"
        script: "scripts/short.py"

    rule changed:
        input: "in/changed.txt"
        output: "out/changed.txt"
        shell: "sleep {LONG} && cat {{input}} > {{output}}"
"""


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> ServiceHandle:
    """One node with slots for every task of a run at once (they only sleep); one with a single slot."""
    handle = start_service(tmp_path_factory.mktemp("adoption") / "service", {"pools": ["adopt:1:8", "queue:1:1"]})
    try:
        yield handle
    finally:
        handle.stop()


def _jobs(client, label: str) -> list:
    return [j for j in client.list_jobs() if j.id.startswith(f"sm-{label}-")]


def _tasks_in(client, job_id: str, state: str) -> list:
    return [t for t in client.list_tasks(job_id) if enum_text(t.state) == state]


def _start(svc, workdir: Path, container: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(snakemake_command(*args), cwd=workdir, env=snakemake_env(svc, container, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def _running_job(client, label: str, count: int):
    def check():
        jobs = _jobs(client, label)
        return jobs and len(_tasks_in(client, jobs[0].id, "running")) == count and jobs[0]

    return wait_for(check, WAIT, f"{count} running tasks of the first run", interval=0.5)


def test_a_rerun_after_kill_9_adopts_running_and_finished_tasks_and_resubmits_only_a_changed_one(svc, tmp_path):
    label = "adopt-kill"
    workdir = write_files(tmp_path / label, {"Snakefile": SNAKEFILE, "scripts/short.py": SHORT_SCRIPT,
                                             "in/data.txt": "data\n", "in/changed.txt": "before\n"})
    client = svc.batch_client()
    first = _start(svc, workdir, "adopt")
    try:
        dead = _running_job(client, label, 6)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        _stop(first)
    # The two short tasks finish after the kill; the long ones keep running.
    wait_for(lambda: len(_tasks_in(client, dead.id, "completed")) == 2, WAIT, "the short tasks to finish",
             interval=0.5)
    keys = {t.id: key_from_display_name(t.display_name) for t in client.list_tasks(dead.id)}
    assert len(set(keys.values())) == 6 and None not in keys.values(), keys
    (workdir / "in" / "changed.txt").write_text("after\n")

    unlock = run_snakemake(svc, workdir, "--unlock", container="adopt")
    assert unlock.returncode == 0, output_of(unlock)
    rerun = run_snakemake(svc, workdir, "--rerun-incomplete", container="adopt", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    text = output_of(rerun)
    assert rerun.returncode == 0, text
    adopted = [line for line in text.splitlines() if line.startswith("azbatch: adopted ")]
    run = {m.name: m.value for m in dead.metadata}[RUN_KEY]
    assert len(adopted) == 1 and adopted[0].startswith("azbatch: adopted 3 running and 2 finished task(s) of the "
                                                       "run started "), text
    assert adopted[0].endswith("; nothing resubmitted for them"), text

    new_jobs = [j for j in _jobs(client, label) if j.id != dead.id]
    submitted = [t for j in new_jobs for t in client.list_tasks(j.id)]
    assert [t.id.split("-")[0] for t in submitted] == ["changed"], [t.id for t in submitted]
    # The dead run's task for the old input was ended, not taken; the five taken ones succeeded.
    old = {t.id.split("-")[0] + t.id.split("-")[1]: t for t in client.list_tasks(dead.id)}
    ended = [t for t in client.list_tasks(dead.id) if t.id.startswith("changed-")]
    assert len(ended) == 1 and enum_text(ended[0].execution_info.result) == "failure", old
    taken = [t for t in client.list_tasks(dead.id) if not t.id.startswith("changed-")]
    assert len(taken) == 5 and all(enum_text(t.execution_info.result) == "success" for t in taken), old
    meta = {m.name: m.value for m in client.get_job(dead.id).metadata}
    assert meta[ADOPTED_FROM_KEY] == run and meta[RUN_KEY] != run  # followed by the rerun while it ran
    for i in range(3):
        assert (workdir / "out" / f"long{i}.txt").read_text() == f"data\nlong-{i}\n"
    for i in range(2):
        assert (workdir / "out" / f"short{i}.txt").read_text() == f"short-{i}\n"
    assert (workdir / "out" / "changed.txt").read_text() == "after\n"
    page = next(line for line in text.splitlines() if line.startswith("azbatch: run report: "))
    report = (Path(page.removeprefix("azbatch: run report: ")).parent / "tasks.tsv").read_text().splitlines()
    header = report[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in report[1:]]
    assert sorted(r["adopted"] for r in rows) == ["", "finished", "finished", "running", "running", "running"], rows
    assert not processes_with(LONG), "task processes left running"
    for job in _jobs(client, label):
        client.begin_delete_job(job.id, polling_interval=1).result()
    svc.blob_service_client().delete_container(run_container_name("adopt", run))


HANGUP_SNAKEFILE = f"""
    rule all:
        input: expand("out/{{i}}.txt", i=range(2))

    rule slow:
        output: "out/{{i}}.txt"
        shell: "sleep {LONG} && echo value-{{wildcards.i}} > {{output}}"
"""


def test_sighup_leaves_the_tasks_when_asked_and_otherwise_cancels_like_sigterm(svc, tmp_path):
    """With --azbatch-leave-on-hangup a SIGHUP ends the run leaving its job, tasks and container; the next run
    adopts the tasks (and becomes their owner); a SIGHUP to that run, without the setting, ends them all."""
    label = "adopt-hangup"
    workdir = write_files(tmp_path / label, {"Snakefile": HANGUP_SNAKEFILE})
    client = svc.batch_client()
    first = _start(svc, workdir, "hangup", SNAKEMAKE_AZBATCH_LEAVE_ON_HANGUP="true")
    try:
        left = _running_job(client, label, 2)
        first.send_signal(signal.SIGHUP)
        text, _ = first.communicate(timeout=60)
    finally:
        _stop(first)
    assert first.returncode != 0, text
    lines = [line for line in text.splitlines() if line.startswith("azbatch: SIGHUP: left ")]
    assert lines == [f"azbatch: SIGHUP: left 2 task(s) running on Batch (Batch jobs {left.id}) for the next run of "
                     "this workflow to adopt: run it again with --rerun-incomplete"], text
    assert "Traceback" not in text and "cancelled Batch task" not in text, text
    assert enum_text(client.get_job(left.id).state) == "active" and len(_tasks_in(client, left.id, "running")) == 2
    run = {m.name: m.value for m in left.metadata}[RUN_KEY]
    # Marked as left, so a run on another machine (another process space) need not wait for a stale heartbeat.
    meta = {m.name: m.value for m in client.get_job(left.id).metadata}
    elsewhere = RunIdentity("w", "r", "host-b", "1:1", "0123456789abcdef", 600.0)
    assert why_dead(meta, elsewhere, 1800.0, datetime.now(timezone.utc)).endswith("leaving its tasks for adoption")
    blobs = svc.blob_service_client()
    assert blobs.get_container_client(run_container_name("hangup", run)).exists()

    second = _start(svc, workdir, "hangup", "--rerun-incomplete")
    try:
        def taken_over():
            meta = {m.name: m.value for m in client.get_job(left.id).metadata}
            return meta.get(ADOPTED_FROM_KEY) == run and meta[RUN_KEY] != run

        wait_for(taken_over, WAIT, "the second run to take over the first run's job", interval=0.5)
        second.send_signal(signal.SIGHUP)
        text, _ = second.communicate(timeout=60)
    finally:
        _stop(second)
    assert second.returncode != 0, text
    assert "azbatch: adopted 2 running and 0 finished task(s) of the run started " in text, text
    # Their processes end and both runs' jobs are gone (the cancel's one line per task may be missing: a status
    # round in progress holds Snakemake's list of active jobs, a race of the executor interface's cancel).
    assert "Traceback" not in text, text
    wait_for(lambda: not processes_with(LONG), 60, "the adopted task processes to end", interval=0.5)
    assert _jobs(client, label) == [], [j.id for j in _jobs(client, label)]  # ended and deleted, both runs'
    assert not blobs.get_container_client(run_container_name("hangup", run)).exists()
    assert not (workdir / "out" / "0.txt").exists()


QUEUE_SNAKEFILE = """
    rule all:
        input: "out/first.txt", "out/second.txt"

    rule first:  # runs first on the single slot (priority): past the point where the second's links are at risk
        output: "out/first.txt"
        priority: 10
        shell: "sleep 55 && echo first > {output}"

    rule second:  # waits; with the dead run's links it would still be uploading after they expired
        output: "out/second.txt"
        shell: "sleep 30 && echo second > {output}"
"""


def test_an_adopted_waiting_task_whose_links_near_their_end_becomes_a_task_of_the_rerun(svc, tmp_path):
    """72-second links: the dead run's waiting task would start at 55 s and upload at 85 s, past its links. The
    rerun follows it like its own waiting tasks and, once less than half their lifetime is left, deletes it and
    submits its job as a task of its own with fresh links (its own Batch job, its own container). Its progress
    lines count the dead job's tasks it follows."""
    label = "adopt-queue"
    workdir = write_files(tmp_path / label, {"Snakefile": QUEUE_SNAKEFILE})
    client = svc.batch_client()
    links = {"SNAKEMAKE_AZBATCH_POOL_ID": "queue", "SNAKEMAKE_AZBATCH_SAS_HOURS": "0.02",
             "SNAKEMAKE_AZBATCH_STATUS_INTERVAL_MAX": "2"}
    first = _start(svc, workdir, "queue", **links)
    try:
        dead = _running_job(client, label, 1)
        wait_for(lambda: len(_tasks_in(client, dead.id, "active")) == 1, WAIT, "the second task to wait",
                 interval=0.5)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        _stop(first)
    assert [t.id.split("-")[0] for t in _tasks_in(client, dead.id, "running")] == ["first"]
    unlock = run_snakemake(svc, workdir, "--unlock", container="queue")
    assert unlock.returncode == 0, output_of(unlock)
    rerun = run_snakemake(svc, workdir, "--rerun-incomplete", container="queue", SNAKEMAKE_AZBATCH_KEEP_JOB="true",
                          SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL="2", **links)
    text = output_of(rerun)
    assert rerun.returncode == 0, text
    # Progress counts the tasks of the dead job the rerun follows with the pool's (before the replacement it has
    # no job of its own there; after, its job holds the waiting task and the dead one the running task).
    progress = [line for line in text.splitlines() if line.startswith("azbatch: progress: pool queue: tasks ")]
    assert any(line.startswith("azbatch: progress: pool queue: tasks 1 active, 1 running, ") for line in progress), \
        progress
    assert "azbatch: adopted 1 running, 1 waiting and 0 finished task(s) of the run started " in text, text
    assert "azbatch: 1 waiting task(s) replaced with fresh links" in text, text
    assert "storage refused" not in text, text
    assert (workdir / "out" / "first.txt").read_text() == "first\n"
    assert (workdir / "out" / "second.txt").read_text() == "second\n"
    # The dead job kept the task that ran; the waiting one was deleted and submitted anew in the rerun's job.
    assert [t.id.split("-")[0] for t in client.list_tasks(dead.id)] == ["first"]
    new_jobs = [j for j in _jobs(client, label) if j.id != dead.id]
    anew = [t for j in new_jobs for t in client.list_tasks(j.id)]
    assert [t.id.split("-")[0] for t in anew] == ["second"] and enum_text(anew[0].execution_info.result) == "success"
    rerun_run = {m.name: m.value for m in new_jobs[0].metadata}[RUN_KEY]
    output_link = anew[0].output_files[0].destination.container.container_url
    assert urlsplit(output_link).path.rstrip("/").endswith(run_container_name("queue", rerun_run))
    assert timedelta(seconds=60) <= sas_expiry(output_link) - anew[0].creation_time <= timedelta(seconds=80)
    run = {m.name: m.value for m in dead.metadata}[RUN_KEY]
    for job in _jobs(client, label):
        client.begin_delete_job(job.id, polling_interval=1).result()
    blobs = svc.blob_service_client()
    for token in (run, rerun_run):
        if blobs.get_container_client(run_container_name("queue", token)).exists():
            blobs.delete_container(run_container_name("queue", token))
