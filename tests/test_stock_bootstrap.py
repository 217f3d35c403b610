"""The plugin's bootstrap on stock nodes (`--node-image`: Debian with python3 only, no pip, no venv module, no
Snakemake): `snakemake --executor azbatch` end to end with the real SDKs, Azurite and node sandboxes.

- default bootstrap (pip mode: the node fetches the pinned uv and Snakemake from the package index, nothing large
  staged), example workflow; a second run on the same node reuses the installation;
- nodes that do not trust this network's TLS-inspecting CA: the run ends naming the certificate, and
  --azbatch-node-ca-bundle lets the default bootstrap through (skipped where the network does not inspect TLS);
- offline mode on nodes that reach only the local service: the same from the staged wheelhouse;
- a bootstrap that cannot succeed (a node without python3) ends the run non-zero with the preparation task's
  stderr tail, and leaves no job or task active.

Heavy (marker `stock_nodes`): each module builds a node environment from scratch. The image is the node-image tests'
cached one. Nodes reach PyPI through this machine's network; where that network inspects TLS, the local service
puts this machine's extra CAs (/usr/local/share/ca-certificates) into the nodes' trust store by itself (node_trust),
so the pools here have no start task of their own: the default bootstrap works as it is.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.executor_runs import download_bytes, kept_jobs, output_of, run_snakemake, upload_bytes
from support.node_sandbox import IMAGE_DIR, skip_unless, stock_image
from support.workflow_copies import copy_example, read_tsv

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from snakemake_executor_plugin_azbatch.bootstrap import node_script
from snakemake_executor_plugin_azbatch.local.nodes import isolation, node_trust
from snakemake_executor_plugin_azbatch.local.service_config import PoolSpec
from snakemake_executor_plugin_azbatch.local.pool_file import start_task

pytestmark = pytest.mark.stock_nodes

ADMIN = {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}
NODE_PACKAGES = "matplotlib"  # the example's summarize step plots with it
UV_WHEEL_BYTES = 17_000_000  # about the size of uv's wheel, which nobody stages in pip mode any more


def stock_service(make_service, *, network: str = "host", pools: list[PoolSpec] | None = None, **options):
    stock_image()
    skip_unless(isolation.missing_packages())
    pools = pools or [PoolSpec("stock", 1, 2)]
    return make_service(pools=pools, node_image=IMAGE_DIR, node_network=network, **options)


def prep_outputs(client, job_id: str) -> list[tuple[str, str]]:
    """(result, stdout) of the job's preparation task on each node."""
    outputs = []
    for status in client.list_job_preparation_and_release_task_status(job_id):
        info = status.job_preparation_task_execution_info
        stdout = b"".join(client.download_node_file(status.pool_id, status.node_id,
                                                     f"{info.task_root_directory}/stdout.txt")).decode()
        outputs.append((enum_text(info.result), stdout))
    return outputs


def run_kept(service, workdir: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[tuple[str, str]]]:
    """One run with its Batch job kept for inspection: the result and its preparation tasks' (result, stdout)."""
    client = service.batch_client()
    result = run_snakemake(service, workdir, "--jobs", "6", *args, container="stock", timeout=900,
                           SNAKEMAKE_AZBATCH_KEEP_JOB="true", SNAKEMAKE_AZBATCH_POOL_ID="stock",
                           SNAKEMAKE_AZBATCH_NODE_PACKAGES=NODE_PACKAGES, **env)
    jobs = kept_jobs(client, workdir.name)
    try:
        preps = [p for job in jobs for p in prep_outputs(client, job.id)]
    finally:
        for job in jobs:
            client.begin_delete_job(job.id, polling_interval=1).result()
    return result, preps


