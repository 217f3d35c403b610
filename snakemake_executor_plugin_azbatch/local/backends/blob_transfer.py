"""Resource-file downloads and output-file uploads of the simulated nodes, through the real blob endpoint.

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

import glob
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobClient, ContainerClient

from ..config import LOOPBACK_HOSTS, NODE_USER_AGENT, StorageEndpoint
from .task_outcomes import upload_failure

DEFAULT_FILE_MODE = "0770"
_RETRY = {"retry_total": 1, "retry_backoff_factor": 0.1, "connection_timeout": 10, "read_timeout": 60}
# Parallel block transfers streamed from / into the open file, as Batch's node agent moves large files: memory per
# transfer stays about _CONCURRENCY x _BLOCK whatever the file size (blocks above the SDK's 4 MiB + 1 threshold take
# its streaming upload path).
_BLOCK = 8 * 1024 * 1024
_CONCURRENCY = 4
_CLIENT = {
    **_RETRY,
    "user_agent": NODE_USER_AGENT,  # outage_switch.py tells the nodes' transfers from the submitter's by it
    "max_single_put_size": _BLOCK,
    "max_block_size": _BLOCK,
    "max_single_get_size": _BLOCK,
    "max_chunk_get_size": _BLOCK,
}


_UPLOAD_CLIENT = {**_CLIENT, "retry_total": 0}  # uploads retry whole files themselves (UploadRetry)
_TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}
_MAX_BACKOFF = 8.0


@dataclass(frozen=True)
class UploadRetry:
    """How long a node retries an output upload that failed transiently; `stopping` ends the waiting early (the
    service is going away)."""

    seconds: float
    stopping: Callable[[], bool] = lambda: False

    def pause(self, delay: float) -> bool:
        """Sleep `delay` seconds unless stopping; False when stopping."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if self.stopping():
                return False
            time.sleep(min(left, 0.2))
        return not self.stopping()


NO_RETRY = UploadRetry(0.0)


