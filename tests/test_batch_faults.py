"""Batch's real failure modes, on the local service: the active-job quota is waited out (with a message) and the
run carries on; an unreachable endpoint is reported in one line naming it, without a long retry back-off."""

from __future__ import annotations

import socket
import subprocess

import pytest
from support.executor_runs import output_of, run_snakemake, snakemake_command, snakemake_env, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text

pytestmark = pytest.mark.no_report  # no test here reads a run report

SNAKEFILE = 'rule one:\n    output: "one.txt"\n    shell: "echo done > {output}"\n'


def _rejected_creates(service) -> int:
    op = service.metrics().get("operations", {}).get("Jobs_CreateJob", {})
    statuses = op.get("statuses", {})
    return int(statuses.get(409, statuses.get("409", 0)))


def test_active_job_quota_is_waited_out_then_the_run_goes_on(make_service, tmp_path):
    service = make_service(active_job_quota=1)
    client = service.batch_client()
    client.create_job({"id": "blocker", "poolInfo": {"poolId": service.pool_id}})
    workdir = write_files(tmp_path / "quota", {"Snakefile": SNAKEFILE})
    proc = subprocess.Popen(
        snakemake_command(), cwd=workdir, env=snakemake_env(service, "quota"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(lambda: _rejected_creates(service) >= 2 or proc.poll() is not None, 120,
                 lambda: f"the run's job creation to be refused twice: {service.metrics().get('operations')}", interval=0.5)
        if proc.poll() is not None:  # still waiting, not failed
            raise AssertionError(proc.stdout.read())
        client.begin_terminate_job("blocker", {"terminateReason": "test"}, polling_interval=1).result()
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert sum("ActiveJobAndScheduleQuotaReached" in line for line in output.splitlines()) == 1, output
    assert (workdir / "one.txt").read_text() == "done\n"
    assert [j.id for j in client.list_jobs() if enum_text(j.state) == "active"] == []


def _free_loopback_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fails_with_one_line_naming(service, tmp_path, label: str, name: str, **env: str) -> None:
    workdir = write_files(tmp_path / label, {"Snakefile": SNAKEFILE})
    # The subprocess timeout is a guard, not a measurement: with the SDKs' default back-off this took ~90 s.
    result = run_snakemake(service, workdir, container="unreachable", timeout=60, **env)
    text = output_of(result)
    assert result.returncode != 0
    lines = [line for line in text.splitlines() if "not reachable" in line]
    assert len(lines) == 1 and name in lines[0], text
    assert "Traceback" not in text


def test_unreachable_batch_endpoint_is_one_line_naming_it(local_service, tmp_path):
    url = f"http://127.0.0.1:{_free_loopback_port()}"
    _fails_with_one_line_naming(local_service, tmp_path, "unreachable", url, SNAKEMAKE_AZBATCH_ACCOUNT_URL=url)


def test_unreachable_storage_endpoint_is_one_line_naming_it(local_service, tmp_path):
    url = f"http://127.0.0.1:{_free_loopback_port()}/devstoreaccount1"
    conn = local_service.env["SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING"]
    conn = ";".join(p if not p.startswith("BlobEndpoint=") else f"BlobEndpoint={url}" for p in conn.split(";"))
    _fails_with_one_line_naming(local_service, tmp_path, "unreachable-storage", url,
                                SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING=conn)
