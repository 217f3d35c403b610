"""What a backend's launch starts and hands back: `Launch` (node, argv, environment, directory, output files, user,
container), `RunningProcess` (wait, kill), a host process group or a podman container, and the failureInfo of a
launch that failed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..nodes import containers
from ..nodes.node_layout import NodeLayout
from .blob_transfer import redact_text
from .execution import ProcessUsage

BLOCK_BYTES = 512  # rusage counts block operations in 512-byte units


@dataclass(frozen=True)
class Launch:
    """How to run one command on a node: argv with env in cwd, as the task's user, output to two files."""

    node: NodeLayout
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stdout: Path
    stderr: Path
    user_identity: dict[str, Any] | None  # the task's userIdentity (autoUser scope/elevationLevel)
    container: dict[str, Any] | None  # the task's containerSettings, if any


class RunningProcess(Protocol):
    def wait(self, timeout: float | None) -> int | None:
        """The exit code (-N for death by signal N, as Linux Batch nodes report); None after `timeout` seconds."""

    def kill(self) -> None:
        """Kill the command and everything it started."""

    @property
    def usage(self) -> ProcessUsage | None:
        """After `wait` returned an exit code: what the command's processes used, if known."""


class ProcessGroup:
    """A `RunningProcess` over a Popen started in a new session (so kill reaches its whole process group)."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self._usage: ProcessUsage | None = None

    @property
    def usage(self) -> ProcessUsage | None:
        return self._usage

    def wait(self, timeout: float | None) -> int | None:
        """Reaped with wait4, not Popen.wait, for the rusage of this process and the descendants it waited for
        (Batch's task statistics); polled like Popen.wait polls a timeout."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                pid, status, rusage = os.wait4(self.popen.pid, 0 if deadline is None else os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: no usage to tell
                self.popen.wait()
                return self.popen.returncode
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                self._usage = ProcessUsage(
                    rusage.ru_utime, rusage.ru_stime, rusage.ru_inblock, rusage.ru_oublock,
                    rusage.ru_inblock * BLOCK_BYTES, rusage.ru_oublock * BLOCK_BYTES)
                return self.popen.returncode
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining, 0.05))
            delay *= 2

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class ContainerProcess(ProcessGroup):
    """`podman run` of a task: killing it removes the container first (the podman client alone would leave it)."""

    def __init__(self, popen: subprocess.Popen, engine: containers.PodmanEngine, name: str) -> None:
        super().__init__(popen)
        self.engine = engine
        self.name = name

    @property
    def usage(self) -> ProcessUsage | None:
        return None  # the podman client's own use, not the container's processes: unknown, not zero

    def kill(self) -> None:
        subprocess.run(self.engine.remove_argv(self.name), env=self.engine.env(), capture_output=True, timeout=60)
        super().kill()


def start_process(argv: list[str], env: dict[str, str], launch: Launch, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Popen with the task's output files, no stdin, in a session of its own."""
    with open(launch.stdout, "ab") as out, open(launch.stderr, "ab") as err:
        return subprocess.Popen(
            argv, cwd=launch.cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            pass_fds=pass_fds,
        )


def launch_failure(err: Exception) -> dict[str, Any]:
    if isinstance(err, FileNotFoundError):
        return {"category": "usererror", "code": "CommandProgramNotFound",
                "message": f"The program specified in the task's command line was not found: {err.filename}"}
    return {"category": "usererror", "code": "CommandLaunchFailed",
            "message": redact_text(f"The task's command line could not be launched: {err}")}
