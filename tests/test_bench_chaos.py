"""The chaos benchmark's own logic, without running it (a run takes minutes; `make bench SECTIONS=chaos`): the
service options it starts with are valid, and its output check tells exact outputs from wrong ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from snakemake_executor_plugin_azbatch.local.cli import build_parser, config_from_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import chaos  # noqa: E402

pytestmark = pytest.mark.quick


def test_the_chaos_service_options_are_what_the_issue_asks(tmp_path: Path) -> None:
    options = [*chaos.FAULT_OPTIONS, *chaos.SIMULATED[0], "--pool", chaos.SIMULATED[1]]
    config = config_from_args(build_parser().parse_args(["serve", "--root", str(tmp_path), *options]))
    assert config.fail_fraction == 0.1 and config.fail_status == (429, 500, 503)
    assert config.preempt_fraction == 0.2 and config.simulate == 1.0


def _write(workdir: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_text(text)


def test_output_check_on_host_processes(tmp_path: Path) -> None:
    _write(tmp_path, {"parts/0.txt": "0\n", "parts/1.txt": "1\n", "gathered.txt": "2\n"})
    assert chaos.output_problems(tmp_path, 2, simulated=False, owners={}) == []
    (tmp_path / "parts/1.txt").unlink()
    (tmp_path / "parts/1.txt").mkdir()
    (tmp_path / "parts/1.txt/1.txt").write_text("1\n")
    _write(tmp_path, {"gathered.txt": "3\n"})
    problems = chaos.output_problems(tmp_path, 2, simulated=False, owners={})
    assert problems[0] == "parts/1.txt: a directory"
    assert problems[1].startswith("gathered.txt: content '3\\n'")
    assert problems[2] == "parts/1.txt/1.txt: not an output of the workflow"


def test_output_check_on_simulated_nodes_wants_each_task_s_own_placeholder(tmp_path: Path) -> None:
    owners = {"parts/0.txt": ("job", "part-1"), "parts/1.txt": ("job", "part-2"), "gathered.txt": ("job", "g-3")}
    _write(tmp_path, {rel: chaos._placeholder(rel, *owner) for rel, owner in owners.items()})
    assert chaos.output_problems(tmp_path, 2, simulated=True, owners=owners) == []
    _write(tmp_path, {"parts/0.txt": chaos._placeholder("parts/1.txt", "job", "part-2")})  # another task's blob
    (problem,) = chaos.output_problems(tmp_path, 2, simulated=True, owners=owners)
    assert problem.startswith("parts/0.txt: content")
