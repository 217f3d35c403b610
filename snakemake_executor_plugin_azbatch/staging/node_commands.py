"""What the nodes run around Snakemake for the run's sources and manifest inputs (pure strings; the code they call
is `node_helper.py`, downloaded by the job preparation task).

In the job preparation task's working directory ($AZ_BATCH_JOB_PREP_WORKING_DIR, once per node and Batch job):
    azbatch/node_helper.py          this package's node_helper.py (content-addressed blob)
    azbatch/sources.tar.gz          the run's sources archive (content-addressed blob), checked and extracted to
    azbatch/sources/                ... here
    azbatch/extra/<node path>       --azbatch-resource-files given as URLs (downloaded by Batch)
Each task links sources/ and extra/ into its working directory; a manifest task first fetches its inputs."""

from __future__ import annotations

import shlex

NODE_DIR = "azbatch"
HELPER_NAME = "node_helper.py"
ARCHIVE_NAME = "sources.tar.gz"
EXTRA_DIR = "extra"
MANIFEST_NAME_SUFFIX = ".manifest.json"
_PREP_DIR = "$AZ_BATCH_JOB_PREP_WORKING_DIR"


def helper_file_path() -> str:
    """filePath of the helper among the preparation task's resource files."""
    return f"{NODE_DIR}/{HELPER_NAME}"


def archive_file_path() -> str:
    return f"{NODE_DIR}/{ARCHIVE_NAME}"


def extra_file_path(node_path: str) -> str:
    return f"{NODE_DIR}/{EXTRA_DIR}/{node_path}"


def sources_preparation_script(archive_sha256: str) -> str:
    """The sources part of the job preparation script: check and extract the archive (idempotent)."""
    helper = f'"{_PREP_DIR}/{NODE_DIR}/{HELPER_NAME}"'
    return (
        f'python3 {helper} prepare "{_PREP_DIR}/{NODE_DIR}/{ARCHIVE_NAME}" {shlex.quote(archive_sha256)} '
        f'"{_PREP_DIR}/{NODE_DIR}/sources"'
    )


def helper_invocation() -> str:
    """How a task runs the node helper extracted by the job preparation task."""
    return f'python3 "{_PREP_DIR}/{NODE_DIR}/{HELPER_NAME}"'


def link_command() -> str:
    """Run first in every task: the sources (and URL extra files) appear in the task's working directory."""
    return f'python3 "{_PREP_DIR}/{NODE_DIR}/{HELPER_NAME}" link'


def manifest_file_path(manifest_sha256: str) -> str:
    """filePath of a task's manifest resource file (its name is its sha256, which `fetch` checks)."""
    return f".azbatch/{manifest_sha256}{MANIFEST_NAME_SUFFIX}"


def fetch_command(manifest_sha256: str) -> str:
    return f'python3 "{_PREP_DIR}/{NODE_DIR}/{HELPER_NAME}" fetch {manifest_file_path(manifest_sha256)}'


def with_directories(script: str, empty_input_dirs: list[str], output_dirs: list[str], record_file: str) -> str:
    """A task's script with what staging's files alone would lose: the empty directories of its input directories
    are made first; after Snakemake succeeded, the empty directories below its `directory()` outputs (the node
    agent uploads files only) are listed in `record_file`, uploaded with the outputs. A task with neither is
    unchanged, so ordinary task definitions do not grow."""
    if empty_input_dirs:
        script = f"mkdir -p -- {' '.join(shlex.quote(d) for d in empty_input_dirs)} && {script}"
    if output_dirs:
        helper = f'"{_PREP_DIR}/{NODE_DIR}/{HELPER_NAME}"'
        listed = " ".join(shlex.quote(d) for d in output_dirs)
        script = f"{script} && python3 {helper} empty-dirs {shlex.quote(record_file)} {listed}"
    return script
