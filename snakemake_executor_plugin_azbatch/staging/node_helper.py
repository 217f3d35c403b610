"""Runs ON THE NODE with the stock image's python3 (standard library only; never imports the plugin).

The job preparation task downloads this file and the run's sources archive, then `prepare` checks the archive's
sha256 (its blob name) and extracts it once per node and Batch job. Each task then runs `link` (symlinks every
extracted file into its working directory, where Snakemake expects the Snakefile and scripts) and, when its inputs
travel in a manifest, `fetch` (downloads the listed blobs, each checked against its sha256)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

CHUNK = 1024 * 1024
FETCH_THREADS = 8
READ_URL_VARIABLE = "AZBATCH_BLOB_READ_URL"  # container URL + read SAS, set by the plugin for manifest tasks


def fail(message: str) -> None:
    print(f"azbatch node: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(archive: str, expected: str, dest: str) -> None:
    """Extract `archive` into `dest` once; a rerun (node reboot, retry) with the same archive does nothing."""
    marker = os.path.join(dest, f".azbatch-complete-{expected}")
    if os.path.exists(marker):
        return
    actual = sha256_of(archive)
    if actual != expected:
        fail(f"sources archive {archive} has sha256 {actual}, expected {expected}; the blob was altered or cut short")
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sources-", dir=parent)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:  # what the 'data' filter refuses, checked by hand for Pythons without it
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                fail(f"sources archive entry {member.name!r} is not a plain relative file")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, members=members, filter="data")
        else:
            tar.extractall(tmp, members=members)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    open(marker, "w").close()


def link(roots: list[str], workdir: str = ".") -> None:
    """Symlink every file below each root into `workdir` (directories are created, never linked, so what a task
    writes stays in its own directory); a file already there (an input) wins."""
    for root in roots:
        if not os.path.isdir(root):
            continue
        for current, dirs, files in os.walk(root):
            rel = os.path.relpath(current, root)
            target_dir = os.path.normpath(os.path.join(workdir, rel))
            os.makedirs(target_dir, exist_ok=True)
            for name in files:
                if name.startswith(".azbatch-complete-"):
                    continue
                target = os.path.join(target_dir, name)
                if not os.path.lexists(target):
                    os.symlink(os.path.join(current, name), target)


def _fetch_one(base: str, query: str, entry: list) -> None:
    node_path, blob, expected = entry
    url = f"{base}/{urllib.parse.quote(blob, safe='/')}" + (f"?{query}" if query else "")
    os.makedirs(os.path.dirname(node_path) or ".", exist_ok=True)
    tmp = f"{node_path}.azbatch-part"
    digest = hashlib.sha256()
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
                digest = hashlib.sha256()
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            break
        except OSError as e:
            if attempt == 2:
                fail(f"downloading input {node_path} failed: {type(e).__name__} {getattr(e, 'code', '')}".strip())
    if digest.hexdigest() != expected:
        os.unlink(tmp)
        fail(f"input {node_path} has sha256 {digest.hexdigest()}, expected {expected}; the blob changed")
    os.replace(tmp, node_path)


def fetch(manifest_path: str) -> None:
    """Download every [node path, blob name, sha256] of the manifest (whose own name is its sha256)."""
    expected = os.path.basename(manifest_path).split(".")[0]
    if sha256_of(manifest_path) != expected:
        fail(f"input manifest {manifest_path} does not match its sha256 name")
    with open(manifest_path) as f:
        entries = json.load(f)["files"]
    read_url = os.environ.get(READ_URL_VARIABLE)
    if not read_url:
        fail(f"{READ_URL_VARIABLE} is not set; the task cannot read its inputs")
    base, _, query = read_url.partition("?")
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        for _ in pool.map(lambda e: _fetch_one(base.rstrip("/"), query, e), entries):
            pass


def record_empty_dirs(record_file: str, roots: list[str]) -> None:
    """Write `record_file`: JSON listing the empty directories (leaves) at or below each root, a task's
    `directory()` outputs, which the node agent's file patterns cannot upload; the plugin recreates them."""
    empty = []
    for root in roots:
        for current, dirs, files in os.walk(root):
            if not dirs and not files:
                empty.append(os.path.normpath(current).replace(os.sep, "/"))
    with open(record_file, "w") as f:
        json.dump({"version": 1, "dirs": sorted(empty)}, f, separators=(",", ":"))


def main(argv: list[str]) -> None:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "prepare" and len(args) == 3:
        prepare(*args)
    elif command == "link":
        here = os.path.dirname(os.path.abspath(__file__))
        link(args or [os.path.join(here, "sources"), os.path.join(here, "extra")])
    elif command == "fetch" and len(args) == 1:
        fetch(args[0])
    elif command == "empty-dirs" and args:
        record_empty_dirs(args[0], args[1:])
    else:
        fail("usage: node_helper.py prepare ARCHIVE SHA256 DEST | link [ROOT...] | fetch MANIFEST "
             "| empty-dirs RECORD DIR...")


if __name__ == "__main__":
    main(sys.argv[1:])
