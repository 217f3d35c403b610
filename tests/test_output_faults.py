"""Outputs that do not come back right: a node that could not upload a task's output files (Batch fails the task
with a FileUpload* failureInfo and writes fileuploaderr.txt) and a node whose outputs differ from what the submitting
side expects both fail the Snakemake job with one line and a non-zero exit, never exit 0."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from support.executor_runs import output_of, snakemake_command, snakemake_env, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.staging.log_tails import SAVED_LOG_BYTES, file_tail
from snakemake_executor_plugin_azbatch.run.node_health import upload_errors

pytestmark = pytest.mark.no_report  # no test here reads a run report


def running_task(client, label: str):
    for job in client.list_jobs():
        if job.id.startswith(f"sm-{label}-"):
            for task in client.list_tasks(job.id):
                if task.state == "running":
                    return job.id, task
    return None


def test_an_output_the_node_could_not_upload_fails_the_job_with_its_fileuploaderr(local_service, tmp_path):
    workdir = write_files(tmp_path / "upload-fails", {"Snakefile": """
        rule make:
            output: "out.txt"
            shell: "sleep 4; echo result > {output}"
    """})
    run = subprocess.Popen(snakemake_command(), cwd=workdir, env=snakemake_env(local_service, "upload-fails"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = local_service.batch_client()
        batch_job, task = wait_for(lambda: running_task(client, "upload-fails"), 60, "a running task")
        (spec,) = [o for o in task.output_files if o.file_pattern == "out.txt"]
        # Another writer holds the destination blob (an infinite lease): the node's upload is refused. The blob is
        # in the run's own container (the output link's).
        run_container = urlsplit(spec.destination.container.container_url).path.rsplit("/", 1)[1]
        assert run_container.startswith("upload-fails-run-")
        blob = local_service.blob_service_client().get_container_client(run_container).get_blob_client(
            spec.destination.container.path)
        blob.upload_blob(b"someone else's", overwrite=True)
        blob.acquire_lease(lease_duration=-1)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    result = subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)
    assert run.returncode != 0, output_of(result)
    assert "Traceback" not in stderr
    assert f"azbatch: Batch task {task.id} failed (exit code 0). usererror FileUploadMiscError: " in stderr
    saved = workdir / ".snakemake" / "azbatch" / "logs" / task.id / "fileuploaderr.txt"
    assert f"the node could not upload the task's output files (its log: {saved.relative_to(workdir)})" in stderr
    node_log = saved.read_text()
    assert "out.txt" in node_log and "HTTP 412 LeaseIdMissing" in node_log and "sig=" not in node_log
    assert f"The node's fileuploaderr.txt:\n{node_log.strip()}\n" in stderr, output_of(result)
    assert not (workdir / "out.txt").exists() or (workdir / "out.txt").read_text() != "result\n"
    assert all(j.state != "active" for j in client.list_jobs() if j.id == batch_job)
    # The run's container goes at the end (a blob lease does not hold it), the other writer's blob with it.
    assert not local_service.blob_service_client().get_container_client(run_container).exists()


def test_outputs_the_node_made_differently_fail_the_job_not_exit_0(local_service, tmp_path):
    # The node's Snakefile (the same file, evaluated on the node) makes a directory where the submitting side
    # expects a file: the node's Snakemake is content, Batch uploads nothing for the exact-path pattern, and only
    # the plugin's output check after download can notice.
    workdir = write_files(tmp_path / "made-differently", {"Snakefile": """
        import os

        if "AZ_BATCH_NODE_ID" in os.environ:
            rule make:
                output: directory("result")
                shell: "mkdir -p {output} && echo x > {output}/inner.txt"
        else:
            rule make:
                output: "result"
                shell: "echo x > {output}"
    """})
    result = subprocess.run(snakemake_command(), cwd=workdir, env=snakemake_env(local_service, "made-differently"),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode != 0, output_of(result)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "message: azbatch:" in line]
    assert len(lines) == 1 and lines[0].strip().startswith("message: azbatch: Batch task make-"), output_of(result)
    assert ("succeeded but its outputs are wrong. output file 'result' did not come back from the node; rerun with "
            "--azbatch-keep-job to inspect the task's files.") in lines[0]
    assert not (workdir / "result").exists()


class TaskFiles:
    def __init__(self, text: str):
        self.data = text.encode()

    def get_task_file_properties(self, job, task, path):
        assert path == "fileuploaderr.txt"
        return SimpleNamespace(content_length=str(len(self.data)))

    def download_task_file(self, job, task, path, ocp_range=None):
        assert path == "fileuploaderr.txt" and ocp_range is None  # small: read in one request, no range
        yield self.data


class Quiet:
    def debug(self, text):
        pass


@pytest.mark.quick
def test_the_nodes_upload_log_is_saved_and_shown_without_sas_signatures(tmp_path):
    secret = "https://acct.blob.core.windows.net/c/runs/x/out.txt?sv=2024-01-01&sp=cw&sig=S3cr3tSignature%3D"
    text, saved = upload_errors(TaskFiles(f"upload of out.txt to {secret} failed (403)\n"), "job", "t", tmp_path, Quiet())
    assert text == "upload of out.txt to https://acct.blob.core.windows.net/c/runs/x/out.txt?sv=2024-01-01&sp=cw" \
                   "&sig=REDACTED failed (403)"
    assert saved == tmp_path / "fileuploaderr.txt" and "S3cr3t" not in saved.read_text()


HUGE_STDERR = 200 * 1000 * 1000


def peak_rss_kib(workdir, service, container: str) -> tuple[int, subprocess.CompletedProcess]:
    """Snakemake (and the plugin in it) run under a small Python parent that reports its children's peak RSS;
    the parent itself starts nothing else, so that peak is Snakemake's."""
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", measure, *snakemake_command()], cwd=workdir,
                            env=snakemake_env(service, container), capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.startswith("peak-rss-kib ")]
    assert lines, output_of(result)
    return int(lines[-1].split()[1]), result


