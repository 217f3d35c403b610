"""Resource-file downloads of the nodes, through the real blob endpoint, and what uploads share with them (clients,
credentials, redaction); the output-file uploads are `blob_uploads.py`'s.

Failure codes are Batch's documented task failure codes (TaskFailureInformationCodes): `BlobNotFound`,
`BlobAccessDenied`, `BlobDownloadMiscError` for resource files and `FileUploadContainerNotFound` /
`FileUploadMiscError` for output files (category usererror: the task completes with result failure). An upload that
fails transiently (connection lost or refused, 408/429/5xx) is retried with back-off 1, 2, 4, 8, 8, ... s while
`UploadRetry.seconds` have not passed since its first try (Batch documents no figure for its agent; the Azure Storage
SDKs' default policies retry for about a minute, so half a minute is the stricter choice), so storage restarting for
a few seconds while a node uploads does not fail the task; an answer such as 403 or 404 fails it at once.
`identityReference` stands for the node's managed identity: local nodes then use the storage account key the
service was started with. Only loopback URLs are fetched (the service never talks to anything else).
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Callable
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, ContainerClient

from ..service_config import LOOPBACK_HOSTS, NODE_USER_AGENT, StorageEndpoint

DEFAULT_FILE_MODE = "0770"
_RETRY = {"retry_total": 1, "retry_backoff_factor": 0.1, "connection_timeout": 10, "read_timeout": 60}
# Parallel block transfers streamed from / into the open file, as Batch's node agent moves large files: memory per
# transfer stays about CONCURRENCY x _BLOCK whatever the file size (blocks above the SDK's 4 MiB + 1 threshold take
# its streaming upload path).
_BLOCK = 8 * 1024 * 1024
CONCURRENCY = 4
CLIENT_OPTIONS = {
    **_RETRY,
    "user_agent": NODE_USER_AGENT,  # outage_switch.py tells the nodes' transfers from the submitter's by it
    "max_single_put_size": _BLOCK,
    "max_block_size": _BLOCK,
    "max_single_get_size": _BLOCK,
    "max_chunk_get_size": _BLOCK,
}


class TransferError(Exception):
    """A resource or output file failure: `code` is the task failureInfo code; the message has no secrets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def redact(url: str) -> str:
    """The URL without its query string, so SAS signatures never reach logs or failure messages."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def redact_text(text: str) -> str:
    """Any text with the query strings (SAS tokens) of the URLs in it removed."""
    return _QUERY.sub(r"\1", text)


def check_loopback(url: str, code: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise TransferError(code, f"{redact(url)}: local Batch nodes can only reach 127.0.0.1 (loopback) URLs")


def _client_options(storage: StorageEndpoint | None, base: dict[str, Any] = CLIENT_OPTIONS) -> dict[str, Any]:
    """SDK client options: retries, block sizes, and with --https the service's CA (the node agent trusts its
    storage)."""
    if storage is not None and storage.ca_file:
        return {**base, "connection_verify": storage.ca_file}
    return base


def _url_context(storage: StorageEndpoint | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=storage.ca_file) if storage is not None and storage.ca_file else None


def storage_credential(ref: dict[str, Any] | None, storage: StorageEndpoint | None) -> dict[str, str] | None:
    if not ref:
        return None
    if storage is None:
        raise TransferError("BlobAccessDenied", "identityReference used but the service has no storage account")
    return {"account_name": storage.account_name, "account_key": storage.account_key}


def _download_error(err: Exception, url: str) -> TransferError:
    where = redact(url)
    if isinstance(err, ResourceNotFoundError):
        return TransferError("BlobNotFound", f"{where}: the blob or container does not exist")
    status = getattr(err, "status_code", None) or getattr(err, "code", None)
    if isinstance(err, ClientAuthenticationError) or status in (401, 403):
        return TransferError("BlobAccessDenied", f"{where}: access denied (check the SAS or identity)")
    if status == 404:
        return TransferError("BlobNotFound", f"{where}: the blob or container does not exist")
    return TransferError("BlobDownloadMiscError", f"{where}: download failed ({type(err).__name__})")


def _target(wd: Path, file_path: str) -> Path:
    target = (wd / file_path).resolve()
    if not target.is_relative_to(wd.resolve()):
        raise TransferError("ResourceFileCreateFailed", f"filePath {file_path!r} breaks out of the working directory")
    return target


def _write(path: Path, fill: Callable[[BinaryIO], int], mode: str | None) -> int:
    """Create `path`, let `fill` write the content into it (returning the byte count), apply the file mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as fh:
            size = fill(fh)
        os.chmod(path, int(mode or DEFAULT_FILE_MODE, 8))
    except ValueError:
        raise TransferError("ResourceFileWriteFailed", f"fileMode {mode!r} is not an octal mode like 0755") from None
    except OSError as err:
        raise TransferError("ResourceFileWriteFailed", f"{path.name}: {err.strerror}") from None
    return size


