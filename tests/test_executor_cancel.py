"""Cancellation: Ctrl-C (SIGINT) or SIGTERM to a running `snakemake --executor azbatch` terminates the run's Batch
job and with it every running task; nothing keeps running on the nodes."""

from __future__ import annotations

import signal
import subprocess

import pytest
from support.executor_runs import snakemake_command, snakemake_env, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from support.processes import processes_with

pytestmark = pytest.mark.no_report  # no test here reads a run report

SLEEP_MARKER = "617.25"  # a sleep duration no other test uses, to find leftover task processes


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_terminates_every_task_and_the_job(local_service, tmp_path, signum):
    label = f"cancel-{signum.name.lower()}"
    workdir = write_files(
        tmp_path / label,
        {
            "Snakefile": f"""
                rule all:
                    input: expand("slept/{{i}}.txt", i=range(2))

                rule slow:
                    output: "slept/{{i}}.txt"
                    shell: "sleep {SLEEP_MARKER} && touch {{output}}"
            """
        },
    )
    client = local_service.batch_client()
    env = snakemake_env(local_service, "cancel", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    proc = subprocess.Popen(
        snakemake_command(), cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # Both tasks run at once where the pool has two free slots (the default pool does on a machine with 2+ cores).
    pool = client.get_pool(local_service.pool_id)
    expected = min(2, int(pool.current_dedicated_nodes or 0) * int(pool.task_slots_per_node or 1))
    jobs = []
    try:
        def running_tasks():
            nonlocal jobs
            jobs = [j for j in client.list_jobs() if j.id.startswith(f"sm-{label}-")]
            running = jobs and [t for t in client.list_tasks(jobs[0].id) if enum_text(t.state) == "running"]
            return running if running and len(running) == expected else None

        wait_for(running_tasks, 120, f"{expected} running tasks", interval=0.5)
        # Each task shows up at least once (the shell that runs `sleep ... && touch` carries the marker too).
        wait_for(lambda: len(processes_with(SLEEP_MARKER)) >= expected, 120, f"{expected} task processes on the node", interval=0.5)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0, output
        # One line per cancelled task; no error block, and no banner of the node's Snakemake, for any of them.
        cancelled = [line for line in output.splitlines() if line.startswith("azbatch: cancelled Batch task slow-")]
        assert len(cancelled) == expected and all(line.endswith(" (rule slow)") for line in cancelled), output
        assert "Error in rule" not in output and output.count("Snakemake version:") == 1, output

        job = client.get_job(jobs[0].id)
        assert enum_text(job.state) == "completed", output  # terminated
        states = {t.id: enum_text(t.state) for t in client.list_tasks(job.id)}
        assert len(states) == 2 and all(state == "completed" for state in states.values()), states
        wait_for(lambda: not processes_with(SLEEP_MARKER), 120, "task processes to end", interval=0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for job in jobs:
            client.begin_delete_job(job.id, polling_interval=1).result()


def test_batch_job_deleted_outside_the_run_fails_its_jobs_instead_of_waiting(local_service, tmp_path):
    label = "deleted-outside"
    workdir = write_files(
        tmp_path / label,
        {"Snakefile": f'rule slow:\n    output: "x.txt"\n    shell: "sleep {SLEEP_MARKER} && touch {{output}}"\n'},
    )
    client = local_service.batch_client()
    proc = subprocess.Popen(
        snakemake_command(), cwd=workdir, env=snakemake_env(local_service, "cancel"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        def running_job():
            jobs = [j for j in client.list_jobs() if j.id.startswith(f"sm-{label}-")]
            return jobs and any(enum_text(t.state) == "running" for t in client.list_tasks(jobs[0].id)) and jobs[0]

        job = wait_for(running_job, 120, "a running task", interval=0.5)
        client.begin_delete_job(job.id, polling_interval=1).result()
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert f"azbatch: Batch job {job.id} was deleted outside this run" in output, output
        wait_for(lambda: not processes_with(SLEEP_MARKER), 120, "task processes to end", interval=0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
