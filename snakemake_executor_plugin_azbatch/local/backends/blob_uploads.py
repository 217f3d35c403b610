"""The nodes' output-file uploads (Batch's outputFiles: patterns, destinations, upload conditions, whole-file
retries, failure codes, fileuploadout.txt / fileuploaderr.txt) and the placeholder outputs of simulated nodes."""

from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from azure.core.exceptions import (
    AzureError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from ..service_config import StorageEndpoint
from .blob_transfer import (
    CLIENT_OPTIONS,
    CONCURRENCY,
    TransferError,
    check_loopback,
    container_client,
    redact,
    storage_credential,
)
from .task_outcomes import upload_failure

_UPLOAD_CLIENT = {**CLIENT_OPTIONS, "retry_total": 0}  # uploads retry whole files themselves (UploadRetry)
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
            check_loopback(url, "FileUploadMiscError")
            cred = storage_credential(dest.get("identityReference"), storage)
            if not cred:
                _check_write_permission(url, spec["filePattern"])
        except TransferError as err:
            outcome.fail(err.message)
            continue
        try:
            container = container_client(url, cred, storage, _UPLOAD_CLIENT)
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
            destination.container.upload_blob(name, data, overwrite=True, max_concurrency=CONCURRENCY)
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
