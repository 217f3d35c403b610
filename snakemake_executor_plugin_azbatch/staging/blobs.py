"""Blob staging: content-addressed uploads with a local hash record, SAS or managed-identity URLs for tasks, the
run's own container for what tasks write (run_container.py); downloads in blob_downloads.py."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobServiceClient,
    ExponentialRetry,
)

from ..azure_api.azure_sdk import CONNECT_TIMEOUT_KWARGS, PLUGIN_USER_AGENT, preflight_kwargs, redact
from ..config import Config
from ..settings.executor_settings import SettingsError
from .blob_downloads import TRANSFER_CONCURRENCY, BlobDownloads, transfer_error
from .layout import BlobLayout, StagingError
from .links import LinkSigner
from .record import FileState, StagingRecord, sha256_file
from .run_container import OUTPUT_PERMISSION, READ_PERMISSION, run_container_name
from ..azure_api.credentials import explained

# Files move as parallel block transfers streamed from / into the open file, so memory per file stays about
# TRANSFER_CONCURRENCY x BLOCK_SIZE whatever its size. Blocks above the SDK's 4 MiB + 1 threshold take its streaming
# upload path (no copy of each block); Azure's 50,000 blocks per blob then allow files up to 390 GiB.
BLOCK_SIZE = 8 * 1024 * 1024
TRANSFER_OPTIONS = {
    "max_single_put_size": BLOCK_SIZE,
    "max_block_size": BLOCK_SIZE,
    "max_single_get_size": BLOCK_SIZE,
    "max_chunk_get_size": BLOCK_SIZE,
    "user_agent": PLUGIN_USER_AGENT,  # tells the plugin's requests from the nodes' (azure_sdk)
}


def client_options() -> dict:
    """Transfer sizes, and retries with a short back-off (about 1, 3, 5 s instead of the storage SDK's 15, 18, 24 s;
    a refused or dropped connection is tried again once or twice, a few seconds in all): an outage is then noticed
    within seconds and waited out by the caller (outage.py), saying so, instead of being retried silently for a
    minute and then failing the job."""
    retry = ExponentialRetry(
        initial_backoff=1, increment_base=2, retry_total=5, random_jitter_range=1, retry_connect=1, retry_read=1
    )
    return {"retry_policy": retry, **CONNECT_TIMEOUT_KWARGS, **TRANSFER_OPTIONS}


def _deleted(delete, what: str) -> bool:
    """Run a delete request: True when it deleted, False when there was nothing; other failures as transfer_error."""
    try:
        delete()
    except ResourceNotFoundError:
        return False
    except HttpResponseError as e:
        raise transfer_error(e, what) from None
    return True


def make_blob_service(config: Config, credential_factory) -> BlobServiceClient:
    if config.storage.connection_string:
        try:
            return BlobServiceClient.from_connection_string(config.storage.connection_string, **client_options())
        except ValueError:
            raise SettingsError(
                "azbatch: --azbatch-storage-connection-string (or SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING / "
                "AZURE_STORAGE_CONNECTION_STRING) could not be parsed; copy it from "
                "`az storage account show-connection-string`"
            ) from None
    credential = config.storage.account_key or credential_factory()
    return BlobServiceClient(config.storage.account_url, credential=credential, **client_options())


class Staging:
    """The shared staging container (`container`: content-addressed store, read-only to nodes) and the run's own
    container (`run_container`: what its tasks write; created at the first submission, deleted at the run's end)."""

    def __init__(self, config: Config, credential_factory, record_dir: Path, logger, run_token: str = ""):
        self.config = config
        self.logger = logger
        self.layout = BlobLayout(config.storage.prefix)
        self.service = make_blob_service(config, credential_factory)
        self.container = self.service.get_container_client(config.storage.container)
        self.run_token = run_token or secrets.token_hex(6)
        self.run_container = self.service.get_container_client(self.run_container_name(self.run_token))
        self.run_container_created = False
        self._run_container_lock = threading.Lock()
        self.identity = {"resourceId": config.links.managed_identity} if config.links.managed_identity else None
        key = f"{self.service.url.rstrip('/')}/{self.run_container.container_name}/{self.layout.prefix}"
        self.record = StagingRecord(record_dir / "staging-record.json", key)
        # Blobs earlier runs wrote are never read again (their containers are deleted, and a kept one is writable by
        # that run's task readers): their files go through the content-addressed store.
        self.record.drop_other_containers()
        self._cas: set[str] | None = None
        self._cas_lock = threading.Lock()
        self.links = LinkSigner(self.service, config.links.sas_hours)
        self.pool = ThreadPoolExecutor(max_workers=config.scale.upload_concurrency,
                                       thread_name_prefix="azbatch-staging")
        self.downloads = BlobDownloads(self._container_of, self.pool, self.record)

    @property
    def endpoint(self) -> str:
        """The storage account's blob endpoint, for messages (no query string, hence no SAS)."""
        parts = urlsplit(self.service.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")

    # ---- preflight -------------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """The container is reachable (created when missing) and SAS URLs can be made."""
        where = f"container {self.config.storage.container!r} at {self.service.url}"
        keyed = bool(self.config.storage.account_key or self.config.storage.connection_string)
        try:
            with explained(f"storage {self.service.url}", keyed=keyed):
                self.container.get_container_properties(**preflight_kwargs(storage=True))
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
                    f"azbatch: storage {where} does not exist and cannot be created ({e.status_code}); create it, "
                    "give your identity Storage Blob Data Contributor on the storage account, or set "
                    "--azbatch-storage-container to an existing one"
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

    # ---- the run's own container -------------------------------------------------------------------------------
    def run_container_name(self, run_token: str) -> str:
        return run_container_name(self.config.storage.container, run_token)

    def create_run_container(self) -> None:
        """Create the run's container once (at its first submission): the node agent never creates one."""
        name = self.run_container.container_name
        if self.run_container_created:
            return
        with self._run_container_lock:
            if self.run_container_created:
                return
            try:
                self.run_container.create_container()
            except ResourceExistsError:
                pass
            except HttpResponseError as e:
                raise transfer_error(e, f"creating the run's storage container {name}") from None
            self.run_container_created = True
        self.logger.info(f"azbatch: this run's outputs and logs go to storage container {name}")

    def run_blob_names(self, prefix: str) -> list[str]:
        """Names in the run's container starting with `prefix` (one List Blobs per 5,000); [] before it exists."""
        if not self.run_container_created:
            return []
        return [b.name for b in self.run_container.list_blobs(name_starts_with=prefix)]

    def delete_run_container(self, run_token: str | None = None) -> bool:
        """Delete a run's container (this run's by default, or a dead earlier run's by its token); False when
        there is none. Errors other than not-found are raised (transfer_error)."""
        container = self.run_container if run_token is None else self.service.get_container_client(
            self.run_container_name(run_token))
        return _deleted(container.delete_container, f"deleting storage container {container.container_name}")

    def remove_dead_run_container(self, run_token: str) -> None:
        """A dead earlier run's own container (its tasks' outputs and logs) goes with its jobs; a failure is one
        warning line, as this run does not need it."""
        try:
            if self.delete_run_container(run_token):
                self.logger.info(f"azbatch: deleted storage container {self.run_container_name(run_token)} of the "
                                 f"dead run {run_token}")
        except Exception as e:
            self.logger.warning(f"{e}; the dead run's storage container was left")

    def is_cas(self, blob: str) -> bool:
        return blob.startswith(self.layout.cas_prefix)

    def downloads_for(self, run_token: str | None) -> BlobDownloads:
        """Downloads from this run's container, or (`run_token` of a dead run whose task this run adopted) from
        that run's."""
        if run_token is None or run_token == self.run_token:
            return self.downloads
        return BlobDownloads(lambda blob: self._container_of(blob, run_token), self.pool, self.record, produced=False)

    def _container_of(self, blob: str, run_token: str | None = None):
        """Content-addressed blobs live in the staging container, everything tasks wrote in the run's own (or, for
        a task adopted from a dead run, in that run's: `run_token`)."""
        if self.is_cas(blob):
            return self.container
        if run_token is None or run_token == self.run_token:
            return self.run_container
        return self.service.get_container_client(self.run_container_name(run_token))

    # ---- URLs --------------------------------------------------------------------------------------------------
    def _sas(self, read: bool, container: str | None = None) -> str:
        """Nodes read (`r`) the store and their run's container, and write+create (`cw`) only the latter."""
        if read:
            return self.links.container_sas(container or self.config.storage.container, READ_PERMISSION)
        return self.links.container_sas(self.run_container.container_name, OUTPUT_PERMISSION)

    def blob_url(self, blob: str) -> str:
        return f"{self._container_of(blob).url}/{quote(blob, safe='/')}"

    def read_url(self, blob: str) -> str:
        url = self.blob_url(blob)
        return url if self.identity else f"{url}?{self._sas(True, self._container_of(blob).container_name)}"

    def read_container_url(self) -> str:
        """The store's URL with the read SAS (for a node fetching a manifest's blobs itself)."""
        return f"{self.container.url}?{self._sas(read=True)}"

    def run_read_container_url(self) -> str:
        """The run container's URL with a read SAS (a manifest's entries that earlier tasks of the run wrote)."""
        return f"{self.run_container.url}?{self._sas(True, self.run_container.container_name)}"

    def output_container_url(self) -> str:
        url = self.run_container.url
        return url if self.identity else f"{url}?{self._sas(read=False)}"

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
                self._cas = {b.name for b in self.container.list_blobs(name_starts_with=self.layout.cas_prefix)}
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
            blob = self.layout.cas_blob(digest)
            result[path] = blob
            if blob not in existing:
                uploads.setdefault(blob, path)
        if uploads:
            list(self.pool.map(lambda item: self._upload(*item), uploads.items()))
            with self._cas_lock:
                existing.update(uploads)
        self.record.save()
        return result

    def stage_bytes(self, data: bytes) -> tuple[str, str]:
        """(blob, sha256) of content-addressed `data` (small: manifests), uploaded only when not stored yet."""
        digest = hashlib.sha256(data).hexdigest()
        blob = self.layout.cas_blob(digest)
        existing = self._existing_cas()
        if blob not in existing:
            try:
                self.container.upload_blob(blob, data, overwrite=True)
            except HttpResponseError as e:
                raise transfer_error(e, f"uploading {blob}") from None
            with self._cas_lock:
                existing.add(blob)
        return blob, digest

    def content_digest(self, path: str, blob: str) -> str:
        """sha256 of what `blob` (as returned by stage_files for `path`) holds: its name for content-addressed
        blobs, the digest recorded at download for blobs tasks wrote."""
        if self.is_cas(blob):
            return blob[len(self.layout.cas_prefix):]
        return self.record.produced_digest(os.path.abspath(path), blob) or sha256_file(path)

    def remove_cas_blob(self, blob: str, name_start: bool = False) -> str | None:
        """Delete a content-addressed blob whose content a node found not to match its name (`name_start`: `blob`
        is only the start of its name, as the node's check reports it: one listing finds it), and forget it, so
        the next staging of that content (a retry, the next run) uploads it again. Its name, None if it was gone."""
        if name_start:
            found = [b.name for b in self.container.list_blobs(name_starts_with=blob)]
            if len(found) != 1:
                return None
            blob = found[0]
        with self._cas_lock:
            if self._cas is not None:
                self._cas.discard(blob)
        return blob if _deleted(lambda: self.container.delete_blob(blob), f"removing {blob}") else None

    def forget_file(self, path: str) -> None:
        """A node found the blob staged for `path` changed: its recorded hash (which may be what is wrong) and any
        blob of this run for it are forgotten, so the next staging hashes it again and uses the store."""
        self.record.forget(os.path.abspath(path))

    def _upload(self, blob: str, path: str) -> None:
        try:
            with open(path, "rb") as f:
                self.container.upload_blob(blob, f, overwrite=True, max_concurrency=TRANSFER_CONCURRENCY)
        except HttpResponseError as e:
            raise transfer_error(e, f"uploading {path}") from None

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        try:
            self.record.save()
        except OSError:
            pass
