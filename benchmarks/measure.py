"""Run a command and measure it: wall time, CPU time and peak RSS of that process (with its waited-for children).

`os.wait4` returns the resource usage of exactly the child it reaps, so the measured Snakemake process is counted
alone: not the benchmark, not the local service (another process), not other work on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Measured:
    command: list[str]
    returncode: int
    wall_s: float
    cpu_s: float  # user + system
    peak_rss_mib: float
    log: str  # path of the combined stdout/stderr

    def tail(self, lines: int = 30) -> str:
        text = Path(self.log).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def as_dict(self) -> dict:
        return asdict(self)


def run_measured(command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout_s: float) -> Measured:
    """Run `command` to completion (killed with its process group after `timeout_s`), output into `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = start + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keeps Popen from waiting again
    return Measured(
        command=command,
        returncode=process.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        log=str(log),
    )
