"""Where files live: the one blob layout, and how local paths map to paths on the node. Pure (no network), so the
executor and tests share one definition.

In the shared staging container, under the configured prefix (nodes may only read it):
    cas/sha256/<hex>                     content-addressed inputs, sources and extra files
In the run's own container (run_container.py; the run's and the prefix's own, so neither is in the names):
    <task>/files/<path>                  what the task wrote (<path> relative to the working directory)
    <task>/batch/stdout.txt              Batch's logs of the task (and stderr.txt)
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class StagingError(Exception):
    """A staging problem; the message is one line without secrets."""


@dataclass(frozen=True)
class BlobLayout:
    prefix: str  # "" or ending with "/"

    CAS_DIR = "cas/sha256/"
    FILES_DIR = "files"
    BATCH_LOGS_DIR = "batch"

    @property
    def cas_prefix(self) -> str:
        return f"{self.prefix}{self.CAS_DIR}"

    def cas_blob(self, sha256_hex: str) -> str:
        return f"{self.cas_prefix}{sha256_hex}"

    @staticmethod
    def task_prefix(task_id: str) -> str:
        """A task's blobs in its run's own container (a task id has no '/', so never a content-addressed name)."""
        return f"{task_id}/"

    def task_files_dir(self, task_prefix: str) -> str:
        """The virtual directory (no trailing '/') of the files a task wrote."""
        return f"{task_prefix}{self.FILES_DIR}"

    def task_batch_logs_dir(self, task_prefix: str) -> str:
        """The virtual directory (no trailing '/') of a task's Batch stdout.txt / stderr.txt."""
        return f"{task_prefix}{self.BATCH_LOGS_DIR}"


class NodePaths:
    """Tasks recreate the working directory on the node: a local file under it gets the same relative path there;
    files under paths mounted on the nodes are used in place."""

    def __init__(self, workdir: str, mounted_paths: tuple[str, ...] = ()):
        self.workdir = workdir
        self.mounted_paths = mounted_paths

    def node_path(self, path: str, what: str) -> str:
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute, self.workdir)
        if rel == ".." or rel.startswith(".." + os.sep):
            raise StagingError(
                f"azbatch: {what} {path} is outside the working directory {self.workdir}; move it inside, or mount "
                "its location on the nodes and list it in --azbatch-mounted-paths"
            )
        return rel

    def is_mounted(self, path: str) -> bool:
        absolute = os.path.abspath(path)
        return any(absolute == m or absolute.startswith(m.rstrip(os.sep) + os.sep) for m in self.mounted_paths)

    @staticmethod
    def expand(path: str) -> list[str]:
        """A directory stands for every file below it."""
        if os.path.isdir(path):
            return [os.path.join(root, name) for root, _, names in os.walk(path) for name in sorted(names)]
        return [path]

    def empty_dirs(self, paths, what: str) -> list[str]:
        """Node paths (posix) of the empty directories at or below each input directory, leaves only: staging
        sends files, so the task's command creates these (mkdir -p). Mounted ones are used in place."""
        found = []
        for path in paths:
            if self.is_mounted(path) or not os.path.isdir(path):
                continue
            for root, dirs, files in os.walk(path):
                if not dirs and not files:
                    found.append(self.node_path(root, what).replace(os.sep, "/"))
        return sorted(found)

    def pairs(self, paths, what: str) -> list[tuple[str, str]]:
        """(local path, node path) of every file to stage for `paths`; mounted ones are left out."""
        pairs = []
        for path in paths:
            if self.is_mounted(path):
                continue
            for f in self.expand(path):
                pairs.append((f, self.node_path(f, what)))
        return pairs
