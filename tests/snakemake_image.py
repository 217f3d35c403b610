"""A container image for `--azbatch-bootstrap container` tests: the stock node image plus this run's exact Snakemake,
built locally with `podman build` (no registry: the base is the stock image imported into the cached podman store,
the wheels come from the plugin's offline wheelhouse built on this machine, installed with uv without an index).

Cached by content key: the tag `localhost/azbatch-snakemake:<key12>` hashes the base image, the Containerfile, the
Snakemake and uv versions and the wheelhouse's files, so a test session (and CI's one run) builds it once and a
changed input builds a new one (older tags are removed). The image carries `/etc/azbatch-test-image` holding its
key: a task that can read it ran in this image, not on the node (the stock node image has no such file and no
Snakemake).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from snakemake_executor_plugin_azbatch.bootstrap import wheelhouse
from snakemake_executor_plugin_azbatch.local import containers, node_image

REPOSITORY = "localhost/azbatch-snakemake"
MARKER = "/etc/azbatch-test-image"
VENV = "/opt/snakemake"
CONTAINERFILE = """\
FROM {base}
ENV PATH={venv}/bin:{node_path}
RUN /uv/uv venv --quiet --no-python-downloads --python /usr/bin/python3 {venv} \\
 && /uv/uv pip install --quiet --no-cache --no-index --find-links /wheels --python {venv}/bin/python \\
      snakemake=={version} \\
 && echo {key} > {marker}
"""


def _key(base: str, version: str, uv: str, wheels: list[Path]) -> str:
    digest = hashlib.sha256()
    for part in (base, version, uv, CONTAINERFILE, *sorted(w.name for w in wheels)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def build(engine: containers.PodmanEngine, image: node_image.NodeImage, snakemake_version: str) -> str:
    """The image's reference, built now unless the store already holds it (a few seconds from cached wheels)."""
    base = node_image.import_into_podman(image, engine)
    python = ".".join(image.packages["python3"].split(".")[:2])  # Debian's python3 version, e.g. 3.13.5-1
    wheels = wheelhouse.wheelhouse(wheelhouse.cache_root(), snakemake_version, python)
    uv = wheelhouse.uv_version()
    key = _key(base, snakemake_version, uv, wheels)
    reference = f"{REPOSITORY}:{key}"
    engine.prepare()
    with open(engine.store / "snakemake-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build finishes first; we then find its image
        if not engine.image_exists(reference):
            _build(engine, reference, key, base, snakemake_version, wheels)
            _remove_other_tags(engine, reference)
    return reference


def _build(engine, reference: str, key: str, base: str, version: str, wheels: list[Path]) -> None:
    from uv import find_uv_bin

    with tempfile.TemporaryDirectory(prefix="azbatch-snakemake-image-") as context:
        uv_dir = Path(context) / "uv"
        uv_dir.mkdir()
        shutil.copy2(find_uv_bin(), uv_dir / "uv")  # uv for this machine's platform, which is the nodes' (x86_64)
        containerfile = Path(context) / "Containerfile"
        containerfile.write_text(CONTAINERFILE.format(
            base=base, venv=VENV, node_path=node_image.NODE_PATH, version=version, key=key, marker=MARKER))
        argv = engine.argv(
            "build", "--quiet", "--pull=never", "--network", "none", "--tag", reference,
            "--volume", f"{wheels[0].parent}:/wheels:ro", "--volume", f"{uv_dir}:/uv:ro",
            "--file", str(containerfile), context,
        )  # fmt: skip
        proc = subprocess.run(argv, env=engine.env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"podman build of {reference} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")


def _remove_other_tags(engine, keep: str) -> None:
    listed = subprocess.run(engine.argv("images", "--format", "{{.Repository}}:{{.Tag}}", REPOSITORY),
                            env=engine.env(), capture_output=True, text=True)
    old = [ref for ref in listed.stdout.split() if ref != keep and ref.startswith(REPOSITORY + ":")]
    if old:
        subprocess.run(engine.argv("rmi", "--force", *old), env=engine.env(), capture_output=True)
