"""Forward chosen loopback TCP ports from a node's own network namespace to the host's loopback.

A local-only node has a network namespace with nothing but `lo`: it reaches no other address. So that its tasks
still reach the local Batch service and storage at the URLs they were given (http://127.0.0.1:PORT), this
forwarder listens on 127.0.0.1:PORT *inside* that namespace and relays each connection to 127.0.0.1:PORT on the
host. It runs in the service's process: a short-lived thread enters the namespace (setns affects only the calling
thread), brings `lo` up and opens the listening sockets there; sockets keep the namespace they were created in, so
one asyncio loop on another thread relays for every port. Needs CAP_SYS_ADMIN (root) for setns.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Sequence

_CLONE_NEWNET = 0x40000000  # <linux/sched.h>
_SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sh14x"  # struct ifreq: name, flags, padding
_CHUNK = 1 << 16


def enter_network_namespace(path: str) -> None:
    """Move the calling thread into the network namespace at `path` (e.g. /proc/PID/ns/net)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python >= 3.12
            os.setns(fd, _CLONE_NEWNET)
        elif ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def bring_up_loopback() -> None:
    """Set `lo` up in the calling thread's network namespace (a new namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


class LoopbackForwarder:
    """Relay 127.0.0.1:PORT inside the namespace at `netns_path` to 127.0.0.1:PORT on the host, for each port."""

    def __init__(self, netns_path: str, ports: Sequence[int], host: str = "127.0.0.1") -> None:
        self.netns_path = netns_path
        self.ports = list(dict.fromkeys(ports))
        self.host = host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []

    def start(self) -> None:
        listeners = self._listen_inside()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(listeners, ready), name=f"forwarder-{self.netns_path}", daemon=True
        )
        self._thread.start()
        ready.wait(timeout=10)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = self._thread = None

    def _listen_inside(self) -> list[tuple[int, socket.socket]]:
        """Listening sockets created in the node's namespace, by a throwaway thread that entered it."""
        result: list[tuple[int, socket.socket]] = []
        errors: list[BaseException] = []

        def inside() -> None:
            try:
                enter_network_namespace(self.netns_path)
                bring_up_loopback()
                for port in self.ports:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((self.host, port))
                    sock.listen(128)
                    sock.setblocking(False)
                    result.append((port, sock))
            except BaseException as exc:  # reported in the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=inside, name="forwarder-setns")
        thread.start()
        thread.join()
        if errors:
            for _, sock in result:
                sock.close()
            raise OSError(f"cannot forward ports into the node network namespace {self.netns_path}: {errors[0]}")
        return result

    def _run(self, listeners: list[tuple[int, socket.socket]], ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        for port, sock in listeners:
            server = loop.run_until_complete(
                asyncio.start_server(lambda r, w, port=port: self._relay(r, w, port), sock=sock)
            )
            self._servers.append(server)
        ready.set()
        try:
            loop.run_forever()
        finally:
            for server in self._servers:
                server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        for stream in (writer, up_writer):
            stream.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side so request/response protocols finish cleanly."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
