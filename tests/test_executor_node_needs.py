"""What conda and apptainer rules need on the nodes, through `snakemake --executor azbatch` on the local service:
refused before anything is submitted when nothing can provide it; otherwise the node's Snakemake gets node-wide
prefixes (each conda env / image made once per node) and the env files travel with the workflow's sources."""

from __future__ import annotations

import re
import shlex
import tarfile

import pytest
from support.executor_runs import kept_jobs, output_of, run_snakemake, write_files

pytestmark = pytest.mark.no_report  # no test here reads a run report

SNAKEFILE = """
rule tool:
    output: "out.txt"
    conda: "envs/tool.yaml"
    container: "docker://alpine:3.20"
    shell: "echo ran > {output}"
"""
ENV_FILE = "channels: [conda-forge]\ndependencies: [python=3.12]\n"


def test_conda_rules_without_conda_on_the_nodes_stop_before_submitting(local_service, tmp_path):
    workdir = write_files(tmp_path / "noconda", {"Snakefile": SNAKEFILE, "envs/tool.yaml": ENV_FILE})
    result = run_snakemake(local_service, workdir, "--sdm", "conda", container="needs",
                           SNAKEMAKE_AZBATCH_BOOTSTRAP="none")
    assert result.returncode != 0, output_of(result)
    lines = [line for line in result.stderr.splitlines() if "azbatch: --software-deployment-method" in line]
    assert len(lines) == 1, output_of(result)
    assert "needs conda on the nodes, but --azbatch-bootstrap none installs nothing" in lines[0]
    assert "Traceback" not in result.stderr
    assert kept_jobs(local_service.batch_client(), "noconda") == []


def test_conda_and_apptainer_rules_get_node_wide_prefixes_and_their_env_files(local_service, tmp_path):
    workdir = write_files(tmp_path / "condarule", {"Snakefile": SNAKEFILE, "envs/tool.yaml": ENV_FILE})
    client = local_service.batch_client()
    result = run_snakemake(local_service, workdir, "--sdm", "conda", "apptainer", container="needs",
                           SNAKEMAKE_AZBATCH_NODE_PROVIDES="conda apptainer", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    jobs = kept_jobs(client, "condarule")
    try:
        assert len(jobs) == 1, output_of(result)
        (task,) = client.list_tasks(jobs[0].id)
        script = shlex.split(task.command_line)[2]  # /bin/bash -c SCRIPT
        assert script.startswith('eval "$AZBATCH_TASK_PREFIX" && snakemake_task --target-jobs ')
        # Snakemake's run-wide arguments are in the job's common environment, as the function the task calls.
        common = {e.name: e.value for e in client.get_job(jobs[0].id).common_environment_settings}
        command = common["AZBATCH_TASK_PREFIX"].split("snakemake_task() {", 1)[1]
        assert '--conda-prefix "$AZ_BATCH_NODE_SHARED_DIR/azbatch/conda-envs"' in command
        assert '--apptainer-prefix "$AZ_BATCH_NODE_SHARED_DIR/azbatch/apptainer-images"' in command
        assert re.search(r"--deployment-method (conda apptainer|apptainer conda) ", command), command
        # The node-wide prefixes come after Snakemake's own arguments, so they win over any local --conda-prefix.
        assert command.index("--deployment-method") < command.index("--conda-prefix")
        # The env file is a workflow source: in the run's sources archive, which every node's preparation unpacks.
        with tarfile.open(workdir / ".snakemake/azbatch/sources.tar.gz") as archive:
            assert "envs/tool.yaml" in archive.getnames()
        # The nodes have both (the pool's start task or image): the bootstrap installs only Snakemake.
        prep = client.get_job(jobs[0].id).job_preparation_task.command_line
        assert "Miniforge" not in prep and "apptainer" not in prep
    finally:
        for job in jobs:
            client.begin_delete_job(job.id, polling_interval=1).result()
