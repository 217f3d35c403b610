"""Find, start and stop Azurite (blob service only) on a free loopback port."""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..service_config import ConfigError

if TYPE_CHECKING:
    from ..auth.tls import TlsFiles

AZURITE_BIN_ENV = "AZURITE_BIN"
_RELATIVE_BIN = Path("node_modules") / ".bin" / "azurite-blob"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_START_ATTEMPTS = 3  # a free port can be taken between our probe and Azurite's bind; retry with another
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0



def _terminate_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the service dies without stopping it, e.g. on SIGKILL,
    so no Azurite outlives its service."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass

class AzuriteError(RuntimeError):
    """Azurite could not be found or started: the message is one actionable line."""


def find_azurite(start_dirs: list[Path] | None = None) -> Path:
    """Locate `azurite-blob`: $AZURITE_BIN, then node_modules/.bin above the package or cwd, then PATH."""
    explicit = os.environ.get(AZURITE_BIN_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"{AZURITE_BIN_ENV}={explicit}: not an executable file; point it at azurite-blob")
        return path
    dirs = start_dirs if start_dirs is not None else [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in dirs:
        for directory in (start, *start.parents):
            candidate = directory / _RELATIVE_BIN
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    on_path = shutil.which("azurite-blob")
    if on_path:
        return Path(on_path)
    raise ConfigError(
        "Azurite (azurite-blob) not found: run `make install` (or `npm ci`) in the project, "
        f"or set {AZURITE_BIN_ENV} to the azurite-blob executable"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Azurite:
    """One Azurite blob process in its own process group, with data under `location`.

    With `tls`, Azurite serves HTTPS with that certificate; `oauth` adds its `--oauth basic` bearer-token check
    (which Azurite allows over HTTPS only). That check is loose: Azurite reads the token's lifetime, issuer prefix
    (https://sts.windows.net/...) and audience (https://storage.azure.com, ...) but not its signature or tenant,
    so the blob proxy in front of it checks those (see bearer_auth.storage_bearer_check)."""

    def __init__(
        self,
        location: Path,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        tls: TlsFiles | None = None,
        oauth: bool = False,
    ) -> None:
        self.location = Path(location)
        self.host = host
        self.binary = binary
        self.tls = tls
        self.oauth = oauth and tls is not None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.location / "azurite.log"

    @property
    def blob_url(self) -> str:
        """Direct (un-proxied) account URL."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/devstoreaccount1"

    def start(self) -> None:
        """Start Azurite; call from a long-lived thread (on Linux it is stopped when the starting thread dies)."""
        binary = self.binary or find_azurite()
        self.location.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            self.port = free_port(self.host)
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [
                        str(binary),
                        "--blobHost", self.host,
                        "--blobPort", str(self.port),
                        "--location", str(self.location),
                        "--silent",
                        "--skipApiVersionCheck",
                        "--disableTelemetry",
                        "--loose",
                        "--blobKeepAliveTimeout", "120",
                        *self._tls_args(),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() kills node and anything it spawned
                    preexec_fn=_terminate_with_parent if sys.platform == "linux" else None,
                )
            if self._wait_ready():
                return
            last_error = self._log_tail()
            self.stop()
        raise AzuriteError(
            f"Azurite did not start on {self.host} (see {self.log_path}): {last_error or 'no output'}"
        )

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--cert", str(self.tls.cert), "--key", str(self.tls.key), *(["--oauth", "basic"] if self.oauth else [])]

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                conn = (
                    http.client.HTTPSConnection(self.host, self.port, timeout=2, context=self.tls.client_context())
                    if self.tls
                    else http.client.HTTPConnection(self.host, self.port, timeout=2)
                )
                try:
                    # Any HTTP answer (even 400/403) means Azurite is serving.
                    conn.request("GET", "/devstoreaccount1?comp=list")
                    conn.getresponse().read()
                    return True
                finally:
                    conn.close()
            except OSError:
                time.sleep(0.1)
        return False

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        # Node may leave children behind in the group even after the parent exited.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "Azurite":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
