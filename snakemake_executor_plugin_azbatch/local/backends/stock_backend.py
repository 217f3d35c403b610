"""`StockNodeBackend` (`--node-image DIR`): every node is a `NodeSandbox` over the stock node image.

Start tasks, job preparation and release tasks and ordinary tasks all run inside the node's sandbox, as the image's
non-admin task user (`_azbatch`) unless their userIdentity asks for admin elevation (then root with a container
runtime's default capabilities); they see the `AZ_BATCH_*` variables and their own settings, a Batch task's PATH
and HOME, and nothing of the host. Tasks with containerSettings on a container-enabled pool run in podman on the
node's network (the host's, or a local-only node's own namespace), as the same user.

Files: the node's directories are the only thing node and host share. A non-admin task owns its working
directory (resource files included); its task directory, `stdout.txt` and `stderr.txt` stay the agent's, so a task
cannot redirect what the agent writes. Output files must lie under the node's directories (a symlink or absolute
pattern pointing elsewhere would name a host file and is refused with an upload error).

Network: `host` (default) — nodes reach what the host reaches (the local service, Azurite, package registries);
`local-only` — each node has only loopback, where the Batch API and storage ports are relayed to the host.
Host-network nodes trust this machine's extra CAs (a TLS-inspecting network's; node_trust.py).
Needs root and the Debian packages bubblewrap and util-linux (`ServiceConfig.validate` says so in one line).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

from ..service_config import BoundEndpoints, ConfigError, ServiceConfig
from ..nodes import isolation, node_trust
from ..nodes import node_image as node_image_module
from ..nodes.node_layout import NodeLayout, is_admin
from .node_agent import NodeAgent
from .node_processes import Launch, ProcessGroup, RunningProcess, start_process

log = logging.getLogger(__name__)

# What the sandbox's launcher (setpriv for non-admin tasks, bwrap for admin ones) prints, with its exit status,
# when the task's program cannot be executed; the program itself never ran, so this is all of stderr.
_EXEC_FAILED = re.compile(r"(?:setpriv: failed to execute|bwrap: execvp) (?P<program>.+): (?P<reason>[^\n:]+)\n")
_EXEC_FAILED_STATUS = (1, 127)
_ERRNOS = {os.strerror(errno.ENOENT): errno.ENOENT, os.strerror(errno.EACCES): errno.EACCES,
           os.strerror(errno.ENOEXEC): errno.ENOEXEC}  # fmt: skip


class SandboxProcess(ProcessGroup):
    """A task in a node sandbox. The program is looked up inside the node, so "not found" can only be seen once
    the launcher has tried: `wait` then raises the OSError the host's Popen would have raised (the node agent
    reports CommandProgramNotFound / CommandLaunchFailed, as Batch does)."""

    def __init__(self, popen: subprocess.Popen, program: str, stderr: Path) -> None:
        super().__init__(popen)
        self.program = program
        self.stderr = stderr

    def wait(self, timeout: float | None) -> int | None:
        code = super().wait(timeout)
        if code in _EXEC_FAILED_STATUS:
            try:
                text = self.stderr.read_text(errors="replace") if self.stderr.stat().st_size < 4096 else ""
            except OSError:
                text = ""
            failed = _EXEC_FAILED.fullmatch(text)
            if failed and failed["program"] == self.program:
                number = _ERRNOS.get(failed["reason"], errno.EIO)
                raise OSError(number, failed["reason"], self.program)
        return code


class StockNodeBackend(NodeAgent):
    confine_outputs = True

    def __init__(self, config: ServiceConfig, endpoints: BoundEndpoints | None = None) -> None:
        """`config` is validated (`ServiceConfig.validate` checks the image, root and the Debian packages)."""
        super().__init__(config, endpoints)
        if config.node_image is None:
            raise ConfigError("--node-image: no image directory given")
        try:
            self.image = node_image_module.load(Path(config.node_image))
        except node_image_module.NodeImageError as exc:
            raise ConfigError(f"--node-image: {exc}") from None
        cas = node_trust.node_cas(config)
        self.trusted_cas = cas.certificates if cas else ()
        self._sandboxes: dict[Path, isolation.NodeSandbox] = {}
        self._sandbox_lock = threading.Lock()

    # ------------------------------------------------------------------ nodes

    def start_node(self, node: NodeLayout) -> None:
        """The node's sandbox (its overlay disk and namespaces: well under a second), then node_ready."""
        node.create()
        sandbox = isolation.NodeSandbox(
            self.image,
            Path(self.config.root) / "node-disks" / node.pool_id / node.node_id,
            node_id=node.node_id,
            node_root=node.root,
            network=self.config.node_network,
            forward_ports=self._service_ports(),
            trusted_cas=self.trusted_cas,
        )
        try:
            sandbox.start()
        except isolation.IsolationError as exc:
            raise ConfigError(f"--node-image: {exc}") from None
        with self._sandbox_lock:
            self._sandboxes[node.root] = sandbox
        # Batch's shared directory is read/write for every task on the node.
        os.chown(node.shared_dir, self.image.task_uid, self.image.task_gid)
        self._report().node_ready(node.pool_id, node.node_id)

    def _service_ports(self) -> list[int]:
        """What a local-only node may reach: the Batch API and the storage endpoint (both on the host's loopback)."""
        ports = [self.endpoints.port]
        if self.endpoints.storage is not None:
            storage_port = urlsplit(self.endpoints.storage.blob_url).port
            if storage_port:
                ports.append(storage_port)
        return ports

    def stop(self) -> None:
        super().stop()
        with self._sandbox_lock:
            sandboxes, self._sandboxes = list(self._sandboxes.values()), {}
        for sandbox in sandboxes:
            sandbox.stop()

    # ------------------------------------------------------------------ processes

    def launch(self, launch: Launch) -> RunningProcess:
        with self._sandbox_lock:
            sandbox = self._sandboxes.get(launch.node.root)
        if sandbox is None:
            raise OSError(f"node {launch.node.node_id} is not started")
        admin = is_admin(launch.user_identity)
        if not admin:
            _give_to(launch.cwd, sandbox.task_owner(admin=False))
        if launch.container is not None:
            network = sandbox.netns_path or "host"
            return self.launch_container(launch, user=sandbox.task_owner(admin), network=network)
        try:
            command = sandbox.launch(launch.argv, cwd=launch.cwd, env=launch.env, admin=admin)
        except isolation.IsolationError as exc:
            raise OSError(str(exc)) from None
        return SandboxProcess(start_process(command.argv, command.env, launch), launch.argv[0], launch.stderr)


def _give_to(directory: Path, owner: tuple[int, int]) -> None:
    """Make the task user own its working directory and everything in it (resource files), never following a
    symlink: a link the task planted must not make the agent chown a host file."""
    uid, gid = owner
    os.chown(directory, uid, gid, follow_symlinks=False)
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)
