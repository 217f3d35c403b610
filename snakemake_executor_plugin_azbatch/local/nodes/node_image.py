"""The stock node image: a Debian root filesystem that behaves like a stock Azure Batch Linux node.

Stock Batch marketplace images (Ubuntu 22.04/24.04) have `python3`, CA certificates and curl, and no `venv`
module (no ensurepip), no pip and no Snakemake. The image built here is the same kind of system:
`debootstrap --variant=minbase` of Debian stable (pinned: `trixie`, Debian 13) from Debian's own mirror with
exactly `python3 ca-certificates curl` added, plus the non-admin task user `_azbatch` (uid/gid 1000) that Batch
runs tasks as (`AZ_BATCH_TASK_USER=_azbatch`, identity `PoolNonAdmin`); admin-elevated tasks run as root.

Layout of an image directory DIR (default `.azbatch-local/cache/node-image`):
    DIR/image.json            the stamp: recipe key, task user, size, build time, package versions, content digest
    DIR/rootfs-<key12>/       the root filesystem (never modified after the build; nodes overlay it)
    DIR/build.log             debootstrap's output of the last build

Cached: `build()` returns at once when image.json carries the recipe's key and its rootfs exists. The key hashes the
recipe (suite, mirror, packages, user, SOURCE_DATE_EPOCH, RECIPE_REVISION), so a changed recipe rebuilds.
Reproducible: pinned suite and package list, no apt lists/caches/logs, host-specific files (hostname, resolv.conf)
reset, every mtime clamped to SOURCE_DATE_EPOCH; `contentDigest` in image.json covers paths, modes, owners, mtimes,
link targets and file contents, so two builds against the same mirror state can be compared. (Package versions follow
Debian's point releases; image.json lists them.)
Atomic: the build happens in DIR/.build-*, is renamed into place, then the stamp is replaced; a lock serialises
concurrent builds of one DIR (the second waits, then finds the image built).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUITE = "trixie"  # Debian 13, Debian stable since 2025-08-09
DEFAULT_MIRROR = "http://deb.debian.org/debian"  # the mirror apt uses on Debian hosts (and on this project's CI)
PACKAGES = ("python3", "ca-certificates", "curl")
# What a stock Batch image lacks; checked after every build so the image can never become friendlier by accident.
ABSENT_PACKAGES = ("python3-venv", "python3-pip", "python3-virtualenv", "snakemake")
TASK_USER = "_azbatch"
TASK_UID = 1000
TASK_GID = 1000
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # PATH of a Batch task on Linux
SOURCE_DATE_EPOCH = 1754697600  # 2025-08-09T00:00:00Z, Debian 13's release day
RECIPE_REVISION = 1  # bump when the build steps below change what ends up in the image
STAMP = "image.json"
PODMAN_REPOSITORY = "localhost/azbatch-node"

# Host-specific or run-specific leftovers of debootstrap that must not end up in a reproducible image.
_REMOVED = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "etc/*-",  # passwd-, group-, shadow-, gshadow- backups written by useradd
)
_TRUNCATED_LOGS = ("var/log",)


class NodeImageError(RuntimeError):
    """The image cannot be built or used: the message is one actionable line."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content; its `key()` names a build."""

    suite: str = SUITE
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = PACKAGES
    task_user: str = TASK_USER
    task_uid: int = TASK_UID
    task_gid: int = TASK_GID
    source_date_epoch: int = SOURCE_DATE_EPOCH
    revision: int = RECIPE_REVISION

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class NodeImage:
    """A built image, as recorded in DIR/image.json."""

    directory: Path
    rootfs: Path
    key: str
    recipe: Recipe
    size_bytes: int
    build_seconds: float
    content_digest: str
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def task_uid(self) -> int:
        return self.recipe.task_uid

    @property
    def task_gid(self) -> int:
        return self.recipe.task_gid

    @property
    def task_user(self) -> str:
        return self.recipe.task_user

    @property
    def podman_reference(self) -> str:
        """The local podman image name `import_into_podman` gives this image."""
        return f"{PODMAN_REPOSITORY}:{self.key[:12]}"