def test_a_failed_tasks_200_mb_of_stderr_keep_the_plugin_within_50_mb_and_are_saved_cut(local_service, tmp_path):
    rss = {}
    for label, size in (("small", 1000), ("huge", HUGE_STDERR)):
        workdir = write_files(tmp_path / f"stderr-{label}", {"Snakefile": f"""
            rule fail:
                output: "out.txt"
                shell: "yes 'a line of a noisy tool, written again and again to stderr' | head -c {size} >&2; "
                       "echo the-last-words >&2; exit 1"
        """})
        rss[label], result = peak_rss_kib(workdir, local_service, f"stderr-{label}")
        assert result.returncode != 0, output_of(result)
        assert "Traceback" not in result.stderr
        assert "Last lines of stderr:" in result.stderr and "the-last-words" in result.stderr, output_of(result)
    # 200 MB of stderr: the plugin reads only the end of the log (never the whole file).
    assert rss["huge"] - rss["small"] < 50 * 1024, rss
    (saved,) = (tmp_path / "stderr-huge/.snakemake/azbatch/logs").glob("fail-*/stderr.txt")
    assert saved.stat().st_size < SAVED_LOG_BYTES + 1024  # the last 8 MiB and a first line saying so
    with open(saved, "rb") as f:
        note = f.readline().decode()
    assert note.startswith(f"[azbatch: only the last {SAVED_LOG_BYTES:,} of ") and " bytes are kept here; the whole " \
        "log is blob " in note and "/batch/stderr.txt in container stderr-huge-run-" in note \
        and note.rstrip().endswith("(kept only with --azbatch-keep-job)]"), note
    assert int(note.split(" of ")[1].split(" bytes")[0].replace(",", "")) > HUGE_STDERR  # the whole went up
    assert "the-last-words" in file_tail(saved)
