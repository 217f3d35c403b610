"""Inputs of a task with many of them: one content-addressed JSON manifest blob ([node path, blob, sha256] per
file, plus "run" for a blob an earlier task of the run wrote, in the run's own container) as the task's only input
resource file, instead of one resource file per input (Batch refuses a task
definition over 1 MB). The task's `node_helper.py fetch` downloads the listed blobs and checks each sha256."""

from __future__ import annotations

import json
import os

from .node_commands import manifest_file_path
from .node_helper import READ_URL_VARIABLE, RUN_READ_URL_VARIABLE

MANIFEST_VERSION = 2  # 2: entries in the run's own container are marked "run"


def manifest_bytes(entries: list[tuple]) -> bytes:
    """Deterministic (sorted, compact), so the same inputs give the same blob. An entry is (node path, blob,
    sha256) or (node path, blob, sha256, "run")."""
    files = sorted([entry[0].replace(os.sep, "/"), *entry[1:]] for entry in entries)
    return json.dumps({"version": MANIFEST_VERSION, "files": files}, separators=(",", ":")).encode("utf-8")


def stage_manifest(staging, pairs: list[tuple[str, str]], blobs: dict[str, str]) -> tuple[dict, str]:
    """Upload the manifest of (local path, node path) pairs; returns its resource file and its sha256."""
    entries = []
    for local, node_path in pairs:
        blob = blobs[os.path.abspath(local)]
        digest = staging.content_digest(local, blob)
        entries.append((node_path, blob, digest) if staging.is_cas(blob) else (node_path, blob, digest, "run"))
    blob, digest = staging.stage_bytes(manifest_bytes(entries))
    return staging.resource_file(blob, manifest_file_path(digest)), digest


def manifest_env(staging, blobs: list[str]) -> dict[str, str]:
    """The read URLs a manifest task fetches with: the store's, and the run container's when an entry is there."""
    env = {READ_URL_VARIABLE: staging.read_container_url()}
    if any(not staging.is_cas(blob) for blob in blobs):
        env[RUN_READ_URL_VARIABLE] = staging.run_read_container_url()
    return env