def missing_packages() -> list[str]:
    """Debian packages this module needs that are not installed (empty when building can work)."""
    return [] if shutil.which("debootstrap") else ["debootstrap"]


def default_directory(root: Path) -> Path:
    """Where a service root keeps the cached image: ROOT/cache/node-image."""
    return Path(root) / "cache" / "node-image"


def load(directory: Path) -> NodeImage:
    """The image recorded in DIR/image.json; NodeImageError when there is none (build it first)."""
    directory = Path(directory).absolute()
    stamp = directory / STAMP
    try:
        data = json.loads(stamp.read_text())
        recipe_fields = dict(data["recipe"])
        recipe_fields["packages"] = tuple(recipe_fields["packages"])
        recipe = Recipe(**recipe_fields)
        image = NodeImage(
            directory=directory,
            rootfs=directory / data["rootfs"],
            key=data["key"],
            recipe=recipe,
            size_bytes=int(data["sizeBytes"]),
            build_seconds=float(data["buildSeconds"]),
            content_digest=data["contentDigest"],
            packages=dict(data.get("packages") or {}),
        )
    except FileNotFoundError:
        raise NodeImageError(
            f"no node image in {directory}: run `azbatch-local node-image build {directory}` first"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise NodeImageError(f"{stamp}: unreadable ({exc}); rebuild with `azbatch-local node-image build`") from None
    if recipe.key() != image.key or not (image.rootfs / "usr" / "bin" / "python3").exists():
        raise NodeImageError(f"{directory}: the image is incomplete; rebuild with `azbatch-local node-image build`")
    return image


def build(
    directory: Path, recipe: Recipe | None = None, *, log: Callable[[str], None] | None = None
) -> NodeImage:
    """Build the image in DIR (or return the cached one when DIR already holds this recipe's build)."""
    recipe = recipe or Recipe()
    directory = Path(directory).absolute()
    say = log or (lambda line: None)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build of the same DIR finishes first; we then reuse it
        cached = _cached(directory, recipe)
        if cached is not None:
            say(f"node image {cached.key[:12]} is up to date in {directory}")
            return cached
        _check_can_build()
        return _build_locked(directory, recipe, say)


def _cached(directory: Path, recipe: Recipe) -> NodeImage | None:
    try:
        image = load(directory)
    except NodeImageError:
        return None
    return image if image.key == recipe.key() else None


def _check_can_build() -> None:
    if missing_packages():
        raise NodeImageError("node-image build needs debootstrap: install the Debian package `debootstrap`")
    if os.geteuid() != 0:
        raise NodeImageError("node-image build needs root (debootstrap creates device files, chroot): run it as root")


def _build_locked(directory: Path, recipe: Recipe, say: Callable[[str], None]) -> NodeImage:
    key = recipe.key()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=directory))
    try:
        rootfs = work / "rootfs"
        say(f"debootstrap {recipe.suite} ({', '.join(recipe.packages)}) from {recipe.mirror} ...")
        _debootstrap(rootfs, recipe, directory / "build.log")
        _configure(rootfs, recipe)
        packages = _installed_packages(rootfs, recipe)
        _make_reproducible(rootfs, recipe.source_date_epoch)
        digest, size = content_digest(rootfs)
        final = directory / f"rootfs-{key[:12]}"
        if final.exists():  # a half-finished earlier build of the same recipe
            shutil.rmtree(final)
        rootfs.rename(final)
        seconds = round(time.monotonic() - started, 1)
        record = {
            "key": key,
            "rootfs": final.name,
            "recipe": asdict(recipe),
            "sizeBytes": size,
            "buildSeconds": seconds,
            "contentDigest": digest,
            "packages": packages,
        }
        _write_atomically(directory / STAMP, json.dumps(record, indent=2, sort_keys=True) + "\n")
        for old in directory.glob("rootfs-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    image = load(directory)
    say(f"node image {key[:12]} built in {seconds:.0f} s: {size / 1e6:.0f} MB in {final}")
    return image


def _debootstrap(rootfs: Path, recipe: Recipe, log_path: Path) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        "--components=main",
        recipe.suite,
        str(rootfs),
        recipe.mirror,
    ]
    with open(log_path, "wb") as log_file:
        proc = subprocess.run(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_build_env(recipe)
        )
    if proc.returncode != 0:
        tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
        raise NodeImageError(
            f"debootstrap {recipe.suite} from {recipe.mirror} failed (exit {proc.returncode}): "
            f"{tail[0] if tail else 'no output'} (full log: {log_path})"
        )


