"""Files of a node or a task directory over HTTP: listings (BatchNodeFile), properties (HEAD) and byte ranges.

`ocp-range` answers 200 with the requested bytes (the spec allows only 200); a plain HTTP `Range` answers 206.
A file path may use '/' or '\\' as separator; paths leaving the directory (also through symlinks) are not found.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ..model.errors import FileNotFound, InvalidHeaderValue, InvalidRange, InvalidUri
from ..model.timestamps import http_date, iso_time
from .conditions import check_conditions
from .http_messages import Request, Response, query_error

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def recursive_flag(request: Request) -> bool:
    raw = request.query.get("recursive")
    if raw is None or raw == "":
        return False
    if raw.lower() not in ("true", "false"):
        raise query_error("recursive", raw, "must be true or false")
    return raw.lower() == "true"


def _file_properties(info: os.stat_result) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "creationTime": iso_time(datetime.fromtimestamp(info.st_ctime, timezone.utc)),
        "lastModified": iso_time(datetime.fromtimestamp(info.st_mtime, timezone.utc)),
        "contentLength": str(0 if stat.S_ISDIR(info.st_mode) else info.st_size),
        "fileMode": f"0{info.st_mode:o}",
    }
    if not stat.S_ISDIR(info.st_mode):
        properties["contentType"] = "application/octet-stream"
    return properties


def list_files(root: Path, base_url: str, recursive: bool) -> list[dict[str, Any]]:
    """BatchNodeFile entries under root: its top level, or everything below it when recursive."""
    entries: list[dict[str, Any]] = []
    root = Path(root)
    if not root.is_dir():
        return entries
    if recursive:
        walker: Iterable[Path] = (
            Path(dirpath) / name
            for dirpath, dirnames, filenames in os.walk(root)
            for name in sorted(dirnames) + sorted(filenames)
        )
    else:
        walker = sorted(root.iterdir())
    real_root = root.resolve()
    for path in walker:
        try:
            real = path.resolve(strict=True)
            info = real.stat()
        except (OSError, RuntimeError):
            continue  # vanished while listing, or a dangling / looping symlink
        if real != real_root and real_root not in real.parents:
            continue  # a symlink out of the directory: neither listed nor served
        name = path.relative_to(root).as_posix()
        entries.append(
            {
                "name": name,
                "url": f"{base_url}/{quote(name, safe='/')}",
                "isDirectory": stat.S_ISDIR(info.st_mode),
                "properties": _file_properties(info),
            }
        )
    return entries


def byte_range(value: str, size: int, header: str) -> tuple[int, int]:
    """(offset, length) for `bytes=a-b`, `bytes=a-` or `bytes=-n`; 400 when malformed, 416 when unsatisfiable."""
    m = _RANGE_RE.match(value.strip().replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        raise InvalidHeaderValue(f"The {header} header {value[:64]!r} is not of the form bytes=START-END.",
                                 {"HeaderName": header, "HeaderValue": value[:64]})
    if not m.group(1):  # suffix: the last n bytes
        length = min(int(m.group(2)), size)
        return size - length, length
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if end < start:
        raise InvalidHeaderValue(f"The {header} header {value[:64]!r} ends before it starts.",
                                 {"HeaderName": header, "HeaderValue": value[:64]})
    if start >= size:
        raise InvalidRange(f"The range starts at byte {start} but the file has {size} bytes.")
    return start, min(end, size - 1) - start + 1


def resolve_file(root: Path, file_path: str) -> Path:
    relative = unquote(file_path).replace("\\", "/").strip("/")
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    not_found = FileNotFound(f"The file {relative[:256]!r} does not exist.", {"FilePath": relative[:256]})
    if not parts or ".." in parts:
        raise not_found
    root = Path(root).resolve()
    target = root.joinpath(*parts)
    try:
        resolved = target.resolve(strict=True)
    except (OSError, RuntimeError):
        raise not_found from None
    if resolved != root and root not in resolved.parents:
        raise not_found  # a symlink leading out of the directory
    return resolved


def file_response(request: Request, root: Path, base_url: str, *, send_body: bool) -> Response:
    """GET (send_body) or HEAD of the file `request.params["filePath"]` below `root`."""
    path = resolve_file(root, request.params["filePath"])
    info = path.stat()
    is_dir = stat.S_ISDIR(info.st_mode)
    modified = datetime.fromtimestamp(info.st_mtime, timezone.utc)
    name = path.relative_to(Path(root).resolve()).as_posix()
    etag = f"0x{info.st_mtime_ns:X}"
    headers = [
        ("ETag", etag),
        ("Last-Modified", http_date(modified)),
        ("ocp-creation-time", http_date(datetime.fromtimestamp(info.st_ctime, timezone.utc))),
        ("ocp-batch-file-isdirectory", "true" if is_dir else "false"),
        ("ocp-batch-file-url", f"{base_url}/{quote(name, safe='/')}"),
        ("ocp-batch-file-mode", f"0{info.st_mode:o}"),
    ]
    not_modified = check_conditions(request, etag, modified, read=True)
    if not_modified:
        not_modified.headers = headers
        return not_modified
    size = 0 if is_dir else info.st_size
    if not send_body:
        # HEAD: Content-Length describes the file, no body follows.
        return Response(200, headers=[*headers, ("Content-Length", str(size))], content_type="application/octet-stream")
    if is_dir:
        raise InvalidUri(f"{name!r} is a directory; list its files with GET .../files?recursive=true instead.")
    status, offset, length = 200, 0, size
    ocp_range, http_range = request.header("ocp-range"), request.header("Range")
    if ocp_range or http_range:
        header = "ocp-range" if ocp_range else "Range"
        offset, length = byte_range(ocp_range or http_range or "", size, header)
        headers.append(("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}" if length else f"bytes */{size}"))
        if not ocp_range:
            status = 206  # plain HTTP semantics for plain Range
    return Response(status, headers=headers, content_type="application/octet-stream", file=(path, offset, length))