def _is_blob_url(url: str, storage: StorageEndpoint | None) -> bool:
    """A blob of the service's own storage account (parallel ranged reads); other http(s) URLs are read plainly."""
    return storage is not None and url.startswith(storage.blob_url.rstrip("/") + "/")


def _copy(source: Any, fh: BinaryIO) -> int:
    size = 0
    while chunk := source.read(1 << 20):
        fh.write(chunk)
        size += len(chunk)
    return size


def container_client(
    url: str, cred: dict[str, str] | None, storage: StorageEndpoint | None, base: dict[str, Any] = CLIENT_OPTIONS
) -> ContainerClient:
    """A container client: the SAS in the URL, or (identityReference) the account key without the URL's query."""
    if cred:
        return ContainerClient.from_container_url(redact(url), credential=cred, **_client_options(storage, base))
    return ContainerClient.from_container_url(url, **_client_options(storage, base))


def download_resource_files(
    resource_files: list[dict[str, Any]], wd: Path, storage: StorageEndpoint | None
) -> list[str]:
    """Download every resource file into `wd` (before the command runs); returns log lines.

    Raises TransferError on the first failure, as Batch fails the task without running its command.
    """
    log: list[str] = []
    for rf in resource_files:
        mode = rf.get("fileMode")
        cred = storage_credential(rf.get("identityReference"), storage)
        if rf.get("autoStorageContainerName"):
            raise TransferError(
                "BlobDownloadMiscError",
                "autoStorageContainerName needs a Batch account linked to storage; use storageContainerUrl instead",
            )
        if rf.get("httpUrl"):
            url = rf["httpUrl"]
            check_loopback(url, "BlobDownloadMiscError")
            target = _target(wd, rf["filePath"])
            try:
                if cred or _is_blob_url(url, storage):
                    client = BlobClient.from_blob_url(
                        redact(url) if cred else url, credential=cred, **_client_options(storage)
                    )
                    size = _write(target, client.download_blob(max_concurrency=CONCURRENCY).readinto, mode)
                else:
                    context = _url_context(storage)
                    with urllib.request.urlopen(url, timeout=60, context=context) as resp:  # noqa: S310 (loopback)
                        size = _write(target, lambda fh: _copy(resp, fh), mode)
            except TransferError:
                raise
            except (AzureError, urllib.error.URLError, OSError) as err:
                raise _download_error(err, url) from None
            log.append(f"downloaded {redact(url)} -> {target.relative_to(wd.resolve())} ({size} bytes)")
            continue
        url = rf["storageContainerUrl"]
        check_loopback(url, "BlobDownloadMiscError")
        prefix = rf.get("blobPrefix") or None
        base = _target(wd, rf.get("filePath") or ".")
        try:
            container = container_client(url, cred, storage)
            count = 0
            for blob in container.list_blobs(name_starts_with=prefix):
                target = _target(wd, str(Path(rf.get("filePath") or ".") / blob.name))
                downloader = container.download_blob(blob.name, max_concurrency=CONCURRENCY)
                _write(target, downloader.readinto, mode)
                count += 1
        except TransferError:
            raise
        except (AzureError, OSError) as err:
            raise _download_error(err, url) from None
        log.append(f"downloaded {count} blob(s) from {redact(url)} prefix {prefix or ''!r} -> {base}")
    return log


# ------------------------------------------------------------------------------------------------ output files