def _build_env(recipe: Recipe) -> dict[str, str]:
    return {
        "PATH": NODE_PATH,
        "LC_ALL": "C",
        "DEBIAN_FRONTEND": "noninteractive",
        "SOURCE_DATE_EPOCH": str(recipe.source_date_epoch),
    }


def _chroot(rootfs: Path, recipe: Recipe, *argv: str) -> str:
    proc = subprocess.run(
        ["chroot", str(rootfs), *argv], capture_output=True, text=True, env=_build_env(recipe), stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise NodeImageError(f"node image: `{' '.join(argv)}` failed in the new root filesystem: {detail[0]}")
    return proc.stdout


def _configure(rootfs: Path, recipe: Recipe) -> None:
    """The task user, and neutral values for files debootstrap copies from the build host."""
    _chroot(rootfs, recipe, "groupadd", "--gid", str(recipe.task_gid), recipe.task_user)
    _chroot(
        rootfs, recipe, "useradd", "--uid", str(recipe.task_uid), "--gid", str(recipe.task_gid),
        "--create-home", "--shell", "/bin/bash", recipe.task_user,
    )  # fmt: skip
    (rootfs / "etc" / "hostname").write_text("localhost\n")
    resolv = rootfs / "etc" / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("")  # nodes get the host's resolver bound over it at run time (or none when local-only)


def _installed_packages(rootfs: Path, recipe: Recipe) -> dict[str, str]:
    listing = _chroot(rootfs, recipe, "dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n")
    packages = {}
    for line in listing.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status.startswith("ii"):
            packages[name] = version
    present = [name for name in ABSENT_PACKAGES if name in packages]
    if present:
        raise NodeImageError(f"node image: {', '.join(present)} got installed, but a stock Batch node lacks them")
    return packages


def _make_reproducible(rootfs: Path, epoch: int) -> None:
    for pattern in _REMOVED:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for relative in _TRUNCATED_LOGS:
        for path in (rootfs / relative).rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.write_bytes(b"")
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            if os.lstat(path).st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)


def content_digest(rootfs: Path) -> tuple[str, int]:
    """(sha256 over every entry's path, type, mode, owner, mtime, link target and content; bytes of regular files)."""
    digest = hashlib.sha256()
    total = 0
    seen_inodes: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in sorted(filenames) + [""]:
            path = os.path.join(dirpath, name) if name else dirpath
            info = os.lstat(path)
            relative = os.path.relpath(path, rootfs)
            header = f"{relative}\0{info.st_mode:o}\0{info.st_uid}:{info.st_gid}\0{int(info.st_mtime)}\0"
            digest.update(header.encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                if (info.st_dev, info.st_ino) not in seen_inodes:
                    seen_inodes.add((info.st_dev, info.st_ino))
                    total += info.st_size
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
            digest.update(b"\n")
    return digest.hexdigest(), total


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def import_into_podman(image: NodeImage, engine) -> str:
    """`engine` is a `containers.PodmanEngine` (not imported: containers builds on this module). Make the image a local podman image (no registry involved); returns its reference. Idempotent."""
    reference = image.podman_reference
    if engine.image_exists(reference):
        return reference
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--sort=name", "-C", str(image.rootfs), "-c", "."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert tar.stdout is not None
    proc = subprocess.run(
        engine.argv("import", "--quiet", "--change", f"ENV PATH={NODE_PATH}", "-", reference),
        stdin=tar.stdout, capture_output=True, text=True, env=engine.env(),
    )  # fmt: skip
    tar.stdout.close()
    tar_err = tar.communicate()[1]
    if tar.returncode != 0 or proc.returncode != 0:
        detail = (proc.stderr.strip() or tar_err.decode(errors="replace").strip()).splitlines()[-1:] or ["no output"]
        raise NodeImageError(f"podman import of {image.rootfs} as {reference} failed: {detail[0]}")
    return reference
