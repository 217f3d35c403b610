"""The local Batch service for benchmarks: `azbatch-local serve` in its own process.

A separate process because (a) the CPU and memory of the simulated nodes must not count as the benchmark's (or
the measured Snakemake's), and (b) the command line is the service's stable interface: options such as
`--simulate` are passed through as given, and `supports()` tells whether this checkout has them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

_STARTUP_TIMEOUT_S = 120


def azbatch_local() -> str:
    """The `azbatch-local` of the Python running the benchmark (its virtualenv), else the one on PATH."""
    beside = Path(sys.executable).parent / "azbatch-local"
    found = str(beside) if beside.exists() else shutil.which("azbatch-local")
    if not found:
        sys.exit("benchmarks: azbatch-local not found; run `make install` and use .venv/bin/python")
    return found


def supports(option: str) -> bool:
    """Whether `azbatch-local serve` accepts `option` (e.g. `--simulate`) in this checkout."""
    usage = subprocess.run([azbatch_local(), "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", usage) is not None


class ServiceProcess:
    """`azbatch-local serve --root ROOT --pool P ... OPTIONS` until stop(); `env` holds its exported settings."""

    def __init__(self, root: Path, pools: list[str], options: list[str] | None = None) -> None:
        self.root = root
        self.args = [a for pool in pools for a in ("--pool", pool)] + list(options or [])
        self.process: subprocess.Popen[str] | None = None
        self.env: dict[str, str] = {}
        self.log_path = root.parent / f"{root.name}-service.log"

    def __enter__(self) -> "ServiceProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [azbatch_local(), "serve", "--root", str(self.root), *self.args],
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
        )
        log.close()
        assert self.process.stdout is not None
        # serve prints `export NAME='VALUE'` lines, then a comment line once it is ready.
        for line in self.process.stdout:
            if line.startswith("export "):
                name, _, value = line[len("export "):].rstrip("\n").partition("=")
                self.env[name] = shlex.split(value)[0] if value else ""
            elif line.startswith("# written to"):
                break
        if "AZBATCH_LOCAL_METRICS_URL" not in self.env:
            self.stop()
            sys.exit(f"benchmarks: azbatch-local serve did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    @property
    def pool_id(self) -> str:
        return self.env["SNAKEMAKE_AZBATCH_POOL_ID"]

    def metrics(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.env["AZBATCH_LOCAL_METRICS_URL"], timeout=60) as response:
            return json.load(response)

    def batch_client(self, **policy: Any) -> BatchClient:
        """A client of the service; `policy`: azure-core settings such as retry_status (for a faulty service)."""
        credential = AzureNamedKeyCredential(
            self.env["SNAKEMAKE_AZBATCH_ACCOUNT_NAME"], self.env["SNAKEMAKE_AZBATCH_ACCOUNT_KEY"]
        )
        return BatchClient(self.env["SNAKEMAKE_AZBATCH_ACCOUNT_URL"], credential, **policy)


class Traffic:
    """What happened between two metrics snapshots, per section (`operations` = Batch API, `storage` = Blob)."""

    def __init__(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        self.before = before
        self.after = after

    def _field(self, section: str, name: str, field: str) -> int:
        def value(snapshot: dict[str, Any]) -> int:
            return int(snapshot.get(section, {}).get(name, {}).get(field, 0))

        return value(self.after) - value(self.before)

    def count(self, section: str, name: str) -> int:
        return self._field(section, name, "count")

    def total(self, section: str, field: str = "count") -> int:
        names = set(self.after.get(section, {})) | set(self.before.get(section, {}))
        return sum(self._field(section, name, field) for name in names)

    def bytes(self, section: str) -> int:
        """Body bytes both ways (request + response)."""
        return self.total(section, "requestBytes") + self.total(section, "responseBytes")

    def by_operation(self, section: str) -> dict[str, int]:
        names = sorted(set(self.after.get(section, {})) | set(self.before.get(section, {})))
        return {name: n for name in names if (n := self.count(section, name))}
