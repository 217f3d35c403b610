"""Inputs of a task with many of them: one content-addressed JSON manifest blob ([node path, blob, sha256] per
file) as the task's only input resource file, instead of one resource file per input (Batch refuses a task
definition over 1 MB). The task's `node_helper.py fetch` downloads the listed blobs and checks each sha256."""

from __future__ import annotations

import json
import os

from .node_commands import manifest_file_path

MANIFEST_VERSION = 1


def manifest_bytes(entries: list[tuple[str, str, str]]) -> bytes:
    """Deterministic (sorted, compact), so the same inputs give the same blob."""
    files = sorted([node_path.replace(os.sep, "/"), blob, digest] for node_path, blob, digest in entries)
    return json.dumps({"version": MANIFEST_VERSION, "files": files}, separators=(",", ":")).encode("utf-8")


def stage_manifest(staging, pairs: list[tuple[str, str]], blobs: dict[str, str]) -> tuple[dict, str]:
    """Upload the manifest of (local path, node path) pairs; returns its resource file and its sha256."""
    entries = []
    for local, node_path in pairs:
        blob = blobs[os.path.abspath(local)]
        entries.append((node_path, blob, staging.content_digest(local, blob)))
    blob, digest = staging.stage_bytes(manifest_bytes(entries))
    return staging.resource_file(blob, manifest_file_path(digest)), digest
