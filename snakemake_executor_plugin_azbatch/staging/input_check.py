"""The node-side check of a task's inputs (pure strings and parsing; the node runs `node_helper.py verify`).

Every input resource file from our storage is checked against the sha256 the plugin knows (a content-addressed
blob's name, or the digest recorded when the plugin downloaded a blob this run's task wrote) before the rule's
command runs. The pairs travel compactly in the task's command line:
`azbatch_verify PATH=DIGEST ... [--run PATH=DIGEST ...]` (DIGEST: the first 192 bits of the sha256 in 32 base64url
characters; the node names a content-addressed blob by the store's prefix, given once per Batch job by
`verify_function`, and the first 48 hex of its name). A mismatch prints one line per input (`mismatch_line`) and
exits with `INPUT_MISMATCH_EXIT`; the plugin finds the lines in the failed task's stderr (`mismatched_blobs`) and
removes the bad blob."""

from __future__ import annotations

import os
import re
import shlex

from .node_commands import helper_invocation
from .node_helper import (
    CUT_NAME_MARK, INPUT_MISMATCH_EXIT, RUN_BLOB_NAME, RUN_BLOBS_MARKER, digest_token, mismatch_line,
)

VERIFY_FUNCTION = "azbatch_verify"
_LINE = re.compile(r"^azbatch: input (?P<path>.+?) \(blob (?P<blob>.+?)\) does not match its sha256", re.MULTILINE)

__all__ = ["INPUT_MISMATCH_EXIT", "RUN_BLOB_NAME", "VERIFY_FUNCTION", "mismatch_line", "mismatched_blobs",
           "task_verify_command", "verify_command", "verify_function"]


def verify_function(cas_prefix: str) -> str:
    """The shell function (job-wide prefix, once per Batch job) that runs the node helper's check."""
    return f'{VERIFY_FUNCTION}() {{ {helper_invocation()} verify {shlex.quote(cas_prefix)} "$@"; }}'


def verify_command(cas_entries: list[tuple[str, str]], run_entries: list[tuple[str, str]] = ()) -> str:
    """(node path, sha256 hex) of the task's content-addressed inputs and of those an earlier task of this run
    wrote. Empty when there is nothing to check."""
    if not cas_entries and not run_entries:
        return ""
    tokens = [shlex.quote(f"{path}={digest_token(digest)}") for path, digest in cas_entries]
    if run_entries:
        tokens.append(RUN_BLOBS_MARKER)
        tokens += [shlex.quote(f"{path}={digest_token(digest)}") for path, digest in run_entries]
    return f"{VERIFY_FUNCTION} {' '.join(tokens)}"


def mismatched_blobs(stderr_text: str) -> list[tuple[str, str, bool]]:
    """(node path, blob name, whether the name is only its start) of each input the node found changed, from a
    failed task's stderr; a blob an earlier task of the run wrote is named RUN_BLOB_NAME."""
    found = []
    for m in _LINE.finditer(stderr_text or ""):
        blob = m.group("blob")
        found.append((m.group("path"), blob.removesuffix(CUT_NAME_MARK), blob.endswith(CUT_NAME_MARK)))
    return found


def task_verify_command(staging, pairs: list[tuple[str, str]], blobs: dict[str, str]) -> str:
    """The check of a task's input resource files ((local path, node path) pairs staged as `blobs`)."""
    cas, run = {}, {}
    for local, node_path in pairs:
        blob = blobs[os.path.abspath(local)]
        node_path = node_path.replace(os.sep, "/")
        (cas if staging.is_cas(blob) else run)[node_path] = staging.content_digest(local, blob)
    return verify_command(sorted(cas.items()), sorted(run.items()))
