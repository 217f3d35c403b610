"""The run's sources (Snakefile, included files, scripts, configs, environment files, local extra resource files) as
ONE deterministic tar.gz: sorted entries, fixed mtime/owner, normalised modes, gzip without name or time. The same
sources give the same bytes, hence the same content-addressed blob, so an unchanged workflow uploads nothing and
each node extracts it once per Batch job (job preparation task) instead of every task downloading every source."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import node_commands

FIXED_MTIME = 0


def _info(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(files: Iterable[tuple[str, str]], dest: Path) -> Path:
    """Write (local path, node path) pairs to `dest` (a later pair for the same node path wins); returns `dest`.
    Node paths are relative to the task working directory, '/'-separated."""
    by_name: dict[str, str] = {}
    for local, node_path in files:
        by_name[node_path.replace(os.sep, "/")] = local
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME, compresslevel=6) as zipped:
            with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(by_name):
                    local = by_name[name]
                    with open(local, "rb") as f:
                        data = f.read()
                    info = _info(name, len(data), os.access(local, os.X_OK))
                    tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, dest)
    return dest


@dataclass(frozen=True)
class PreparedSources:
    """What the job preparation task needs for the run's sources: its resource files and its script part."""

    archive_sha256: str
    resource_files: list[dict]
    script: str


def stage_sources(
    staging, archive_path: Path, files: list[tuple[str, str]], url_files: list[tuple[str, str]]
) -> PreparedSources:
    """Archive (local path, node path) `files`, upload archive and node helper content-addressed (nothing when
    already stored) and describe the preparation task's downloads; `url_files` are (URL, node path) pairs that
    Batch downloads once per node into the extra directory."""
    write_archive(files, archive_path)
    helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_helper.py")
    blobs = staging.stage_files([str(archive_path), helper])
    archive_blob = blobs[os.path.abspath(archive_path)]
    digest = staging.content_digest(str(archive_path), archive_blob)
    resource_files = [
        staging.resource_file(blobs[helper], node_commands.helper_file_path()),
        staging.resource_file(archive_blob, node_commands.archive_file_path()),
    ]
    resource_files += [{"httpUrl": url, "filePath": node_commands.extra_file_path(node)} for url, node in url_files]
    return PreparedSources(digest, resource_files, node_commands.sources_preparation_script(digest))
