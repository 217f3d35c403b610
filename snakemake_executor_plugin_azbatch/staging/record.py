"""The local staging record (`.snakemake/azbatch/staging-record.json`): file hashes by size and mtime, and the
blobs tasks wrote, so unchanged files are not re-hashed and downloaded outputs are referenced in place."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

# One hashing routine for both sides: the node helper is standard-library only, so the plugin may use it too.
from .node_helper import sha256_of as sha256_file

RECORD_VERSION = 2


@dataclass
class FileState:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> "FileState":
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns)


class StagingRecord:
    """Local record (JSON) of file hashes and of blobs tasks wrote, so unchanged files are not re-hashed and
    outputs read by later tasks are referenced in place."""

    def __init__(self, path: Path, container_key: str):
        self.path = path
        self.container_key = container_key
        self.lock = threading.Lock()
        self.hashes: dict[str, list] = {}  # abs path -> [size, mtime_ns, sha256]
        # container key -> abs path -> [size, mtime_ns, blob name]; blobs only make sense in their container.
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
        if entry and entry[0] == state.size and entry[1] == state.mtime_ns:
            return entry[2]
        return None

    def remember_hash(self, path: str, state: FileState, digest: str) -> None:
        with self.lock:
            self.hashes[path] = [state.size, state.mtime_ns, digest]

    def produced_blob(self, path: str, state: FileState) -> str | None:
        """The blob a task wrote for this file, if the file is unchanged since it was downloaded. Snakemake may
        touch outputs after a job (same content, new mtime): then the content hash decides."""
        entry = self.produced.get(path)
        if not entry or entry[0] != state.size:
            return None
        if entry[1] == state.mtime_ns:
            return entry[2]
        if len(entry) > 3 and sha256_file(path) == entry[3]:
            with self.lock:
                entry[1] = state.mtime_ns
            return entry[2]
        return None

    def remember_produced(self, path: str, state: FileState, blob: str, digest: str) -> None:
        with self.lock:
            self.produced[path] = [state.size, state.mtime_ns, blob, digest]
            self.hashes[path] = [state.size, state.mtime_ns, digest]

    def save(self) -> None:
        with self.lock:
            data = {"version": RECORD_VERSION, "hashes": self.hashes, "produced": self.produced_by_container}
            text = json.dumps(data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
