"""The local staging record (`.snakemake/azbatch/staging-record.json`): file hashes by size, mtime, ctime and inode,
and the blobs tasks wrote, so unchanged files are not re-hashed and downloaded outputs are referenced in place."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import astuple, dataclass
from pathlib import Path

# One hashing routine for both sides: the node helper is standard-library only, so the plugin may use it too.
from .node_helper import sha256_of as sha256_file

# 3: ctime and inode joined size and mtime; records of older versions are dropped, so every file is hashed again.
RECORD_VERSION = 3


@dataclass(frozen=True)
class FileState:
    """What must all be unchanged for a recorded hash to be trusted. mtime alone is not enough: `cp -p`,
    `rsync -t` and tools that restore mtimes write new content under the old mtime, but they cannot keep the
    ctime (set by the kernel on every write or utime) nor, when they write a new file and rename it, the inode."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: str) -> "FileState":
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def key(self) -> list[int]:
        return list(astuple(self))


_STATE_FIELDS = 4  # an entry is the state's key, then what is recorded for it


class StagingRecord:
    """Local record (JSON) of file hashes and of blobs tasks wrote, so unchanged files are not re-hashed and
    outputs read by later tasks are referenced in place."""

    def __init__(self, path: Path, container_key: str):
        self.path = path
        self.container_key = container_key
        self.lock = threading.Lock()
        self.hashes: dict[str, list] = {}  # abs path -> [*state, sha256]
        # container key -> abs path -> [*state, blob name, sha256]; blobs only make sense in their container.
        self.produced_by_container: dict[str, dict[str, list]] = {}
        try:
            data = json.loads(path.read_text())
            if data.get("version") == RECORD_VERSION:
                self.hashes = data.get("hashes", {})
                self.produced_by_container = data.get("produced", {})
        except (OSError, ValueError):
            pass  # no or unreadable record: files are hashed again
        self.produced = self.produced_by_container.setdefault(container_key, {})

    def known_hash(self, path: str, state: FileState) -> str | None:
        entry = self.hashes.get(path)
        if entry and entry[:_STATE_FIELDS] == state.key():
            return entry[_STATE_FIELDS]
        return None

    def remember_hash(self, path: str, state: FileState, digest: str) -> None:
        with self.lock:
            self.hashes[path] = [*state.key(), digest]

    def produced_blob(self, path: str, state: FileState) -> str | None:
        """The blob a task wrote for this file, if the file is unchanged since it was downloaded. Snakemake may
        touch outputs after a job (same content, new mtime and ctime): then the content hash decides."""
        entry = self.produced.get(path)
        if not entry or entry[0] != state.size:
            return None
        blob, digest = entry[_STATE_FIELDS:]
        if entry[:_STATE_FIELDS] == state.key():
            return blob
        if sha256_file(path) == digest:
            with self.lock:
                self.produced[path] = [*state.key(), blob, digest]
                self.hashes[path] = [*state.key(), digest]
            return blob
        return None

    def produced_digest(self, path: str, blob: str) -> str | None:
        """sha256 recorded at download for `blob`, the blob a task wrote for `path`."""
        entry = self.produced.get(path)
        if entry and entry[_STATE_FIELDS] == blob:
            return entry[_STATE_FIELDS + 1]
        return None

    def remember_produced(self, path: str, state: FileState, blob: str, digest: str) -> None:
        with self.lock:
            self.produced[path] = [*state.key(), blob, digest]
            self.hashes[path] = [*state.key(), digest]

    def drop_other_containers(self) -> None:
        """Forget blobs written into other containers (earlier runs'): they are never read again."""
        with self.lock:
            self.produced_by_container = {self.container_key: self.produced}

    def forget(self, path: str) -> None:
        """Forget the hash and any produced blob of `path`: it is hashed again at its next staging."""
        with self.lock:
            self.produced.pop(path, None)
            self.hashes.pop(path, None)

    def save(self) -> None:
        with self.lock:
            data = {"version": RECORD_VERSION, "hashes": self.hashes, "produced": self.produced_by_container}
            text = json.dumps(data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
