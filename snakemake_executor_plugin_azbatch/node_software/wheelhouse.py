"""Files the nodes' bootstrap needs, made on the submitting machine and kept in a local cache, so a later run reuses
them without running pip (and staging, content-addressed, uploads nothing again):

- the uv binary for the nodes: uv's own PyPI wheel for manylinux x86_64, of the same uv version the plugin
  depends on (`pip download`, which also reuses pip's HTTP cache);
- the offline wheelhouse: Snakemake at the run's version and every dependency as wheels for the nodes' Python and
  platform. uv resolves for the target (`uv pip compile --python-version --python-platform`, markers evaluated for
  the node, not this machine), pip downloads exactly those pins (`--no-deps`, binary wheels for the target where
  they exist), and the few dependencies published only as sdists are built here with `pip wheel`; those must be
  pure Python (checked), since they are built for this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Mapping

# The nodes: x86_64 Linux with glibc >= 2.28 (every current Batch Linux image). Older manylinux tags are included
# because pip matches the listed tags only.
NODE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
                  "manylinux1_x86_64", "linux_x86_64")
UV_TARGET = "x86_64-manylinux_2_28"
UV_WHEEL_PLATFORM = "manylinux_2_17_x86_64"
MANIFEST = "manifest.json"

Runner = Callable[..., subprocess.CompletedProcess]


class WheelhouseError(Exception):
    """The submitting machine could not make the nodes' files; the message is one line."""


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snakemake-executor-plugin-azbatch"


def uv_version() -> str:
    try:
        return version("uv")
    except PackageNotFoundError:
        raise WheelhouseError(
            "azbatch: the Python package uv (a dependency of the plugin) is not installed here; reinstall "
            "snakemake-executor-plugin-azbatch"
        ) from None


def _run(run: Runner, argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        result = run(argv, capture_output=True, text=True, **kwargs)
    except OSError as e:
        raise WheelhouseError(f"azbatch: {what} failed: {e}") from None
    if result.returncode != 0:
        if "No module named pip" in (result.stderr or ""):
            raise WheelhouseError(
                f"azbatch: the nodes' bootstrap files are fetched with pip, and {sys.executable} has no pip; install "
                "pip into the environment that runs Snakemake, or use --azbatch-bootstrap container / app-package / none"
            )
        last = (result.stderr or result.stdout or "").strip().splitlines()
        detail = next((line for line in reversed(last) if "ERROR" in line or "error" in line), last[-1] if last else "")
        raise WheelhouseError(f"azbatch: {what} failed: {detail.strip()}")
    return result


def _pip(run: Runner) -> list[str]:
    return [sys.executable, "-m", "pip"]


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished directory into place; another process may have won the race, which is fine."""
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise


def uv_wheel(cache: Path, uv: str, run: Runner = subprocess.run) -> Path:
    """uv's wheel for the nodes, downloaded once into the cache."""
    final = cache / f"uv-{uv}-{UV_WHEEL_PLATFORM}"
    found = sorted(final.glob("uv-*.whl"))
    if found:
        return found[0]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
    _run(run, [*_pip(run), "download", "--quiet", "--no-deps", "--only-binary=:all:", "--platform",
               UV_WHEEL_PLATFORM, "-d", str(tmp), f"uv=={uv}"], f"downloading uv {uv} for the nodes")
    _publish(tmp, final)
    found = sorted(final.glob("uv-*.whl"))
    if not found:
        raise WheelhouseError(f"azbatch: downloading uv {uv} for the nodes gave no wheel")
    return found[0]


def _pure_python(name: str) -> bool:
    return name.endswith("-none-any.whl")


def wheelhouse(cache: Path, snakemake_version: str, python: str, extras: tuple[str, ...] = (),
               run: Runner = subprocess.run, log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Every wheel the nodes need to install Snakemake `snakemake_version` (and `extras`) on Python `python`
    without an index."""
    key = f"snakemake-{snakemake_version}-py{python}-{UV_TARGET}"
    if extras:
        key += "-" + hashlib.sha256("\n".join(sorted(extras)).encode()).hexdigest()[:8]
    final = cache / "wheelhouses" / key
    if (final / MANIFEST).exists():
        manifest = json.loads((final / MANIFEST).read_text())
        return [final / name for name in manifest["files"]]
    log(f"azbatch: building the nodes' offline wheelhouse (Snakemake {snakemake_version}, Python {python}, "
        f"{UV_TARGET}) in {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=key + ".", dir=final.parent))
    try:
        _fill(tmp, [f"snakemake=={snakemake_version}", *extras], python, run)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = json.loads((final / MANIFEST).read_text())
    return [final / name for name in manifest["files"]]


def _fill(directory: Path, requirements: list[str], python: str, run: Runner) -> None:
    from uv import find_uv_bin

    requirement = " ".join(requirements)
    compiled = _run(run, [find_uv_bin(), "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate",
                          "--python-version", python, "--python-platform", UV_TARGET],
                    f"resolving {requirement} for Python {python} on {UV_TARGET}", input="\n".join(requirements) + "\n")
    pins = [line.strip() for line in compiled.stdout.splitlines() if line.strip() and not line.startswith("#")]
    (directory / "requirements.txt").write_text("\n".join(pins) + "\n")
    platforms = [arg for p in NODE_PLATFORMS for arg in ("--platform", p)]
    _run(run, [*_pip(run), "download", "--quiet", "--no-deps", "--prefer-binary", *platforms, "--python-version",
               python, "-r", str(directory / "requirements.txt"), "-d", str(directory)],
         f"downloading the wheels of {requirement} for Python {python}")
    for sdist in [p for p in directory.iterdir() if p.name.endswith((".tar.gz", ".zip"))]:
        built = Path(tempfile.mkdtemp(dir=directory))
        _run(run, [*_pip(run), "wheel", "--quiet", "--no-deps", "-w", str(built), str(sdist)],
             f"building a wheel of {sdist.name}")
        for wheel in built.glob("*.whl"):
            if not _pure_python(wheel.name):
                raise WheelhouseError(
                    f"azbatch: {sdist.name} has no wheel for Python {python} on {UV_TARGET} and is not pure Python; "
                    "use --azbatch-bootstrap pip (nodes with internet) or a container image"
                )
            os.replace(wheel, directory / wheel.name)
        shutil.rmtree(built)
        sdist.unlink()
    files = sorted(p.name for p in directory.glob("*.whl"))
    manifest = {"requirements": requirements, "python": python, "platform": UV_TARGET, "pins": pins,
                "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
