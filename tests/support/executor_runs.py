"""Helpers for the executor integration tests: run `snakemake --executor azbatch` as a subprocess against a local
service, and read request/byte counts from its metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    return root


def snakemake_env(service, container: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, **service.env}
    env["SNAKEMAKE_AZBATCH_STORAGE_CONTAINER"] = container
    env["SNAKEMAKE_AZBATCH_STATUS_INTERVAL"] = "0.5"
    env.update(extra)
    return env


def snakemake_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--executor", "azbatch", "--jobs", "20", "--latency-wait", "2", *args]


def run_snakemake(service, workdir: Path, *args: str, container: str, timeout: float = 180, **extra_env: str):
    return subprocess.run(
        snakemake_command(*args),
        cwd=workdir,
        env=snakemake_env(service, container, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kept_jobs(client, label: str) -> list:
    """The Batch jobs a run in working directory `label` created (kept with SNAKEMAKE_AZBATCH_KEEP_JOB)."""
    return [j for j in client.list_jobs() if j.id.startswith(f"sm-{label}-")]


def output_of(result) -> str:
    return f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def count(metrics: dict[str, Any], section: str, name: str, field: str = "count") -> int:
    return int(metrics.get(section, {}).get(name, {}).get(field, 0))


def delta(before: dict, after: dict, section: str, name: str, field: str = "count") -> int:
    return count(after, section, name, field) - count(before, section, name, field)


def total(metrics: dict[str, Any], section: str) -> int:
    return sum(int(op.get("count", 0)) for op in metrics.get(section, {}).values())


def bootstrap_bytes(offline_python: str | None = None, node_packages: tuple[str, ...] = ()) -> int:
    """Bytes the bootstrap stages once per storage container: none for the default (pip) bootstrap, whose nodes
    fetch uv from the package index; uv's wheel and the offline wheelhouse for `offline_python`, as cached on this
    machine."""
    from snakemake_executor_plugin_azbatch.node_software import wheelhouse

    if offline_python is None:
        return 0
    import snakemake

    cache = wheelhouse.cache_root()
    files = [wheelhouse.uv_wheel(cache, wheelhouse.uv_version())]
    files += wheelhouse.wheelhouse(cache, snakemake.__version__, offline_python, node_packages)
    return sum(f.stat().st_size for f in files)


def upload_bytes(metrics: dict[str, Any]) -> int:
    return sum(count(metrics, "storage", op, "requestBytes") for op in ("PutBlob", "PutBlock"))


def download_bytes(metrics: dict[str, Any]) -> int:
    return count(metrics, "storage", "GetBlob", "responseBytes")
