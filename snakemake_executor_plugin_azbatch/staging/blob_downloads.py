"""Downloads of what tasks wrote: atomic (temporary name, size check, rename) and recorded as produced; small blobs
the plugin reads itself; the tails of logs, streamed."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from ..azure_api.azure_sdk import redact, unreachable
from .layout import StagingError
from .log_tails import cut_note
from .record import FileState, StagingRecord, sha256_file

TRANSFER_CONCURRENCY = 4  # parallel blocks per file (blobs.py: BLOCK_SIZE each)


def transfer_error(e: HttpResponseError, what: str) -> Exception:
    """What a failed transfer raises: an unreachable endpoint as it is (the caller waits it out, outage.py),
    anything else as one line naming `what` ("uploading x")."""
    if unreachable(e):
        return e
    return StagingError(f"azbatch: {what} failed ({e.status_code}): {redact(e.reason)}")



class BlobDownloads:
    """Downloads from the container a blob's name belongs to (`container_of`), on the staging thread pool."""

    def __init__(self, container_of: Callable[[str], ContainerClient], pool: ThreadPoolExecutor,
                 record: StagingRecord):
        self.container_of = container_of
        self.pool = pool
        self.record = record

    def download_prefix(self, blob_prefix: str, workdir: str, local_base: str = "") -> list[str]:
        """Download every blob under `blob_prefix` to `workdir/local_base/<rest of the name>`, atomically
        (temporary name, size check, rename); record them as produced. Returns the local paths."""
        blobs = [(b.name, b.size) for b in self.container_of(blob_prefix).list_blobs(name_starts_with=blob_prefix)]
        jobs = []
        for name, size in blobs:
            rel = name[len(blob_prefix):]
            parts = [p for p in rel.split("/") if p]
            if not parts or any(p in (".", "..") for p in parts):
                continue
            local = os.path.join(workdir, local_base, *parts)
            jobs.append((name, size, local))
        return list(self.pool.map(lambda item: self._download(*item), jobs))

    def download_files(
        self, blob_dir: str, files: Iterable[str], directories: Iterable[str], workdir: str, local_base: str = ""
    ) -> list[str]:
        """What a task wrote under `blob_dir`, without listing all of it: each of `files` (workdir-relative) by
        its known blob name, one request each (a missing blob is skipped: an optional log, or a required output
        that output_check then reports), each of `directories` by one listing of its own prefix. Returns the
        local paths written."""
        jobs: list[tuple[str, int | None, str]] = []
        for rel in files:
            rel = os.path.normpath(rel).replace(os.sep, "/")
            jobs.append((f"{blob_dir}/{rel}", None, os.path.join(workdir, local_base, rel)))
        found = list(self.pool.map(lambda item: self._download(*item), jobs))
        for directory in directories:
            rel = os.path.normpath(directory).replace(os.sep, "/")
            found += self.download_prefix(f"{blob_dir}/{rel}/", workdir, os.path.join(local_base, rel))
        return [path for path in found if path]

    def _download(self, blob: str, size: int | None, local: str) -> str | None:
        """`size` None: the blob's size is whatever the service reports, and a missing blob returns None."""
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(local), f".{os.path.basename(local)}.azbatch-part")
        try:
            with open(tmp, "wb") as f:
                try:
                    downloader = self.container_of(blob).download_blob(blob, max_concurrency=TRANSFER_CONCURRENCY)
                except ResourceNotFoundError:
                    if size is None:
                        return None
                    raise
                size = downloader.size if size is None else size
                downloader.readinto(f)
            got = os.path.getsize(tmp)
            if got != size:
                raise StagingError(f"azbatch: download of {local} is incomplete ({got} of {size} bytes)")
            digest = sha256_file(tmp)
            os.replace(tmp, local)
        except HttpResponseError as e:
            raise transfer_error(e, f"downloading {local}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.record.remember_produced(os.path.abspath(local), FileState.of(local), blob, digest)
        return local

    def read_small(self, blob: str, limit: int) -> bytes | None:
        """The content of a small blob the plugin reads itself (never saved as an output); None when it does not
        exist; one line when it is larger than `limit`."""
        try:
            downloader = self.container_of(blob).download_blob(blob)
            if downloader.size > limit:
                raise StagingError(f"azbatch: blob {blob} has {downloader.size} bytes, more than {limit} expected")
            return downloader.readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as e:
            raise transfer_error(e, f"downloading {blob}") from None

    def download_tail(self, blob: str, local: str, limit: int) -> str | None:
        """The last `limit` bytes of `blob` (a log) streamed into `local`, never whole in memory nor on disk; a
        first line says what was left out and where the whole is. None when the blob does not exist. Not recorded
        as produced: a log is no task output."""
        try:
            container = self.container_of(blob)
            size = container.get_blob_client(blob).get_blob_properties().size
        except ResourceNotFoundError:
            return None
        except HttpResponseError as e:
            raise transfer_error(e, f"reading {blob}") from None
        offset = max(0, size - limit)
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = f"{local}.azbatch-part"
        try:
            with open(tmp, "wb") as f:
                if offset:
                    where = (f"blob {blob} in container {container.container_name} (kept only with "
                             "--azbatch-keep-job)")
                    f.write(cut_note(size - offset, size, where))
                if size > offset:
                    container.download_blob(blob, offset=offset, length=size - offset).readinto(f)
            os.replace(tmp, local)
        except HttpResponseError as e:
            raise transfer_error(e, f"downloading {blob}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return local