def assert_example_results(workdir: Path) -> None:
    summary = read_tsv(workdir / "results/summary/samples.tsv")
    assert sorted(row["sample"] for row in summary) == ["A", "B", "C"]
    assert (workdir / "results/summary/coverage.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len((workdir / "results/random_md5/all.txt").read_text().splitlines()) == 10


def test_default_bootstrap_runs_the_example_on_stock_nodes_and_a_second_run_reuses_it(make_service, tmp_path):
    service = stock_service(make_service)
    before = service.metrics()
    first_dir = copy_example(tmp_path / "first")
    result, preps = run_kept(service, first_dir)
    assert result.returncode == 0, output_of(result)[-6000:]
    assert_example_results(first_dir)
    assert preps and all(r == "success" for r, _ in preps), preps
    assert any("installing snakemake" in out for _, out in preps), preps
    assert any(f"installing uv {node_script.NODE_UV_VERSION}" in out for _, out in preps), preps
    # uv came from the index (sha256 checked), not from this machine: only sources and inputs went up and down.
    assert upload_bytes(service.metrics()) - upload_bytes(before) < UV_WHEEL_BYTES / 10
    assert download_bytes(service.metrics()) - download_bytes(before) < UV_WHEEL_BYTES / 10

    # A second run (another working directory, same node): nothing installed again, nothing uploaded again.
    middle = service.metrics()
    second_dir = copy_example(tmp_path / "second")
    result, preps = run_kept(service, second_dir, "results/trimmed/A.fastq")
    assert result.returncode == 0, output_of(result)[-6000:]
    assert preps and all(r == "success" for r, _ in preps), preps
    assert all("installing" not in out and "already on this node" in out for _, out in preps), preps
    # Only what the task wrote (its output, log and Batch logs) went up.
    assert upload_bytes(service.metrics()) - upload_bytes(middle) < UV_WHEEL_BYTES / 10
    assert download_bytes(service.metrics()) - download_bytes(middle) < UV_WHEEL_BYTES / 10


def test_behind_tls_inspection_the_failure_names_the_certificate_and_a_ca_bundle_is_the_remedy(make_service, tmp_path):
    """Nodes that do not trust this network's TLS-inspecting CA (--no-node-host-cas: as a stock Batch pool): the
    run ends with the preparation's one line naming the untrusted certificate; --azbatch-node-ca-bundle with that
    CA then lets the default bootstrap through, with no start task."""
    cas = node_trust.host_extra_cas()
    if not cas.certificates:
        pytest.skip("this machine's network does not inspect TLS (no extra CA certificates)")
    service = stock_service(make_service, node_host_cas=False)
    workdir = copy_example(tmp_path / "untrusted")
    result = run_snakemake(service, workdir, "results/trimmed/A.fastq", container="stock", timeout=600,
                           SNAKEMAKE_AZBATCH_POOL_ID="stock")
    output = output_of(result)
    assert result.returncode != 0, output[-4000:]
    assert "the job preparation task failed on node" in output and "(exit code 3)" in output, output[-4000:]
    assert "the TLS certificate of files.pythonhosted.org is not trusted (" in output, output[-4000:]
    assert "--azbatch-node-ca-bundle PATH" in output

    bundle = tmp_path / "network-ca.pem"
    bundle.write_text("\n".join(cas.certificates) + "\n")
    workdir = copy_example(tmp_path / "trusted")
    result, preps = run_kept(service, workdir, "results/trimmed/A.fastq", SNAKEMAKE_AZBATCH_NODE_CA_BUNDLE=str(bundle))
    assert result.returncode == 0, output_of(result)[-6000:]
    assert preps and all(r == "success" and "installing snakemake" in out for r, out in preps), preps


def test_offline_bootstrap_runs_the_example_on_nodes_without_internet(make_service, tmp_path):
    service = stock_service(make_service, network="local-only",
                            pools=[PoolSpec("stock", 1, 2)])  # no CA needed: nothing beyond the service
    python = ".".join(stock_image().packages["python3"].split(".")[:2])  # Debian's python3 version, e.g. 3.13.5-1
    workdir = copy_example(tmp_path / "offline")
    # No --azbatch-node-python: the plugin reads the nodes' Python from the image the pool reports (Debian 13).
    result, preps = run_kept(service, workdir, SNAKEMAKE_AZBATCH_BOOTSTRAP="offline")
    assert result.returncode == 0, output_of(result)[-6000:]
    assert f"offline wheelhouse for the nodes' Python {python}" in result.stderr, result.stderr[-3000:]
    assert_example_results(workdir)
    assert preps and all(r == "success" and "installing snakemake" in out for r, out in preps), preps


def test_a_bootstrap_that_cannot_succeed_ends_the_run_with_the_preparation_tasks_stderr(make_service, tmp_path):
    """A node without python3 (its start task removed it): the preparation task fails with one line, Batch keeps
    the task active, the plugin notices, fails the run with the stderr tail, saves the logs and ends its job."""
    remove_python = {"commandLine": "/bin/sh -c 'rm -f /usr/bin/python3*'", "userIdentity": ADMIN}
    pool = PoolSpec("stock", 1, 2, start_task=start_task(remove_python, "t"))
    service = stock_service(make_service, pools=[pool])
    workdir = copy_example(tmp_path / "nopython")
    client = service.batch_client()
    result = run_snakemake(service, workdir, "results/trimmed/A.fastq", container="stock", timeout=300,
                           SNAKEMAKE_AZBATCH_POOL_ID="stock")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "no node of pool stock can run the tasks of Batch job" in output, output[-4000:]
    assert "the job preparation task failed on node" in output and "(exit code 3)" in output, output[-4000:]
    assert "no python3 on this node" in output, output[-4000:]  # the stderr tail
    logs = list((workdir / ".snakemake/azbatch/logs").glob("*/*/preparation-task/stderr.txt"))
    assert logs and "no python3 on this node" in logs[0].read_text()
    assert [j.id for j in client.list_jobs() if enum_text(j.state) != "completed"] == []
    assert not any(t for j in client.list_jobs() for t in client.list_tasks(j.id) if enum_text(t.state) != "completed")
