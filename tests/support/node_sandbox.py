"""Test helpers for the stock node image, node sandboxes and podman: one cached image for every test run.

The image is built (or reused) under the repository's `.azbatch-local/cache/` (gitignored), so repeated runs and
CI's single run reuse it; tests that need a Debian package skip with one line naming it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from snakemake_executor_plugin_azbatch.local.nodes import containers, isolation, node_image

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".azbatch-local" / "cache"
IMAGE_DIR = node_image.default_directory(REPO / ".azbatch-local")
PODMAN_STORE = CACHE / "podman"


def skip_unless(missing: Sequence[str]) -> None:
    if missing:
        pytest.skip(f"needs the Debian package{'s' if len(missing) > 1 else ''} {' '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("needs root (node images and sandboxes mount and chroot; CI runs as root)")


def stock_image() -> node_image.NodeImage:
    """The cached stock node image, built on first use (about two minutes; debootstrap is needed only then)."""
    if os.geteuid() != 0:
        skip_unless([])
    try:
        return node_image.build(IMAGE_DIR)
    except node_image.NodeImageError:
        skip_unless(node_image.missing_packages())
        raise


class Node:
    """A node directory with Batch's layout, one task directory in it, and a started sandbox over it."""

    def __init__(self, base: Path, image: node_image.NodeImage, node_id: str = "tvm-1", **sandbox_options) -> None:
        self.root = base / "nodes" / "pool" / node_id
        self.task_dir = self.root / "workitems" / "job" / "job-1" / "task"
        self.wd = self.task_dir / "wd"
        for path in (self.root / "shared", self.root / "startup" / "wd", self.wd):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.root / "shared", self.task_dir, self.wd):
            os.chown(path, image.task_uid, image.task_gid)  # as Batch: the task user owns its directories
        self.sandbox = isolation.NodeSandbox(
            image, base / "node-disks" / node_id, node_id=node_id, node_root=self.root, **sandbox_options
        )
        self.sandbox.start()

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "AZ_BATCH_NODE_ID": self.sandbox.node_id,
            "AZ_BATCH_NODE_ROOT_DIR": str(self.root),
            "AZ_BATCH_NODE_SHARED_DIR": str(self.root / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(self.root / "startup"),
            "AZ_BATCH_TASK_DIR": str(self.task_dir),
            "AZ_BATCH_TASK_WORKING_DIR": str(self.wd),
            "AZ_BATCH_TASK_ID": "task",
            "AZ_BATCH_JOB_ID": "job",
            **extra,
        }

    def run(
        self, script: str, *, admin: bool = False, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run `sh -c script` on this node as a task would; returns the finished process (text output)."""
        launch = self.sandbox.launch(["sh", "-c", script], cwd=self.wd, env=env or self.env(), admin=admin)
        return subprocess.run(
            launch.argv, env=launch.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )


def podman_engine() -> containers.PodmanEngine:
    skip_unless(containers.missing_packages())
    engine = containers.PodmanEngine(PODMAN_STORE)
    engine.prepare()
    return engine