def _transient(err: Exception) -> bool:
    """A failure storage may not repeat: no connection, a dropped one, a timeout, a busy or failing server."""
    if isinstance(err, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
        return True
    return getattr(err, "status_code", None) in _TRANSIENT_STATUSES


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


def _check_loopback(url: str, code: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise TransferError(code, f"{redact(url)}: local Batch nodes can only reach 127.0.0.1 (loopback) URLs")


def _client_options(storage: StorageEndpoint | None, base: dict[str, Any] = _CLIENT) -> dict[str, Any]:
    """SDK client options: retries, block sizes, and with --https the service's CA (the node agent trusts its
    storage)."""
    if storage is not None and storage.ca_file:
        return {**base, "connection_verify": storage.ca_file}
    return base


def _url_context(storage: StorageEndpoint | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=storage.ca_file) if storage is not None and storage.ca_file else None


def _credential(ref: dict[str, Any] | None, storage: StorageEndpoint | None) -> dict[str, str] | None:
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


def _container(
    url: str, cred: dict[str, str] | None, storage: StorageEndpoint | None, base: dict[str, Any] = _CLIENT
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
        cred = _credential(rf.get("identityReference"), storage)
        if rf.get("autoStorageContainerName"):
            raise TransferError(
                "BlobDownloadMiscError",
                "autoStorageContainerName needs a Batch account linked to storage; use storageContainerUrl instead",
            )
        if rf.get("httpUrl"):
            url = rf["httpUrl"]
            _check_loopback(url, "BlobDownloadMiscError")
            target = _target(wd, rf["filePath"])
            try:
                if cred or _is_blob_url(url, storage):
                    client = BlobClient.from_blob_url(
                        redact(url) if cred else url, credential=cred, **_client_options(storage)
                    )
                    size = _write(target, client.download_blob(max_concurrency=_CONCURRENCY).readinto, mode)
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
        _check_loopback(url, "BlobDownloadMiscError")
        prefix = rf.get("blobPrefix") or None
        base = _target(wd, rf.get("filePath") or ".")
        try:
            container = _container(url, cred, storage)
            count = 0
            for blob in container.list_blobs(name_starts_with=prefix):
                target = _target(wd, str(Path(rf.get("filePath") or ".") / blob.name))
                downloader = container.download_blob(blob.name, max_concurrency=_CONCURRENCY)
                _write(target, downloader.readinto, mode)
                count += 1
        except TransferError:
            raise
        except (AzureError, OSError) as err:
            raise _download_error(err, url) from None
        log.append(f"downloaded {count} blob(s) from {redact(url)} prefix {prefix or ''!r} -> {base}")
    return log


# ------------------------------------------------------------------------------------------------ output files

_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Expand $VAR / ${VAR} with the task's environment, as the node agent does before matching."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def _pattern_base(pattern: str) -> str:
    """The leading directories of a pattern that contain no wildcard (blob names are relative to it)."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return "/".join(fixed)


@dataclass
class UploadOutcome:
    log: list[str]
    errors: list[str]
    code: str | None = None  # the task failureInfo code of the first error (task_outcomes.upload_failure)

    def fail(self, message: str, code: str = "FileUploadMiscError") -> None:
        self.errors.append(message)
        self.code = self.code or code


@dataclass
class _Destination:
    """Where one outputFiles entry goes, once its uploadCondition applies and its pattern is expanded."""

    pattern: str
    url: str  # the container URL as given (with its SAS, if any): never logged
    path: str  # destination.container.path without surrounding '/'
    container: ContainerClient


def _check_write_permission(url: str, pattern: str) -> None:
    """Batch documents that an output container's SAS needs write permission. Whether its agent also manages with
    create alone (a new blob needs no more in Blob storage) is not documented, so a SAS without `w` is refused
    before any upload: stricter than storage itself (a read-only SAS would fail there anyway, with 403)."""
    permissions = parse_qs(urlsplit(url).query).get("sp")
    if permissions and "w" not in permissions[0]:
        raise TransferError(
            "FileUploadMiscError",
            f"upload of {pattern} to {redact(url)} refused: the container SAS grants {permissions[0]!r} without write "
            "(w), which Batch requires of an output container",
        )


def _destinations(
    output_files: list[dict[str, Any]], env: dict[str, str], succeeded: bool, storage: StorageEndpoint | None,
    outcome: UploadOutcome,
):
    """The entries to upload now (uploadCondition against the result), with their container clients; an entry
    that cannot be uploaded (not loopback, bad URL) becomes an error in `outcome`."""
    for spec in output_files:
        condition = str(spec["uploadOptions"]["uploadCondition"]).lower()
        if condition == "tasksuccess" and not succeeded or condition == "taskfailure" and succeeded:
            continue
        dest = spec["destination"]["container"]
        url = dest["containerUrl"]
        try:
            _check_loopback(url, "FileUploadMiscError")
            cred = _credential(dest.get("identityReference"), storage)
            if not cred:
                _check_write_permission(url, spec["filePattern"])
        except TransferError as err:
            outcome.fail(err.message)
            continue
        try:
            container = _container(url, cred, storage, _UPLOAD_CLIENT)
        except (AzureError, ValueError) as err:
            outcome.fail(f"{redact(url)}: bad container URL ({type(err).__name__})")
            continue
        yield _Destination(expand_vars(spec["filePattern"], env), url, (dest.get("path") or "").strip("/"), container)


def _upload(
    destination: _Destination, name: str, data: Any, source: str, size: int, outcome: UploadOutcome, retry: UploadRetry
) -> None:
    started, delay, tries = time.monotonic(), 1.0, 0
    while True:
        tries += 1
        try:
            destination.container.upload_blob(name, data, overwrite=True, max_concurrency=_CONCURRENCY)
            break
        except (AzureError, OSError) as err:
            status = getattr(err, "status_code", None)
            storage_code = getattr(err, "error_code", None)  # e.g. ContainerNotFound, LeaseIdMissing
            storage_code = getattr(storage_code, "value", storage_code)
            why = " ".join(str(part) for part in (type(err).__name__, status and f"HTTP {status}", storage_code) if part)
            waited = time.monotonic() - started
            if _transient(err) and waited + delay <= retry.seconds and retry.pause(delay):
                outcome.log.append(f"upload of {source} failed ({why}); try {tries + 1} after {delay:g} s")
                if hasattr(data, "seek"):
                    data.seek(0)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            tried = f"; {tries} tries over {waited:.0f} s" if tries > 1 else ""
            outcome.fail(
                f"upload of {source} to {redact(destination.url)}/{name} failed ({why}{tried})",
                "FileUploadContainerNotFound" if storage_code == "ContainerNotFound" else "FileUploadMiscError",
            )
            return
    outcome.log.append(f"uploaded {source} -> {redact(destination.url)}/{name} ({size} bytes)")


def upload_output_files(
    output_files: list[dict[str, Any]],
    wd: Path,
    env: dict[str, str],
    succeeded: bool,
    storage: StorageEndpoint | None,
    confine: Path | None = None,
    retry: UploadRetry = NO_RETRY,
) -> UploadOutcome:
    """Upload the files matching each pattern whose uploadCondition applies; collect (not raise) errors.

    confine: a directory every uploaded file must really lie in (symlinks resolved). Stock nodes share only their
    Batch directories with the host, so a file (or symlink) anywhere else is not the node's and is not uploaded.
    """
    outcome = UploadOutcome([], [])
    real_confine = Path(confine).resolve() if confine is not None else None
    for dest in _destinations(output_files, env, succeeded, storage, outcome):
        pattern = dest.pattern
        absolute = pattern if pattern.startswith("/") else os.path.normpath(os.path.join(wd, pattern))
        wildcard = glob.has_magic(pattern)
        matches = sorted(p for p in glob.glob(absolute, recursive=True) if os.path.isfile(p))
        if not matches:
            # Batch's agent uploads "all files matching" each pattern, a plain path included: no match is no error.
            outcome.log.append(f"pattern {pattern!r} matched no files")
            continue
        if wildcard:
            base_pattern = _pattern_base(pattern)
            base = base_pattern if pattern.startswith("/") else os.path.normpath(os.path.join(wd, base_pattern))
        for path in matches:
            if real_confine is not None and not Path(path).resolve().is_relative_to(real_confine):
                outcome.fail(f"{path} is not on the node's disk under {confine} (a symlink out of it?)")
                continue
            if wildcard:
                rel = os.path.relpath(path, base)
                name = f"{dest.path}/{rel}" if dest.path else rel
            else:
                name = dest.path or os.path.basename(path)
            try:
                with open(path, "rb") as fh:
                    _upload(dest, name, fh, path, os.path.getsize(path), outcome, retry)
            except OSError as err:  # unreadable or vanished before the upload
                outcome.fail(f"upload of {path} to {redact(dest.url)}/{name} failed ({type(err).__name__})")
    return outcome


def upload_placeholder_outputs(
    output_files: list[dict[str, Any]],
    wd: Path,
    env: dict[str, str],
    succeeded: bool,
    storage: StorageEndpoint | None,
    placeholder: Callable[[str], bytes],
    retry: UploadRetry = NO_RETRY,
) -> UploadOutcome:
    """For simulated nodes, where no command wrote anything: each entry whose pattern is a literal path (no
    wildcard) is uploaded under the blob name a real file at that path would get — the file itself when it exists in
    the task directory (stdout.txt, stderr.txt), else `placeholder(pattern)`; a wildcard pattern matches nothing.
    Destinations, credentials and errors as in `upload_output_files`."""
    outcome = UploadOutcome([], [])
    task_dir = wd.resolve().parent
    for dest in _destinations(output_files, env, succeeded, storage, outcome):
        pattern = dest.pattern
        if glob.has_magic(pattern):
            outcome.log.append(f"pattern {pattern!r} matched no files (simulated node)")
            continue
        name = dest.path or os.path.basename(pattern)
        path = Path(os.path.normpath(os.path.join(wd, pattern)))
        if path.is_relative_to(task_dir) and path.is_file():
            _upload(dest, name, path.read_bytes(), str(path), path.stat().st_size, outcome, retry)
        else:
            data = placeholder(pattern)
            _upload(dest, name, data, f"placeholder for {pattern}", len(data), outcome, retry)
    return outcome


def record_uploads(task_dir: Path, outcome: UploadOutcome, failure: dict[str, Any] | None) -> dict[str, Any] | None:
    """Write the agent's upload logs beside stdout.txt, as Batch does on every upload (fileuploadout.txt,
    fileuploaderr.txt, the latter empty without errors); an upload error turns a success into a failure
    (FileUploadContainerNotFound or FileUploadMiscError). Returns the attempt's final failureInfo."""
    task_dir.joinpath("fileuploadout.txt").write_text("".join(line + "\n" for line in outcome.log))
    task_dir.joinpath("fileuploaderr.txt").write_text("".join(line + "\n" for line in outcome.errors))
    if outcome.errors and failure is None:
        return upload_failure(outcome.code or "FileUploadMiscError", outcome.errors[0])
    return failure
