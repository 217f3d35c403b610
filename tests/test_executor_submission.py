"""Submission and status on the local service: bulk task submission, one list request per Batch job per status
round, failures reported with exit code / Batch failure / stderr tail and logs, attempts with attempt-dependent
resources, environment values only in environmentSettings."""

from __future__ import annotations

import re

from support.executor_runs import delta, kept_jobs, output_of, run_snakemake, write_files

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from snakemake_executor_plugin_azbatch.azure_api.batch_client import BatchService
from snakemake_executor_plugin_azbatch.config import resolve
from snakemake_executor_plugin_azbatch.tasks import task_spec
from snakemake_executor_plugin_azbatch.run.task_results import command_exit_status

FANOUT = 8


def delete_jobs(client, jobs) -> None:
    for job in jobs:
        client.begin_delete_job(job.id, polling_interval=1).result()


def test_ready_jobs_are_submitted_in_one_request_and_each_status_round_is_one_list(local_service, tmp_path):
    workdir = write_files(
        tmp_path / "fanout",
        {
            "Snakefile": f"""
                rule all:
                    input: expand("out/{{i}}.txt", i=range({FANOUT}))

                rule one:
                    output: "out/{{i}}.txt"
                    shell: "echo {{wildcards.i}} > {{output}}"
            """
        },
    )
    before = local_service.metrics()
    result = run_snakemake(local_service, workdir, "--verbose", container="submission")
    assert result.returncode == 0, output_of(result)
    after = local_service.metrics()
    assert [(workdir / f"out/{i}.txt").read_text() for i in range(FANOUT)] == [f"{i}\n" for i in range(FANOUT)]
    # All ready jobs arrive in one run_jobs call → one addtaskcollection request (≤ ⌈tasks/100⌉).
    assert delta(before, after, "operations", "Tasks_CreateTaskCollection") == 1
    # No per-task polling: each status round lists the completed tasks of each Batch job once.
    rounds = [int(n) for n in re.findall(r"one task list for each of (\d+) Batch job", result.stdout + result.stderr)]
    assert rounds, output_of(result)
    assert delta(before, after, "operations", "Tasks_ListTasks") == sum(rounds)
    assert delta(before, after, "operations", "Tasks_GetTask") == 0
    assert "job rate limit" not in output_of(result)  # 8 ready jobs, Snakemake's default 100/1s: no hint
    assert "azbatch: glibc malloc arenas limited to 2" in output_of(result)  # malloc_arenas.py, in the executor


def test_a_job_rate_limit_that_holds_jobs_back_is_named_once(local_service, tmp_path):
    workdir = write_files(
        tmp_path / "limited",
        {
            "Snakefile": """
                rule all:
                    input: expand("out/{i}.txt", i=range(5))

                rule one:
                    output: "out/{i}.txt"
                    shell: "echo {wildcards.i} > {output}"
            """
        },
    )
    before = local_service.metrics()
    result = run_snakemake(local_service, workdir, "--max-jobs-per-timespan", "2/1s", container="limited")
    after = local_service.metrics()
    assert result.returncode == 0, output_of(result)
    assert sorted(p.name for p in (workdir / "out").iterdir()) == [f"{i}.txt" for i in range(5)]
    hints = [line for line in output_of(result).splitlines() if "job rate limit held jobs back" in line]
    assert hints == [
        "azbatch: Snakemake's job rate limit held jobs back (--max-jobs-per-timespan 2/1s handed over 2 while 3 "
        "more were ready). Batch takes 100 tasks per request and the plugin sends requests in parallel: for large "
        "fan-outs set the limit to about the number of jobs ready at once, e.g. --max-jobs-per-timespan 20000/1s"
    ], output_of(result)
    assert delta(before, after, "operations", "Tasks_CreateTaskCollection") >= 3  # 2 + 2 + 1: the limit held


def test_the_rate_limit_hint_needs_the_limit_reached_with_jobs_left_waiting():
    from types import SimpleNamespace

    from snakemake_executor_plugin_azbatch.run.submission import rate_limit_hint

    limit = SimpleNamespace(max_jobs=100, timespan=1.0)  # Snakemake's MaxJobsPerTimespan, its two fields
    assert rate_limit_hint(limit, 100, still_ready=0) is None  # exactly 100 were ready: nothing held back
    assert rate_limit_hint(limit, 60, still_ready=500) is None  # the limit was not what stopped the round
    assert "handed over 100 while 500 more were ready" in rate_limit_hint(limit, 100, still_ready=500)
    assert "(--max-jobs-per-timespan 100/1s handed over 100)" in rate_limit_hint(limit, 100)  # readiness unknown
    assert rate_limit_hint(None, 100) is None  # another Snakemake without the setting


