"""`HostProcessBackend`: nodes whose "image" is the host; each command is a local process in its own group.

PATH is the host's with the directory of this Python first, and a few host variables (HOME, locale, USER, TMPDIR,
TZ) are kept. Tasks run as the user running the service (there is no other user to switch to). On a
container-enabled pool, tasks with containerSettings run in podman on the host's network, as the service's user
(root when admin-elevated); `--node-image` gives nodes a system of their own instead (`stock_backend`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..nodes.node_layout import NodeLayout, is_admin
from .node_agent import NodeAgent
from .node_processes import Launch, ProcessGroup, RunningProcess, start_process

HOST_ENV_KEPT = ("HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR", "TZ")


class HostProcessBackend(NodeAgent):
    def base_environment(self, node: NodeLayout) -> dict[str, str]:
        env = {k: os.environ[k] for k in HOST_ENV_KEPT if k in os.environ}
        python_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([python_dir, os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
        return env

    def launch(self, launch: Launch) -> RunningProcess:
        if launch.container is not None:
            user = (0, 0) if is_admin(launch.user_identity) else (os.getuid(), os.getgid())
            return self.launch_container(launch, user=user, network="host")
        return ProcessGroup(start_process(launch.argv, launch.env, launch))
