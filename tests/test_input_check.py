"""The node-side input check (staging/input_check.py, node_helper.py verify) and the run container's name, without a
service: the node helper runs as the nodes run it (python3, standard library only)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest

from snakemake_executor_plugin_azbatch.staging import input_check, node_helper
from snakemake_executor_plugin_azbatch.staging.layout import BlobLayout
from snakemake_executor_plugin_azbatch.staging.run_container import run_container_name

VALID_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")  # Azure's container-name rules


@pytest.mark.parametrize("staging", ["abc", "snakemake", "a" * 63, "x" * 39 + "-y" * 12, "team-2-staging"])
def test_run_container_names_follow_azures_rules_and_depend_only_on_container_and_token(staging):
    name = run_container_name(staging, "20261207T020314-abc123")
    assert VALID_CONTAINER.match(name), name
    assert name == run_container_name(staging, "20261207T020314-abc123")
    assert name != run_container_name(staging, "20261207T020314-abc124")
    assert name.startswith(staging[:40].rstrip("-") + "-run-")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_verify(workdir, command: str, cas_prefix: str) -> subprocess.CompletedProcess:
    """`command` as the task runs it, with the job-wide function pointing at this checkout's node helper."""
    function = input_check.verify_function(cas_prefix).replace(
        '"$AZ_BATCH_JOB_PREP_WORKING_DIR/azbatch/node_helper.py"', f'"{node_helper.__file__}"'
    ).replace("python3", sys.executable)
    return subprocess.run(["bash", "-c", f"{function} && {command}"], cwd=workdir, capture_output=True, text=True)


def test_verify_passes_unchanged_inputs_and_names_each_changed_one_in_one_line(tmp_path):
    contents = {"data/a b.txt": b"a\n", "data/x=1.txt": b"x\n", "out/made.txt": b"made\n"}
    for rel, data in contents.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    layout = BlobLayout("team/")
    command = input_check.verify_command(
        [("data/a b.txt", sha(b"a\n")), ("data/x=1.txt", sha(b"x\n"))], [("out/made.txt", sha(b"made\n"))]
    )
    ok = run_verify(tmp_path, command, layout.cas_prefix)
    assert (ok.returncode, ok.stderr) == (0, "")

    (tmp_path / "data/x=1.txt").write_bytes(b"changed\n")
    (tmp_path / "out/made.txt").write_bytes(b"changed\n")
    bad = run_verify(tmp_path, command, layout.cas_prefix)
    digest_x = sha(b"x\n")
    assert bad.returncode == input_check.INPUT_MISMATCH_EXIT
    lines = bad.stderr.splitlines()
    assert lines == [
        f"azbatch: input data/x=1.txt (blob {layout.cas_blob(digest_x[:48])}...) does not match its "
        "sha256: the blob changed after it was staged; the command did not run",
        "azbatch: input out/made.txt (blob written by this run) does not match its sha256: the blob changed after "
        "it was staged; the command did not run",
    ]
    # The plugin finds the content-addressed one (by the start of its name) and the run's own (by its path).
    assert input_check.mismatched_blobs("other line\n" + bad.stderr) == [
        ("data/x=1.txt", layout.cas_blob(digest_x[:48]), True),
        ("out/made.txt", input_check.RUN_BLOB_NAME, False),
    ]


def test_a_missing_input_fails_the_check_too(tmp_path):
    command = input_check.verify_command([("gone.txt", sha(b""))])
    result = run_verify(tmp_path, command, "cas/sha256/")
    assert result.returncode == input_check.INPUT_MISMATCH_EXIT
    assert result.stderr.startswith("azbatch: input gone.txt (blob cas/sha256/")


def test_no_inputs_no_command():
    assert input_check.verify_command([], []) == ""
