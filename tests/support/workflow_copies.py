"""The example workflow copied for a test, and the run report's tables read back."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "example_workflow"


def copy_example(tmp_path: Path) -> Path:
    workdir = tmp_path / "example_workflow"
    shutil.copytree(
        EXAMPLE, workdir, ignore=shutil.ignore_patterns("results", "logs", "benchmarks", ".snakemake", "__pycache__")
    )
    return workdir


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
