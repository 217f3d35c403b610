"""Staging through Blob storage on the local service: sources and inputs go up, outputs (files, directories,
nested, odd names) come back; contents go up once per container, intermediates are never uploaded again, an
unchanged re-run sends nothing at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.executor_runs import bootstrap_bytes, delta, output_of, run_snakemake, total, upload_bytes, write_files

from snakemake_executor_plugin_azbatch.staging.record import sha256_file

pytestmark = pytest.mark.no_report  # no test here reads a run report

STAGING_WORKFLOW = {
    "Snakefile": """
        configfile: "config/config.yaml"

        rule all:
            input:
                expand("results/{sample}/upper ü.txt", sample=config["samples"]),
                "results/listing.txt",

        rule upper:
            input: "data/in put ü.txt"
            output: "results/{sample}/upper ü.txt"
            log: "logs/upper/{sample}.log"
            script: "scripts/upper.py"

        rule make_dir:
            output: directory("results/tree")
            shell: "mkdir -p {output}/a/b {output}/empty {output}/nested/deeper/leaf && echo one > {output}/a/one.txt "
                   "&& echo two > {output}/a/b/two.txt"

        rule list_dir:  # the empty directories of its input directory are there on the node too
            input: "results/tree"
            output: "results/listing.txt"
            shell: "cd {input} && test -d empty && test -d nested/deeper/leaf "
                   "&& find . -type f | sort | xargs cat > ../listing.txt"
    """,
    "config/config.yaml": "samples: [s1, 's 2']\n",
    "scripts/upper.py": """
        with open(snakemake.input[0]) as f, open(snakemake.output[0], "w") as out:
            out.write(f.read().upper() + snakemake.wildcards.sample)
        with open(snakemake.log[0], "w") as log:
            log.write("done")
    """,
    "data/in put ü.txt": "hello wörld\n",
}


def test_sources_inputs_and_outputs_travel_through_blob_storage(local_service, tmp_path):
    workdir = write_files(tmp_path / "staging", STAGING_WORKFLOW)
    result = run_snakemake(local_service, workdir, container="staging-basic")
    assert result.returncode == 0, output_of(result)
    for sample in ("s1", "s 2"):
        assert (workdir / f"results/{sample}/upper ü.txt").read_text() == f"HELLO WÖRLD\n{sample}"
        assert (workdir / f"logs/upper/{sample}.log").read_text() == "done"
    assert (workdir / "results/tree/a/one.txt").read_text() == "one\n"
    assert (workdir / "results/tree/a/b/two.txt").read_text() == "two\n"
    assert (workdir / "results/listing.txt").read_text() == "two\none\n"  # ./a/b/two.txt sorts first
    # The directory output came back exactly: its files and its empty directories, nested ones too, and nothing
    # else (the node's list of empty directories is read, not saved).
    tree = workdir / "results/tree"
    found = {str(Path(root, name).relative_to(tree)) + "/" * (name in dirs)
             for root, dirs, files in os.walk(tree) for name in [*dirs, *files]}
    assert found - {".snakemake_timestamp"} == {
        "a/", "a/b/", "a/one.txt", "a/b/two.txt", "empty/", "nested/", "nested/deeper/", "nested/deeper/leaf/"}
    assert not any(workdir.rglob(".azbatch-empty-dirs.json"))
    # Downloads are atomic: no temporary files are left next to the outputs.
    leftovers = [f for _, _, files in os.walk(workdir / "results") for f in files if f.endswith(".azbatch-part")]
    assert leftovers == []


REUSE_WORKFLOW = {
    "Snakefile": """
        rule all:
            input: "final.txt"

        rule make_big:
            input: "input.bin"
            output: "intermediate.bin"
            shell: "cat {input} {input} > {output}"

        rule consume:
            input: "intermediate.bin"
            output: "final.txt"
            shell: "wc -c < {input} > {output}"
    """,
}
INPUT_SIZE = 256 * 1024


def test_contents_upload_once_intermediates_are_not_reuploaded_and_unchanged_reruns_send_nothing(
    local_service, tmp_path
):
    workdir = write_files(tmp_path / "reuse", REUSE_WORKFLOW)
    (workdir / "input.bin").write_bytes(os.urandom(INPUT_SIZE))
    container = "staging-reuse"
    intermediate = 2 * INPUT_SIZE
    small = 64 * 1024  # sources, logs, stdout/stderr, final.txt, request overhead

    before = local_service.metrics()
    result = run_snakemake(local_service, workdir, container=container)
    assert result.returncode == 0, output_of(result)
    assert (workdir / "final.txt").read_text().strip() == str(intermediate)
    first = local_service.metrics()
    uploaded = upload_bytes(first) - upload_bytes(before)
    # The input goes up once (plugin), the intermediate once (by the task); the downstream task reads the
    # intermediate's blob in place instead of the plugin uploading the downloaded copy again. The bootstrap stages
    # nothing (its nodes fetch uv from the index).
    once = INPUT_SIZE + intermediate + bootstrap_bytes()
    assert once <= uploaded < once + small

    # Nothing to do: no Batch request, no storage request, nothing created.
    result = run_snakemake(local_service, workdir, container=container)
    assert result.returncode == 0, output_of(result)
    unchanged = local_service.metrics()
    assert total(unchanged, "operations") == total(first, "operations")
    assert total(unchanged, "storage") == total(first, "storage")

    # Forced re-run: the input and sources are already stored (content-addressed, local hash record), so only
    # the task's own outputs are uploaded again.
    result = run_snakemake(local_service, workdir, "--forceall", container=container)
    assert result.returncode == 0, output_of(result)
    forced = local_service.metrics()
    reuploaded = upload_bytes(forced) - upload_bytes(unchanged)
    assert intermediate <= reuploaded < intermediate + small
    assert delta(unchanged, forced, "operations", "Jobs_CreateJob") == 1


def test_mounted_paths_extra_resource_files_and_precommand(local_service, tmp_path):
    # The local nodes see this machine's filesystem, like pool nodes see a mounted data store.
    mounted = tmp_path / "datastore"
    mounted.mkdir()
    (mounted / "reference.bin").write_bytes(os.urandom(INPUT_SIZE))
    extra = tmp_path / "elsewhere" / "extra.txt"
    extra.parent.mkdir()
    extra.write_text("extra file\n")
    workdir = write_files(
        tmp_path / "mounted",
        {
            "Snakefile": f"""
                rule all:
                    input: "size.txt", "extra.txt"

                rule size:
                    input: "{mounted}/reference.bin"
                    output: "size.txt"
                    shell: "wc -c < {{input}} > {{output}}"

                rule extra:
                    output: "extra.txt"
                    shell: "cat refs/extra.txt > {{output}}; echo $AZB_PRE >> {{output}}"
            """
        },
    )
    before = local_service.metrics()
    result = run_snakemake(
        local_service,
        workdir,
        container="staging-mounted",
        SNAKEMAKE_AZBATCH_MOUNTED_PATHS=str(mounted),
        SNAKEMAKE_AZBATCH_RESOURCE_FILES=f"refs/extra.txt={extra}",
        SNAKEMAKE_AZBATCH_PRECOMMAND="export AZB_PRE=from-precommand",
    )
    assert result.returncode == 0, output_of(result)
    assert (workdir / "size.txt").read_text().strip() == str(INPUT_SIZE)
    assert (workdir / "extra.txt").read_text() == "extra file\nfrom-precommand\n"
    # The mounted input was read in place, never uploaded.
    assert upload_bytes(local_service.metrics()) - upload_bytes(before) - bootstrap_bytes() < INPUT_SIZE


def test_unchanged_files_are_not_rehashed_and_same_size_same_mtime_edits_are(local_service, tmp_path):
    import json

    workdir = write_files(tmp_path / "rehash", REUSE_WORKFLOW)
    (workdir / "input.bin").write_bytes(os.urandom(1024))
    result = run_snakemake(local_service, workdir, "--until", "make_big", container="staging-rehash")
    assert result.returncode == 0, output_of(result)
    record_path = workdir / ".snakemake/azbatch/staging-record.json"
    record = json.loads(record_path.read_text())
    entry = record["hashes"][str(workdir / "input.bin")]
    # Plant a different digest for the same file state: a plugin that re-hashed would upload under the true
    # digest (already stored, so nothing); one that trusts its record uploads under the planted name. The node's
    # check then finds the content does not match that name: the task fails, and the plugin removes the blob and
    # forgets the recorded hash, so the next run hashes the file again.
    planted = "0" * 64
    entry[-1] = planted
    record_path.write_text(json.dumps(record))
    result = run_snakemake(local_service, workdir, "--forceall", "--until", "make_big", container="staging-rehash")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert f"azbatch: input input.bin (blob cas/sha256/{planted[:48]}...) does not match its sha256" in text, \
        output_of(result)
    assert f"removed blob cas/sha256/{planted} (input input.bin)" in text
    container = local_service.blob_service_client().get_container_client("staging-rehash")
    assert not container.get_blob_client(f"cas/sha256/{planted}").exists()
    assert str(workdir / "input.bin") not in json.loads(record_path.read_text())["hashes"]

    # New content under the old size and mtime (`cp -p`, `rsync -t`): the ctime changed, so the file is hashed
    # again and the task reads the new content, not the recorded blob.
    edited = workdir / "input.bin"
    st = edited.stat()
    new_content = os.urandom(1024)
    edited.write_bytes(new_content)
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (edited.stat().st_size, edited.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    result = run_snakemake(local_service, workdir, "--forceall", "--until", "make_big", container="staging-rehash")
    assert result.returncode == 0, output_of(result)
    assert (workdir / "intermediate.bin").read_bytes() == new_content + new_content


def test_input_outside_the_working_directory_is_that_jobs_clear_error(local_service, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("x\n")
    workdir = write_files(
        tmp_path / "outside",
        {"Snakefile": f'rule a:\n    input: "{outside}"\n    output: "a.txt"\n    shell: "cp {{input}} {{output}}"\n'},
    )
    result = run_snakemake(local_service, workdir, container="staging-outside")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert f"azbatch: input file {outside} is outside the working directory" in text, output_of(result)
    assert "--azbatch-mounted-paths" in text


def test_an_earlier_runs_output_goes_through_the_content_store_not_its_deleted_container(local_service, tmp_path):
    workdir = write_files(tmp_path / "touched", REUSE_WORKFLOW)
    (workdir / "input.bin").write_bytes(os.urandom(INPUT_SIZE))
    result = run_snakemake(local_service, workdir, "--until", "make_big", container="staging-touched")
    assert result.returncode == 0, output_of(result)
    # Same content, new modification time (as `touch` or Snakemake's own output touching does).
    intermediate = workdir / "intermediate.bin"
    stat = intermediate.stat()
    os.utime(intermediate, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    before = local_service.metrics()
    result = run_snakemake(local_service, workdir, "--forcerun", "consume", container="staging-touched")
    assert result.returncode == 0, output_of(result)
    assert (workdir / "final.txt").read_text().strip() == str(2 * INPUT_SIZE)
    # The first run's container (what its task wrote) was deleted at its end, and a run never reads another run's
    # blobs: the intermediate goes up once, content-addressed (issue 19; before, the blob was read in place).
    uploaded = upload_bytes(local_service.metrics()) - upload_bytes(before)
    assert 2 * INPUT_SIZE <= uploaded < 2 * INPUT_SIZE + 64 * 1024
    store = local_service.blob_service_client().get_container_client("staging-touched")
    assert store.get_blob_client(f"cas/sha256/{sha256_file(str(intermediate))}").exists()
    # The staging record keeps what this run's tasks wrote only, in its own (now deleted) container.
    record = json.loads((workdir / ".snakemake/azbatch/staging-record.json").read_text())
    (key,) = record["produced"]
    assert "/staging-touched-run-" in key
