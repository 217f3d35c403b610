"""HTTP layer: one request read off its socket within bounds, before anything is authenticated.

- The body: `Content-Length` (digits only, one value) or the chunked transfer coding parsed strictly (hex size,
  optional extensions, CRLF after the size line and after each chunk, at most a few short trailer lines). At most
  `MAX_BODY_BYTES` are kept in memory; a longer body is read and thrown away up to `DISCARD_LIMIT` (so the client
  reads a clean 413 instead of a reset connection), and a body announced or grown past that is not read further:
  413, connection closed. Malformed framing is a 400 and closes the connection (what follows cannot be trusted).
- Time: `DeadlineReader` gives a request `REQUEST_SECONDS` from its first byte to its last, so a client that
  trickles or stalls (a request line, a header or a body never finished) holds its thread for that long at most.
"""

from __future__ import annotations

import io
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..model.errors import BatchError, InvalidHeaderValue, InvalidRequestBody, RequestBodyTooLarge

MAX_BODY_BYTES = 1024 * 1024  # Batch refuses bodies over 1 MB (RequestBodyTooLarge)
DISCARD_LIMIT = 64 * 1024 * 1024  # larger bodies are not even read: the connection is closed
REQUEST_SECONDS = 120.0  # from a request's first byte to its last
TOO_LARGE = f"The request body is larger than {MAX_BODY_BYTES} bytes; send fewer tasks per request."
_PIECE = 256 * 1024
_LINE = 1024  # longest chunk-size or trailer line
_TRAILERS = 32  # most trailer lines after the last chunk
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CHUNK_SIZE = re.compile(
    rf"([0-9A-Fa-f]{{1,16}})((?:[ \t]*;[ \t]*{_TOKEN}(?:=(?:{_TOKEN}|\"[^\"\r\n]*\"))?)*)\r\n".encode()
)
_DIGITS = re.compile(r"[0-9]{1,20}")


@dataclass
class BodyRead:
    body: bytes = b""
    error: BatchError | None = None
    close: bool = False  # the connection cannot carry another request


def _malformed(reason: str) -> BodyRead:
    return BodyRead(error=InvalidRequestBody(f"The chunked request body is malformed: {reason}."), close=True)


def _bad_header(name: str, reason: str) -> BodyRead:
    return BodyRead(error=InvalidHeaderValue(f"The {name} header {reason}.", {"HeaderName": name}), close=True)


def _too_large(close: bool) -> BodyRead:
    return BodyRead(error=RequestBodyTooLarge(TOO_LARGE), close=close)


def _take(rfile: BinaryIO, size: int, keep: list[bytes] | None) -> bool:
    """Read exactly `size` bytes, kept in `keep` or thrown away; False when the connection ended first."""
    while size > 0:
        piece = rfile.read(min(size, _PIECE))
        if not piece:
            return False
        if keep is not None:
            keep.append(piece)
        size -= len(piece)
    return True


def read_body(rfile: BinaryIO, headers: Any) -> BodyRead:
    """The request body framed by `headers` (an email.message.Message), within the limits above."""
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        codings = [c.strip().lower() for value in encodings for c in value.split(",")]
        if codings != ["chunked"]:
            return _bad_header("Transfer-Encoding", "must be exactly chunked (no other coding is accepted)")
        if lengths:
            return _bad_header("Content-Length", "must not be sent with Transfer-Encoding: chunked")
        return _read_chunked(rfile)
    if not lengths:
        return BodyRead()
    values = {value.strip() for value in lengths}
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        return _bad_header("Content-Length", "is not a whole number")
    length = int(next(iter(values)))
    if length > DISCARD_LIMIT:
        return _too_large(close=True)
    keep: list[bytes] | None = [] if length <= MAX_BODY_BYTES else None
    if not _take(rfile, length, keep):
        return BodyRead(error=InvalidRequestBody("The request body ended before its Content-Length."), close=True)
    return BodyRead(b"".join(keep)) if keep is not None else _too_large(close=False)


def _read_chunked(rfile: BinaryIO) -> BodyRead:
    kept: list[bytes] | None = []
    total = 0
    while True:
        line = rfile.readline(_LINE + 1)
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            shown = line[:40].decode("latin-1").rstrip("\r\n")
            return _malformed(f"expected a hexadecimal chunk size line ending in CRLF, got {shown!r}")
        size = int(match.group(1), 16)
        if size == 0:
            break
        total += size
        if total > DISCARD_LIMIT:
            return _too_large(close=True)
        if kept is not None and total > MAX_BODY_BYTES:
            kept = None  # too large: the rest is only read to keep the connection, not kept
        if not _take(rfile, size, kept):
            return _malformed("the connection ended inside a chunk")
        if rfile.read(2) != b"\r\n":
            return _malformed("a chunk is not followed by CRLF")
    for _ in range(_TRAILERS + 1):
        line = rfile.readline(_LINE + 1)
        if line == b"\r\n":
            return BodyRead(b"".join(kept)) if kept is not None else _too_large(close=False)
        if not line.endswith(b"\r\n") or b":" not in line:
            return _malformed("a trailer line is not a header line ending in CRLF")
    return _malformed(f"more than {_TRAILERS} trailer lines")


class DeadlineReader(io.RawIOBase):
    """A connection's bytes for a BufferedReader: waits up to `idle_seconds` for a request's first byte, then
    gives the whole request `REQUEST_SECONDS` (TimeoutError past it). `next_request()` re-arms it."""

    def __init__(self, sock: socket.socket, idle_seconds: float, request_seconds: float = REQUEST_SECONDS) -> None:
        self.sock = sock
        self.idle_seconds = idle_seconds
        self.request_seconds = request_seconds
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        self.deadline = None

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            timeout = self.idle_seconds
        else:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError(f"the request did not arrive within {self.request_seconds:g} s")
        self.sock.settimeout(timeout)
        try:
            count = self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.idle_seconds)  # writes keep the connection's own timeout
        if count and self.deadline is None:
            self.deadline = time.monotonic() + self.request_seconds
        return count
