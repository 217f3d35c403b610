"""Benchmark workflows and how Snakemake is run on them (by this plugin, `--executor local` or `--executor touch`).

Every executor runs the same Snakefile in its own fresh copy of the working directory, so each run does the
whole DAG.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

from measure import Measured, run_measured

# N independent jobs, each reading its own input and writing one small output (the rehearsal workload).
FAN_OUT = """
N = {n}
rule all:
    input: expand("out/{{i}}.txt", i=range(N))
rule count:
    input: "data/{{i}}.in"
    output: "out/{{i}}.txt"
    shell: "wc -c < {{input}} > {{output}}"
"""

# N independent jobs without inputs and one gather job reading all their outputs (the scale workload).
FAN_OUT_GATHER = """
N = {n}
rule all:
    input: "gathered.txt"
rule part:
    output: "parts/{{i}}.txt"
    shell: "echo {{wildcards.i}} > {{output}}"
rule gather:
    input: expand("parts/{{i}}.txt", i=range(N))
    output: "gathered.txt"
    shell: "cat {{input}} | wc -l > {{output}}"
"""


def make_fan_out(base: Path, n: int, input_bytes: int) -> Path:
    """A working directory with the fan-out Snakefile and n inputs of `input_bytes` random bytes."""
    (base / "data").mkdir(parents=True)
    (base / "Snakefile").write_text(textwrap.dedent(FAN_OUT.format(n=n)))
    for i in range(n):
        (base / "data" / f"{i}.in").write_bytes(os.urandom(input_bytes))
    return base


def make_fan_out_gather(base: Path, n: int) -> Path:
    base.mkdir(parents=True)
    (base / "Snakefile").write_text(textwrap.dedent(FAN_OUT_GATHER.format(n=n)))
    return base


def fresh_copy(workdir: Path, name: str) -> Path:
    """A copy of the workflow's sources and inputs (no results, no .snakemake) for one more executor."""
    target = workdir.parent / name
    shutil.copytree(workdir, target, ignore=shutil.ignore_patterns(".snakemake", "out", "parts", "gathered.txt"))
    return target


def snakemake(workdir: Path, executor: str, jobs: int, env: dict[str, str], log: Path, timeout_s: float,
              extra: list[str] | None = None) -> Measured:
    command = [sys.executable, "-m", "snakemake", "--executor", executor, "--jobs", str(jobs), *(extra or [])]
    if executor == "local":
        command += ["--cores", str(jobs)]
    if executor == "azbatch":
        command += ["--latency-wait", "5"]
    return run_measured(command, workdir, env, log, timeout_s)


def require_success(run: Measured, what: str) -> None:
    if run.returncode != 0:
        sys.exit(f"benchmarks: {what} failed (exit {run.returncode}); log {run.log}:\n{run.tail()}")


def plugin_env(service_env: dict[str, str], container: str, status_interval: float, **extra: str) -> dict[str, str]:
    """The environment of a `snakemake --executor azbatch` run: the service's settings plus the run's own."""
    env = {**os.environ, **service_env}
    env["SNAKEMAKE_AZBATCH_STORAGE_CONTAINER"] = container
    env["SNAKEMAKE_AZBATCH_STATUS_INTERVAL"] = str(status_interval)
    # Nodes run `python -m snakemake` from PATH: the benchmark's virtualenv first, as `make bench` arranges.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