def test_bulk_submission_sends_at_most_100_tasks_per_request(local_service):
    service = BatchService(resolve(None, local_service.env), credential_factory=lambda: None)
    job_id = task_spec.job_id("bulk", local_service.pool_id, "test")
    service.create_job(task_spec.job_body(job_id, local_service.pool_id, "bulk test", workflow="none"))
    try:
        bodies = [
            task_spec.task_body(task_spec.TaskRequest(id=f"t{i}", display_name=f"t{i}", script="true"))
            for i in range(150)
        ]
        bodies.append({**bodies[0], "id": "bad id with spaces"})
        before = local_service.metrics()
        results = service.submit_tasks(job_id, bodies)
        after = local_service.metrics()
        assert delta(before, after, "operations", "Tasks_CreateTaskCollection") == 2  # ⌈151 / 100⌉
        assert all(results[f"t{i}"] is None for i in range(150))
        # A rejected task comes back as that task's error, not as a silent success.
        assert results["bad id with spaces"] and "bad id with spaces" in results["bad id with spaces"]
    finally:
        service.terminate_job(job_id)
        service.delete_job(job_id)


def test_failed_job_reports_exit_code_stderr_tail_and_brings_logs_back(local_service, tmp_path):
    workdir = write_files(
        tmp_path / "failing",
        {
            "Snakefile": """
                rule fail:
                    output: "never.txt"
                    log: "logs/fail.log"
                    shell: "echo 'partial progress' > {log}; echo BOOM-marker-7 >&2; exit 3"
            """
        },
    )
    result = run_snakemake(local_service, workdir, container="submission")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    # The rule's own exit code, not Snakemake's on the node (1), which the message names too.
    assert re.search(r"Batch task fail-\d+-a1-\w+ failed \(exit code 3 of the rule's command; Snakemake on the node "
                     r"exited 1\)", text), output_of(result)
    assert "BOOM-marker-7" in text  # the tail of stderr is part of the error
    assert (workdir / "logs/fail.log").read_text() == "partial progress\n"  # logs come back on failure
    stderr_files = list((workdir / ".snakemake/azbatch/logs").glob("fail-*/stderr.txt"))
    assert len(stderr_files) == 1 and "BOOM-marker-7" in stderr_files[0].read_text()
    assert not (workdir / "never.txt").exists()


