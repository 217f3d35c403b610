"""Crash recovery: a run killed with SIGKILL leaves its Batch job and tasks active; the next run of the same
workflow (after Snakemake's own `--unlock`) ends them, says so, and produces the right outputs."""

from __future__ import annotations

import signal
import subprocess
from types import SimpleNamespace

import pytest
from executor_runs import output_of, run_snakemake, snakemake_command, snakemake_env, write_files
from test_executor_cancel import processes_with
from waiting import wait_for

from snakemake_executor_plugin_azbatch import recovery
from snakemake_executor_plugin_azbatch.azure_sdk import enum_text

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
    assert meta[recovery.WORKFLOW_KEY] == recovery.workflow_key(str(workdir))

    unlock = run_snakemake(local_service, workdir, "--unlock", container="crash")
    assert unlock.returncode == 0, output_of(unlock)
    again = run_snakemake(
        local_service, workdir, "--config", "delay=0", container="crash", SNAKEMAKE_AZBATCH_KEEP_JOB="true"
    )
    text = output_of(again)
    assert again.returncode == 0, text
    assert f"azbatch: Batch job {first.id} of an earlier run" in text, text
    assert sum(f"Batch job {first.id} of an earlier run" in line for line in text.splitlines()) == 1, text

    assert enum_text(client.get_job(first.id).state) == "completed", text  # terminated
    assert all(enum_text(t.state) == "completed" for t in client.list_tasks(first.id))
    active = [j.id for j in _jobs_of(client, label) if enum_text(j.state) == "active"]
    assert active == [], active
    wait_for(lambda: not processes_with(SLEEP_MARKER), 60, "task processes of the first run to end", interval=0.5)
    for i in range(2):
        assert (workdir / "out" / f"{i}.txt").read_text() == f"value-{i}\n"
    for job in _jobs_of(client, label):
        client.begin_delete_job(job.id, polling_interval=1).result()


@pytest.mark.quick
def test_keep_orphans_leaves_earlier_jobs_and_says_so():
    terminated = []

    class Batch:
        def list_active_jobs(self, query, select):
            assert query == recovery.ORPHAN_FILTER and select == ["id", "metadata"]
            meta = lambda key, run: [SimpleNamespace(name=n, value=v) for n, v in  # noqa: E731
                                     ((recovery.WORKFLOW_KEY, key), (recovery.RUN_KEY, run))]
            return [SimpleNamespace(id="sm-a", metadata=meta("k1", "old")),
                    SimpleNamespace(id="sm-b", metadata=meta("k2", "old")),
                    SimpleNamespace(id="sm-c", metadata=meta("k1", "now")),
                    SimpleNamespace(id="sm-d", metadata=None)]

        def terminate_job(self, job_id, reason):
            terminated.append(job_id)

    lines = []
    logger = SimpleNamespace(warning=lines.append)
    found = recovery.end_earlier_runs(Batch(), "k1", "now", keep=True, delete=False, logger=logger)
    assert [o.id for o in found] == ["sm-a"] and terminated == []
    assert len(lines) == 1 and "sm-a" in lines[0] and "kept" in lines[0]
    lines.clear()
    recovery.end_earlier_runs(Batch(), "k1", "now", keep=False, delete=False, logger=logger)
    assert terminated == ["sm-a"] and len(lines) == 1 and "terminating" in lines[0]


@pytest.mark.quick
def test_workflow_key_depends_on_host_and_directory(tmp_path):
    a = recovery.workflow_key(str(tmp_path), "host1")
    assert a == recovery.workflow_key(str(tmp_path) + "/", "host1")
    assert a != recovery.workflow_key(str(tmp_path), "host2")
    assert a != recovery.workflow_key(str(tmp_path / "x"), "host1")
