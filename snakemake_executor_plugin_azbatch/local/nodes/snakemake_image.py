"""A container image for container pools of the local service (`--azbatch-bootstrap container`): the stock node image
plus one exact Snakemake version, built with `podman build` without a registry or a network (the base is the stock
image imported into the podman store; the wheels come from the offline wheelhouse the plugin builds for its nodes,
installed with uv without an index). `azbatch-local snakemake-image build` and the tests share it.

Cached by content: the tag `localhost/azbatch-snakemake:<key12>` hashes the base image, the Containerfile, the
Snakemake and uv versions and the wheelhouse's files, so a second build returns at once and a changed input builds a
new image (older tags are removed). The image carries `/etc/azbatch-snakemake-image` holding its key: a task that can
read it ran in this image, not on the node (the stock node image has no such file and no Snakemake).

The wheels come from `node_software.wheelhouse`, which both wings share (it imports neither), so the image holds
exactly the wheels the plugin's `offline` bootstrap would ship to the nodes.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ...node_software import wheelhouse
from . import node_image
from .containers import PodmanEngine

REPOSITORY = "localhost/azbatch-snakemake"
MARKER = "/etc/azbatch-snakemake-image"
VENV = "/opt/snakemake"
CONTAINERFILE = """\
FROM {base}
ENV PATH={venv}/bin:{node_path}
RUN /uv/uv venv --quiet --no-python-downloads --python /usr/bin/python3 {venv} \\
 && /uv/uv pip install --quiet --no-cache --no-index --find-links /wheels --python {venv}/bin/python \\
      snakemake=={version} \\
 && echo {key} > {marker}
"""


class SnakemakeImageError(Exception):
    """One line: what failed and what to do."""


def _key(base: str, version: str, uv: str, wheels: list[Path]) -> str:
    digest = hashlib.sha256()
    for part in (base, version, uv, CONTAINERFILE, MARKER, *sorted(w.name for w in wheels)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def build(engine: PodmanEngine, image: node_image.NodeImage, snakemake_version: str,
          log=lambda _line: None) -> str:
    """The image's reference, built now unless the store already holds it (a few seconds from cached wheels; the
    first wheelhouse needs the package index once)."""
    base = node_image.import_into_podman(image, engine)
    python = ".".join(image.packages["python3"].split(".")[:2])  # Debian's python3 version, e.g. 3.13.5-1
    try:
        wheels = wheelhouse.wheelhouse(wheelhouse.cache_root(), snakemake_version, python, log=log)
    except wheelhouse.WheelhouseError as exc:
        raise SnakemakeImageError(str(exc)) from None
    uv = wheelhouse.uv_version()
    key = _key(base, snakemake_version, uv, wheels)
    reference = f"{REPOSITORY}:{key}"
    engine.prepare()
    with open(engine.store / "snakemake-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build finishes first; we then find its image
        if not engine.image_exists(reference):
            log(f"building {reference} (Snakemake {snakemake_version} on {base}, no network)")
            _build(engine, reference, key, base, snakemake_version, wheels)
            _remove_other_tags(engine, reference)
    return reference


def _build(engine: PodmanEngine, reference: str, key: str, base: str, version: str, wheels: list[Path]) -> None:
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
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SnakemakeImageError(f"podman build of {reference} failed: {detail[0]}")


def _remove_other_tags(engine: PodmanEngine, keep: str) -> None:
    listed = subprocess.run(engine.argv("images", "--format", "{{.Repository}}:{{.Tag}}", REPOSITORY),
                            env=engine.env(), capture_output=True, text=True)
    old = [ref for ref in listed.stdout.split() if ref != keep and ref.startswith(REPOSITORY + ":")]
    if old:
        subprocess.run(engine.argv("rmi", "--force", *old), env=engine.env(), capture_output=True)


# ---------------------------------------------------------------------------------------- azbatch-local snakemake-image


def add_command(commands, parser_class, default_root: Path) -> None:
    """`azbatch-local snakemake-image build`: the image above, for container pools (`--pool-file` or the tests)."""
    group = commands.add_parser("snakemake-image", help="a Snakemake container image for local container pools")
    actions = group.add_subparsers(dest="action", required=True, parser_class=parser_class)
    build_cmd = actions.add_parser(
        "build",
        help="build the image (cached: instant when the podman store already holds it); prints its reference",
        description="Build a container image for --azbatch-bootstrap container on local container pools: the stock "
        "node image plus Snakemake (default: the version installed here, which runs the workflow) from the "
        "plugin's offline wheelhouse, with podman and no network. Needs what `node-image build --podman` needs "
        "(root, debootstrap, podman); the wheelhouse needs the package index once.",
    )
    build_cmd.add_argument("--snakemake-version", default=None, metavar="VERSION",
                           help="Snakemake version in the image (default: the installed one)")
    build_cmd.add_argument("--node-image", type=Path, default=node_image.default_directory(default_root),
                           metavar="DIR", help=f"stock node image directory, built when missing (default: "
                           f"./{node_image.default_directory(default_root)})")
    build_cmd.add_argument("--podman-store", type=Path, default=None, metavar="DIR",
                           help="podman store to build into (default: 'podman' next to --node-image's DIR, where "
                           "`serve --node-image DIR` takes container pools' images from)")


def run_command(args, prog: str) -> int:
    """Build and print the image's reference; one line and exit 1 on failure."""
    from importlib.metadata import version

    from .containers import missing_packages

    def say(line: str) -> None:
        print(f"{prog} snakemake-image build: {line.removeprefix('azbatch: ')}", file=sys.stderr)

    try:
        missing = missing_packages()
        if missing:
            raise SnakemakeImageError(f"needs {', '.join(missing)}: install the Debian package(s)")
        image = node_image.build(args.node_image, log=say)
        engine = PodmanEngine(args.podman_store or image.directory.parent / "podman")
        reference = build(engine, image, args.snakemake_version or version("snakemake"), log=say)
    except (SnakemakeImageError, node_image.NodeImageError) as exc:
        say(f"error: {exc}")
        return 1
    say(f"podman image {reference} in store {engine.store}")
    print(reference)
    return 0