def test_retries_run_new_attempts_with_attempt_dependent_resources(local_service, tmp_path):
    workdir = write_files(
        tmp_path / "retrying",
        {
            "Snakefile": """
                rule flaky:
                    output: "done.txt"
                    resources: mem_mb=lambda wildcards, attempt: 100 * attempt
                    shell: "test {resources.mem_mb} -ge 200 && echo {resources.mem_mb} > {output}"
            """
        },
    )
    client = local_service.batch_client()
    result = run_snakemake(local_service, workdir, "--retries", "1", container="submission", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    jobs = kept_jobs(client, "retrying")
    try:
        assert result.returncode == 0, output_of(result)
        assert (workdir / "done.txt").read_text() == "200\n"
        assert len(jobs) == 1 and str(jobs[0].state.value if hasattr(jobs[0].state, "value") else jobs[0].state) == "completed"
        tasks = {t.id: t for t in client.list_tasks(jobs[0].id)}
        attempts = sorted(re.search(r"-a(\d)-", tid).group(1) for tid in tasks)
        assert attempts == ["1", "2"]
        results = {re.search(r"-a(\d)-", tid).group(1): t.execution_info.exit_code for tid, t in tasks.items()}
        assert results["1"] != 0 and results["2"] == 0
        # Batch never retries on its own: Snakemake's --retries drives attempts.
        assert all(t.constraints.max_task_retry_count == 0 for t in tasks.values())
    finally:
        delete_jobs(client, jobs)


def test_environment_values_are_job_environment_settings_never_in_command_lines(local_service, tmp_path):
    secret = "s3cr3t-Value-4711"
    workdir = write_files(
        tmp_path / "envvars",
        {
            "Snakefile": """
                envvars: "AZB_TEST_SECRET"

                rule show:
                    output: "seen.txt"
                    shell: "echo $AZB_TEST_SECRET > {output}"
            """
        },
    )
    client = local_service.batch_client()
    result = run_snakemake(
        local_service, workdir, container="submission", AZB_TEST_SECRET=secret, SNAKEMAKE_AZBATCH_KEEP_JOB="1"
    )
    jobs = kept_jobs(client, "envvars")
    try:
        assert result.returncode == 0, output_of(result)
        assert (workdir / "seen.txt").read_text() == f"{secret}\n"
        tasks = list(client.list_tasks(jobs[0].id))
        assert tasks
        job = client.get_job(jobs[0].id)
        command_lines = [t.command_line for t in tasks] + [job.job_preparation_task.command_line]
        assert all(secret not in line for line in command_lines)
        # The same for every task: once, in the job's common environment (not in each task definition).
        common = {e.name: e.value for e in job.common_environment_settings}
        assert common["AZB_TEST_SECRET"] == secret and secret not in common["AZBATCH_TASK_PREFIX"]
        for task in tasks:
            assert not task.environment_settings
            assert task.command_line.startswith("/bin/bash -c ")
    finally:
        delete_jobs(client, jobs)


def test_managed_identity_replaces_sas_urls(local_service, tmp_path):
    identity = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pool-id"
    workdir = write_files(
        tmp_path / "identity",
        {
            "Snakefile": """
                rule copy:
                    input: "in.txt"
                    output: "out.txt"
                    shell: "cp {input} {output}"
            """,
            "in.txt": "via identity\n",
        },
    )
    client = local_service.batch_client()
    result = run_snakemake(
        local_service, workdir, container="identity", SNAKEMAKE_AZBATCH_MANAGED_IDENTITY=identity,
        SNAKEMAKE_AZBATCH_KEEP_JOB="true",
    )
    jobs = kept_jobs(client, "identity")
    try:
        assert result.returncode == 0, output_of(result)
        assert (workdir / "out.txt").read_text() == "via identity\n"
        (task,) = client.list_tasks(jobs[0].id)
        assert task.resource_files and all("?" not in r.http_url for r in task.resource_files)
        assert all(r.identity_reference.resource_id == identity for r in task.resource_files)
        for out in task.output_files:
            container = out.destination.container
            assert "?" not in container.container_url and container.identity_reference.resource_id == identity
    finally:
        delete_jobs(client, jobs)


def test_pip_bootstrap_prepares_each_node_once(local_service, tmp_path):
    workdir = write_files(
        tmp_path / "bootstrap",
        {"Snakefile": 'rule plain:\n    output: "plain.txt"\n    shell: "echo plain > {output}"\n'},
    )
    client = local_service.batch_client()
    result = run_snakemake(local_service, workdir, container="bootstrap", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    jobs = kept_jobs(client, "bootstrap")
    try:
        assert result.returncode == 0, output_of(result)
        assert (workdir / "plain.txt").read_text() == "plain\n"
        assert [t.container_settings for t in client.list_tasks(jobs[0].id)] == [None]
        # Default bootstrap: a job preparation task provides Snakemake once per node (here it finds the
        # host's matching python3 and reuses it).
        prep = client.get_job(jobs[0].id).job_preparation_task
        assert prep is not None and prep.wait_for_success
        statuses = list(client.list_job_preparation_and_release_task_status(jobs[0].id))
        assert statuses and all(
            enum_text(s.job_preparation_task_execution_info.result) == "success" for s in statuses
        )
    finally:
        delete_jobs(client, jobs)


def test_a_rule_image_on_a_pool_without_containers_is_refused_before_anything_is_created(local_service, tmp_path):
    """Batch forbids containerSettings on a pool created without containerConfiguration (and requires them on one
    created with it), so mixing container-image rules and plain rules on one pool cannot work: one line, up front."""
    workdir = write_files(
        tmp_path / "images",
        {
            "Snakefile": """
                rule all:
                    input: "plain.txt", "boxed.txt"

                rule plain:
                    output: "plain.txt"
                    shell: "echo plain > {output}"

                rule boxed:
                    output: "boxed.txt"
                    resources: azbatch_container_image="python:3.11-slim"
                    shell: "echo boxed > {output}"
            """
        },
    )
    before = local_service.metrics()
    result = run_snakemake(local_service, workdir, container="images")
    after = local_service.metrics()
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("Error: azbatch:")]
    assert lines == [
        "Error: azbatch: rule boxed runs in container image 'python:3.11-slim' but pool "
        f"'{local_service.pool_id}' has no container support (virtualMachineConfiguration.containerConfiguration "
        "is not set); give the rule a container-enabled pool (resource azbatch_pool) or no image"
    ], output_of(result)
    assert "Traceback" not in output
    assert delta(before, after, "operations", "Jobs_CreateJob") == 0
    assert kept_jobs(local_service.batch_client(), "images") == []


def test_collections_go_out_in_parallel_bounded_by_the_setting(local_service):
    """450 ready tasks → 5 collections; a barrier inside submit_tasks only opens when two requests are in flight
    at the same time, so sequential submission fails this test (BrokenBarrierError), and in-flight never exceeds
    the bound."""
    import threading

    from snakemake_executor_plugin_azbatch.run.submission import submit_in_parallel

    class Counting(BatchService):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.lock, self.in_flight, self.most, self.calls = threading.Lock(), 0, 0, 0
            self.barrier = threading.Barrier(2, timeout=20)

        def submit_tasks(self, job_id, bodies):
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                self.calls += 1
                first_two = self.calls <= 2
            try:
                if first_two:
                    self.barrier.wait()
                return super().submit_tasks(job_id, bodies)
            finally:
                with self.lock:
                    self.in_flight -= 1

    service = Counting(resolve(None, local_service.env), credential_factory=lambda: None)
    job_id = task_spec.job_id("parallel", local_service.pool_id, "test")
    service.create_job(task_spec.job_body(job_id, local_service.pool_id, "parallel test", workflow="none"))
    try:
        bodies = [
            task_spec.task_body(task_spec.TaskRequest(id=f"p{i}", display_name=f"p{i}", script="true"))
            for i in range(450)
        ]
        before = local_service.metrics()
        results = submit_in_parallel(service, {job_id: bodies}, workers=3)
        after = local_service.metrics()
        assert all(results[f"p{i}"] is None for i in range(450))
        assert delta(before, after, "operations", "Tasks_CreateTaskCollection") == 5  # ⌈450 / 100⌉
        assert 2 <= service.most <= 3
    finally:
        service.terminate_job(job_id)
        service.delete_job(job_id)


def test_task_definitions_are_built_as_requests_go_out_not_all_at_once(local_service):
    """2,000 tasks with 2 workers: task bodies are drawn from the generator only while fewer than 2 × workers
    requests are unanswered, so at every answer at most (2 × 2 + 1) × 100 bodies exist that were not yet answered.
    Building all bodies first (as before streaming) would show 2,000 unanswered at the first answer."""
    from snakemake_executor_plugin_azbatch.azure_api.batch_client import task_collections
    from snakemake_executor_plugin_azbatch.run.submission import submit_streaming

    service = BatchService(resolve(None, local_service.env), credential_factory=lambda: None)
    job_id = task_spec.job_id("streaming", local_service.pool_id, "test")
    service.create_job(task_spec.job_body(job_id, local_service.pool_id, "streaming test", workflow="none"))
    built = 0

    def bodies():
        nonlocal built
        for i in range(2000):
            built += 1
            body = task_spec.task_body(task_spec.TaskRequest(id=f"s{i}", display_name=f"s{i}", script="true"))
            yield job_id, body, f"s{i}"

    try:
        answered, most_unanswered, order = 0, 0, []
        for batch_job, payloads, results in submit_streaming(service, task_collections(bodies()), workers=2):
            assert batch_job == job_id
            assert all(results[task_id] is None for task_id in payloads)
            answered += len(payloads)
            most_unanswered = max(most_unanswered, built - answered)
            order += payloads
        assert order == [f"s{i}" for i in range(2000)]  # answers come back in request order, every task once
        assert most_unanswered <= (2 * 2 + 1) * 100
    finally:
        service.terminate_job(job_id)
        service.delete_job(job_id)


def test_command_exit_status_is_the_last_failed_command_in_the_saved_stderr(tmp_path):
    stderr = tmp_path / "stderr.txt"
    assert command_exit_status(stderr) is None  # no saved log
    stderr.write_text("Command 'true; exit 2' returned non-zero exit status 2.\nnoise\n"
                      "Command 'set -euo pipefail;  a\nb; exit 4' returned non-zero exit status 4.\nShutting down\n")
    assert command_exit_status(stderr) == "exit code 4"
    stderr.write_text("Command 'sleep 9' died with <Signals.SIGKILL: 9>.\n")
    assert command_exit_status(stderr) == "signal SIGKILL"
    stderr.write_text("Traceback (most recent call last):\nValueError: a run: block failed\n")
    assert command_exit_status(stderr) is None  # the task's exit code stands
