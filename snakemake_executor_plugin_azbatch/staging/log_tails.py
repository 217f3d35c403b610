"""The ends of logs, never the whole: a failed task may write hundreds of MB to stderr, and reading it whole (once
to show its last lines, again for the run report) cost the plugin that much memory per failure.

One routine for each place a log is: a node file through Batch (`node_file_tail`: the file's size, then only its
last bytes by `ocp-range`), a log saved locally (`file_tail`: a seek to near its end). The blob copies of a task's
stdout.txt / stderr.txt are saved by `BlobDownloads.download_tail` (staging/blob_downloads.py), which streams their last `SAVED_LOG_BYTES` to disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

TAIL_LINES = 20  # lines of a log shown in a message
SAVED_LOG_BYTES = 8 << 20  # what is kept of one log of one attempt (the whole stays in Blob storage)
NODE_LOG_BYTES = 1 << 20  # what is read and kept of a log read from a node
_TAIL_READ_BYTES = 64 << 10  # enough for TAIL_LINES lines of any sensible width


def last_lines(data: bytes | str, lines: int = TAIL_LINES) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return "\n".join(text.strip().splitlines()[-lines:])


def file_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a local file, reading at most its last 64 KiB; "" when it is missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _TAIL_READ_BYTES))
            return last_lines(f.read(), lines)
    except OSError:
        return ""


def cut_note(kept: int, size: int, where: str) -> bytes:
    """The first line of a saved log whose beginning was left out."""
    return (f"[azbatch: only the last {kept:,} of {size:,} bytes are kept here; the whole log is {where}]\n"
            .encode())


def node_file_tail(properties: Callable[[], Any], download: Callable[..., Iterable[bytes]],
                   limit: int = NODE_LOG_BYTES) -> bytes:
    """The last `limit` bytes of a file on a node: its properties (Batch's HEAD of the file, for its size), then
    only those bytes (`ocp-range`, in Batch's documented `bytes=START-END` form)."""
    size = int(properties().content_length or 0)
    if size <= limit:
        return b"".join(download())
    return b"".join(download(ocp_range=f"bytes={size - limit}-{size - 1}"))
