"""`--azbatch-bootstrap container` end to end: `snakemake --executor azbatch` on a container-enabled local pool whose
nodes are stock-image sandboxes (python3 only, no Snakemake), every task in a real podman container of an image
that holds the run's exact Snakemake, built as the README says, by `azbatch-local snakemake-image build` (local/
snakemake_image.py: once, cached by content).

What this proves: the plugin's container task bodies and preparation task work on a pool where Batch requires
containerSettings; the tasks ran in the image (a rule reads the image's marker file and finds Snakemake there, which
the node lacks); inputs and sources reach the container and outputs come back. Skips with one line naming podman,
runc, debootstrap or bubblewrap when one is missing (CI installs them).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import snakemake
from support.executor_runs import output_of, run_snakemake, write_files
from support.node_sandbox import IMAGE_DIR, podman_engine, skip_unless, stock_image

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from snakemake_executor_plugin_azbatch.local.nodes import isolation, snakemake_image
from snakemake_executor_plugin_azbatch.local.service_config import PoolSpec

pytestmark = pytest.mark.no_report  # no test here reads a run report

SNAKEFILE = """\
rule all:
    input: "results/report.txt"

rule shout:
    input: "data/words.txt"
    output: "results/shout.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule where:
    output: "results/where.txt"
    shell:
        "{{ cat /etc/azbatch-snakemake-image; command -v snakemake; python3 -m snakemake --version; id -u; "
        "grep '^ID=' /etc/os-release; }} > {output}"

rule report:
    input: shout="results/shout.txt", where="results/where.txt"
    output: "results/report.txt"
    shell: "cat {input.shout} {input.where} > {output}"
"""


@pytest.fixture(scope="module")
def image_reference() -> str:
    engine = podman_engine()  # skips naming podman / runc when missing
    stock_image()  # skips naming debootstrap or root when missing
    # The README's command, into the store the test service takes container images from.
    command = [str(Path(sys.executable).parent / "azbatch-local"), "snakemake-image", "build",
               "--node-image", str(IMAGE_DIR), "--podman-store", str(engine.store)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr
    assert re.fullmatch(r"localhost/azbatch-snakemake:[0-9a-f]{12}\n", built.stdout), built.stdout
    assert all(line.startswith("azbatch-local snakemake-image build: ") for line in built.stderr.splitlines())
    return built.stdout.strip()


def test_the_container_bootstrap_runs_a_workflow_in_real_containers(make_service, tmp_path, image_reference):
    skip_unless(isolation.missing_packages())
    boxes = {"type": "dockerCompatible", "containerImageNames": [image_reference]}
    service = make_service(pools=[PoolSpec("boxes", 1, 2, container_configuration=boxes)], node_image=IMAGE_DIR)
    workdir = write_files(tmp_path / "wf", {"Snakefile": SNAKEFILE, "data/words.txt": "hello\ncontainer\n"})
    client = service.batch_client()

    result = run_snakemake(service, workdir, container="boxed", timeout=300, SNAKEMAKE_AZBATCH_POOL_ID="boxes",
                           SNAKEMAKE_AZBATCH_BOOTSTRAP="container", SNAKEMAKE_AZBATCH_KEEP_JOB="true",
                           SNAKEMAKE_AZBATCH_CONTAINER_IMAGE=image_reference)
    assert result.returncode == 0, output_of(result)[-6000:]

    key = image_reference.rsplit(":", 1)[1]
    report = (workdir / "results/report.txt").read_text().splitlines()
    assert report == ["HELLO", "CONTAINER", key, f"{snakemake_image.VENV}/bin/snakemake", snakemake.__version__,
                      "1000", "ID=debian"]  # the image's marker and Snakemake, as the node's task user
    jobs = [j for j in client.list_jobs() if j.id.startswith("sm-wf-")]
    tasks = [t for j in jobs for t in client.list_tasks(j.id)]
    assert len(tasks) == 3 and all(enum_text(t.execution_info.result) == "success" for t in tasks)
    assert {t.container_settings.image_name for t in tasks} == {image_reference}
    # The job preparation task (the sources part) ran in the image too, with its python3.
    assert [j.job_preparation_task.container_settings.image_name for j in jobs] == [image_reference]
    preps = [s for j in jobs for s in client.list_job_preparation_and_release_task_status(j.id)]
    assert preps and all(enum_text(s.job_preparation_task_execution_info.result) == "success" for s in preps)
