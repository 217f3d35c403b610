"""`HostProcessBackend`: nodes whose "image" is the host; each command is a local process in its own group.

PATH is the host's with the directory of this Python first, and a few host variables (HOME, locale, USER, TMPDIR,
TZ) are kept. containerSettings: there is no container engine here, so the task runs on the host and a warning
line is written at the top of stderr.txt, so pipelines written for container pools keep working locally.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .node_agent import Launch, NodeAgent
from .node_layout import NodeLayout
from .task_outcomes import exit_code_of

HOST_ENV_KEPT = ("HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR", "TZ")


class HostProcess:
    """A `RunningProcess` over a Popen started in a new session (so kill reaches its whole process group)."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    def wait(self, timeout: float | None) -> int | None:
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return exit_code_of(self.popen.returncode)

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class HostProcessBackend(NodeAgent):
    def base_environment(self, node: NodeLayout) -> dict[str, str]:
        env = {k: os.environ[k] for k in HOST_ENV_KEPT if k in os.environ}
        python_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([python_dir, os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
        return env

    def launch(self, launch: Launch) -> HostProcess:
        if launch.container:
            image = launch.container.get("imageName", "?")
            with open(launch.stderr, "a") as fh:
                fh.write(f"azbatch-local: warning: no container engine; running on the host instead of {image}\n")
        with open(launch.stdout, "ab") as out, open(launch.stderr, "ab") as err:
            popen = subprocess.Popen(
                launch.argv, cwd=launch.cwd, env=launch.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return HostProcess(popen)
