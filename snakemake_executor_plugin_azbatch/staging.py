"""Blob staging: content-addressed uploads with a local hash record, SAS or managed-identity URLs for tasks, and
atomic downloads of what tasks wrote."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobServiceClient,
    ContainerSasPermissions,
    generate_container_sas,
)

from .credentials import explained
from .settings import Config, SettingsError

CAS_DIR = "cas/sha256/"
RECORD_VERSION = 2
_HASH_CHUNK = 4 * 1024 * 1024
_SIG_RE = re.compile(r"(sig=)[^&\s'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide SAS signatures in anything that may be logged."""
    return _SIG_RE.sub(r"\1REDACTED", str(text))


class StagingError(Exception):
    """A staging problem; the message is one line without secrets."""


def retry_kwargs() -> dict:
    # azure-core retries 408/429/500/502/503/504 and honours Retry-After.
    return {"retry_total": 10, "retry_backoff_factor": 0.5, "retry_backoff_max": 30}


def make_blob_service(config: Config, credential_factory) -> BlobServiceClient:
    if config.storage_connection_string:
        try:
            return BlobServiceClient.from_connection_string(config.storage_connection_string, **retry_kwargs())
        except ValueError:
            raise SettingsError(
                "azbatch: --azbatch-storage-connection-string (or SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING / "
                "AZURE_STORAGE_CONNECTION_STRING) could not be parsed; copy it from "
                "`az storage account show-connection-string`"
            ) from None
    credential = config.storage_account_key or credential_factory()
    return BlobServiceClient(config.storage_account_url, credential=credential, **retry_kwargs())


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


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Staging:
    def __init__(self, config: Config, credential_factory, record_dir: Path, logger):
        self.config = config
        self.logger = logger
        self.prefix = config.storage_prefix
        self.service = make_blob_service(config, credential_factory)
        self.container = self.service.get_container_client(config.storage_container)
        self.identity = {"resourceId": config.managed_identity} if config.managed_identity else None
        key = f"{self.service.url.rstrip('/')}/{config.storage_container}/{self.prefix}"
        self.record = StagingRecord(record_dir / "staging-record.json", key)
        self._cas: set[str] | None = None
        self._cas_lock = threading.Lock()
        self._read_sas: str | None = None
        self._write_sas: str | None = None
        self.pool = ThreadPoolExecutor(max_workers=config.upload_concurrency, thread_name_prefix="azbatch-staging")

    # ---- preflight -------------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """The container is reachable (created when missing) and SAS URLs can be made."""
        where = f"container {self.config.storage_container!r} at {self.service.url}"
        keyed = bool(self.config.storage_account_key or self.config.storage_connection_string)
        try:
            with explained(f"storage {self.service.url}", keyed=keyed):
                self.container.get_container_properties()
        except SettingsError:
            raise
        except ResourceNotFoundError:
            try:
                self.container.create_container()
                self.logger.info(f"azbatch: created storage {where}")
            except ResourceExistsError:
                pass
            except HttpResponseError as e:
                raise SettingsError(
                    f"azbatch: storage {where} does not exist and cannot be created ({e.status_code}); create it "
                    "or set --azbatch-storage-container to an existing one"
                ) from None
        except HttpResponseError as e:
            if isinstance(e, ClientAuthenticationError) and e.response is None:
                raise SettingsError(
                    f"azbatch: no Microsoft Entra ID credential for storage {self.service.url}; run `az login` or "
                    "set --azbatch-storage-account-key / --azbatch-storage-connection-string"
                ) from None
            if isinstance(e, ClientAuthenticationError) or e.status_code in (401, 403):
                raise SettingsError(
                    f"azbatch: access to storage {where} denied ({e.status_code}); check "
                    "--azbatch-storage-account-key / --azbatch-storage-connection-string, or for Entra ID the "
                    "role assignment (Storage Blob Data Contributor) of your identity"
                ) from None
            raise SettingsError(f"azbatch: storage {where} is not reachable: {redact(e.reason or e)}") from None
        except Exception as e:  # connection errors carry the host only
            raise SettingsError(
                f"azbatch: storage {where} is not reachable ({type(e).__name__}); check "
                "--azbatch-storage-account-url / --azbatch-storage-connection-string"
            ) from None
        if not self.identity:
            self._sas(read=True)

    # ---- URLs --------------------------------------------------------------------------------------------------
    def _sas(self, read: bool) -> str:
        cached = self._read_sas if read else self._write_sas
        if cached:
            return cached
        now = datetime.now(timezone.utc)
        start, expiry = now - timedelta(minutes=15), now + timedelta(hours=self.config.sas_hours)
        permission = (
            ContainerSasPermissions(read=True)
            if read
            else ContainerSasPermissions(read=False, write=True, create=True, add=True)
        )
        credential = self.service.credential
        account_key = getattr(credential, "account_key", None)
        if account_key:
            signing = {"account_key": account_key}
        else:
            try:
                with explained(f"storage {self.service.url}", keyed=False):
                    signing = {"user_delegation_key": self.service.get_user_delegation_key(start, expiry)}
            except HttpResponseError as e:
                raise SettingsError(
                    f"azbatch: cannot get a user-delegation key from {self.service.url} ({e.status_code}); your "
                    "Entra ID identity needs 'Storage Blob Delegator', or set --azbatch-storage-account-key "
                    "or --azbatch-managed-identity"
                ) from None
        sas = generate_container_sas(
            self.service.account_name,
            self.config.storage_container,
            permission=permission,
            start=start,
            expiry=expiry,
            **signing,
        )
        if read:
            self._read_sas = sas
        else:
            self._write_sas = sas
        return sas

    def blob_url(self, blob: str) -> str:
        return f"{self.container.url}/{quote(blob, safe='/')}"

    def read_url(self, blob: str) -> str:
        url = self.blob_url(blob)
        return url if self.identity else f"{url}?{self._sas(read=True)}"

    def output_container_url(self) -> str:
        return self.container.url if self.identity else f"{self.container.url}?{self._sas(read=False)}"

    def resource_file(self, blob: str, node_path: str) -> dict:
        spec = {"httpUrl": self.read_url(blob), "filePath": node_path.replace(os.sep, "/")}
        if self.identity:
            spec["identityReference"] = self.identity
        return spec

    # ---- uploads -----------------------------------------------------------------------------------------------
    def _existing_cas(self) -> set[str]:
        with self._cas_lock:
            if self._cas is None:
                # One paged listing per run tells which contents are already in the container.
                self._cas = {b.name for b in self.container.list_blobs(name_starts_with=self.prefix + CAS_DIR)}
            return self._cas

    def _hash(self, path: str) -> tuple[str, FileState]:
        state = FileState.of(path)
        digest = self.record.known_hash(path, state)
        if digest is None:
            digest = sha256_file(path)
            self.record.remember_hash(path, state, digest)
        return digest, state

    def stage_files(self, paths: Iterable[str]) -> dict[str, str]:
        """Blob name for each local path: the blob a task wrote when the file is unchanged since its download,
        otherwise its content-addressed blob, uploaded (in parallel) only when that content is not stored yet."""
        result: dict[str, str] = {}
        to_hash: list[str] = []
        for path in dict.fromkeys(os.path.abspath(p) for p in paths):
            try:
                state = FileState.of(path)
            except FileNotFoundError:
                raise StagingError(f"azbatch: input file {path} does not exist locally") from None
            produced = self.record.produced_blob(path, state)
            if produced:
                result[path] = produced
            else:
                to_hash.append(path)
        if not to_hash:
            return result
        hashed = list(self.pool.map(self._hash, to_hash))
        existing = self._existing_cas()
        uploads: dict[str, str] = {}  # blob -> one local path with that content
        for path, (digest, _) in zip(to_hash, hashed):
            blob = f"{self.prefix}{CAS_DIR}{digest}"
            result[path] = blob
            if blob not in existing:
                uploads.setdefault(blob, path)
        if uploads:
            list(self.pool.map(lambda item: self._upload(*item), uploads.items()))
            with self._cas_lock:
                existing.update(uploads)
        self.record.save()
        return result

    def _upload(self, blob: str, path: str) -> None:
        try:
            with open(path, "rb") as f:
                self.container.upload_blob(blob, f, overwrite=True, max_concurrency=4)
        except HttpResponseError as e:
            raise StagingError(f"azbatch: uploading {path} failed ({e.status_code}): {redact(e.reason)}") from None

    # ---- downloads ---------------------------------------------------------------------------------------------
    def download_prefix(self, blob_prefix: str, workdir: str, local_base: str = "") -> list[str]:
        """Download every blob under `blob_prefix` to `workdir/local_base/<rest of the name>`, atomically
        (temporary name, size check, rename); record them as produced. Returns the local paths."""
        blobs = [(b.name, b.size) for b in self.container.list_blobs(name_starts_with=blob_prefix)]
        jobs = []
        for name, size in blobs:
            rel = name[len(blob_prefix):]
            parts = [p for p in rel.split("/") if p]
            if not parts or any(p in (".", "..") for p in parts):
                continue
            local = os.path.join(workdir, local_base, *parts)
            jobs.append((name, size, local))
        return list(self.pool.map(lambda item: self._download(*item), jobs))

    def _download(self, blob: str, size: int, local: str) -> str:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(local), f".{os.path.basename(local)}.azbatch-part")
        try:
            with open(tmp, "wb") as f:
                self.container.download_blob(blob, max_concurrency=4).readinto(f)
            got = os.path.getsize(tmp)
            if got != size:
                raise StagingError(f"azbatch: download of {local} is incomplete ({got} of {size} bytes)")
            digest = sha256_file(tmp)
            os.replace(tmp, local)
        except HttpResponseError as e:
            raise StagingError(f"azbatch: downloading {local} failed ({e.status_code}): {redact(e.reason)}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.record.remember_produced(os.path.abspath(local), FileState.of(local), blob, digest)
        return local

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        try:
            self.record.save()
        except OSError:
            pass
