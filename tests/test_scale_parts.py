"""Parts of issue 11's plugin side without a service: the deterministic sources archive, the node helper (prepare,
link), the adaptive status interval, retention in task bodies."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys

import pytest

from snakemake_executor_plugin_azbatch.tasks import task_spec
from snakemake_executor_plugin_azbatch.run.polling import AdaptiveInterval, default_maximum, sleep_interval
from snakemake_executor_plugin_azbatch.staging import node_helper
from snakemake_executor_plugin_azbatch.staging.sources_archive import write_archive

pytestmark = pytest.mark.quick


def _sources(root, stamp):
    files = {"Snakefile": "rule a: pass\n", "scripts/x.py": "print(1)\n", "envs/e.yaml": "deps: []\n"}
    pairs = []
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (stamp, stamp))
        pairs.append((str(path), name))
    return pairs


def test_same_sources_give_the_same_archive_bytes_whatever_their_order_and_mtimes(tmp_path):
    one = write_archive(_sources(tmp_path / "a", 1_000_000), tmp_path / "one.tar.gz").read_bytes()
    two = write_archive(reversed(_sources(tmp_path / "b", 2_000_000)), tmp_path / "two.tar.gz").read_bytes()
    assert one == two
    (tmp_path / "b/scripts/x.py").write_text("print(2)\n")
    three = write_archive(_sources(tmp_path / "b", 2_000_000)[:2], tmp_path / "three.tar.gz").read_bytes()
    assert three != one


def test_node_helper_extracts_a_checked_archive_once_and_links_it_without_overwriting_inputs(tmp_path):
    archive = write_archive(_sources(tmp_path / "src", 0), tmp_path / "s.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    helper = node_helper.__file__
    dest = tmp_path / "prep" / "sources"
    bad = subprocess.run([sys.executable, helper, "prepare", str(archive), "0" * 64, str(dest)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "expected 0000" in bad.stderr and not dest.exists()
    subprocess.run([sys.executable, helper, "prepare", str(archive), digest, str(dest)], check=True)
    assert (dest / "scripts/x.py").read_text() == "print(1)\n"
    workdir = tmp_path / "task"
    (workdir / "scripts").mkdir(parents=True)
    (workdir / "scripts/x.py").write_text("an input wins\n")
    subprocess.run([sys.executable, helper, "link", str(dest)], check=True, cwd=workdir)
    assert (workdir / "Snakefile").is_symlink() and (workdir / "Snakefile").read_text() == "rule a: pass\n"
    assert not (workdir / "scripts").is_symlink()  # directories are made, so task outputs stay in the task
    assert (workdir / "scripts/x.py").read_text() == "an input wins\n"


def test_status_interval_is_short_while_tasks_complete_and_grows_bounded_while_quiet():
    interval = AdaptiveInterval(1.0, 5.0)
    quiet = [interval.after_round(0) for _ in range(8)]
    assert quiet == sorted(quiet) and quiet[0] > 1.0 and quiet[-1] == 5.0
    assert interval.after_round(3) == 1.0
    assert default_maximum(1.0) == 10.0 and default_maximum(10.0) == 60.0 and default_maximum(120.0) == 120.0


def test_status_sleep_follows_an_interval_set_after_it_began():
    """Snakemake's first sleep starts before the executor sets its interval: the sleep must honour the later value."""
    clock = [0.0]
    interval = [10.0]  # Snakemake's default, read when the sleep begins

    async def fake_sleep(seconds: float) -> None:
        clock[0] += seconds
        interval[0] = 1.0  # the executor's __post_init__ has run meanwhile

    asyncio.run(sleep_interval(lambda: interval[0], sleep=fake_sleep, clock=lambda: clock[0]))
    assert clock[0] == 1.0


def test_retention_time_goes_into_task_constraints():
    body = task_spec.task_body(task_spec.TaskRequest(id="t", display_name="t", script="true", retention_seconds=3600))
    assert body["constraints"] == {"retentionTime": "PT3600S"}
