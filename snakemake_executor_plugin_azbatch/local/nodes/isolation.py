"""Run a node's processes inside the stock node image, isolated from the host, with bubblewrap.

One `NodeSandbox` per local node stands for that node's VM:
- its disk: a writable overlay of the image's root filesystem (the image itself is never written). The upper layer
  lives in STATE_DIR/layer and lasts as long as the node, so an admin start task that installs packages installs
  them for every later task on that node, and only there. Where the host's disk cannot carry an overlay upper
  layer (it is itself an overlay), the layer is kept in memory instead (`disk == "memory"`).
- its Batch directories: AZ_BATCH_NODE_ROOT_DIR bind-mounted read-write at the same path, nothing else of the host
  (no host PATH, virtualenv, project checkout or processes; only the host's /etc/resolv.conf when the node uses the
  host's network).
- its users: tasks run as the image's non-admin task user (`_azbatch`, uid 1000) with no capabilities, unless
  their userIdentity asks for admin elevation: then as root with a container runtime's default capabilities
  (enough for apt/dpkg; not mount, module loading, raw I/O, ptrace, or network/time administration). So a
  non-admin task writing outside its directories (or /tmp) gets "Permission denied", as on Batch.
- its network: the host's (default; nodes reach the local service, Azurite and package registries), or with
  `network="local-only"` a namespace of its own with only loopback, where the ports in `forward_ports` (the
  service's and storage's) are relayed to the host's loopback: such a node reaches the local service and nothing
  else, like a node in a locked-down virtual network. `trusted_cas` go into the node's trust store (node_trust.py).
- its own pid, IPC and UTS namespaces (hostname = node id), a read-only /proc/sys, no new privileges.

The node's mount namespace (with the overlay mounted) and network namespace are created once by a short-lived
`unshare` helper and then held open by file descriptors of the service process: they vanish with the service
(even on SIGKILL), so nothing stays mounted on the host. Every process then starts with
`nsenter --mount=/proc/SERVICE/fd/N [--net=...] -- bwrap ...`. Needs root (as here and in CI) and the Debian
packages `bubblewrap` and `util-linux`.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .loopback_forwarder import LoopbackForwarder
from .node_image import NODE_PATH, NodeImage
from . import task_rusage
from .node_layout import split_launcher_env

NETWORK_HOST = "host"
NETWORK_LOCAL_ONLY = "local-only"
NETWORK_MODES = (NETWORK_HOST, NETWORK_LOCAL_ONLY)

# An admin task's capabilities: the default set of container runtimes (podman/docker), nothing that reaches
# beyond the node's own files and processes.
ADMIN_CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
)  # fmt: skip
_TOOLS = {"bwrap": "bubblewrap", "unshare": "util-linux", "nsenter": "util-linux", "mount": "mount"}
_READY_TIMEOUT_S = 30.0

# Runs in the node's new mount (and network) namespace: mount the overlay, add the extra CA certificates (the
# arguments after the third) to the node's trust store as `update-ca-certificates` would (so a later run of it keeps
# them), report where the upper layer lives, then wait until the service has opened the namespaces (it closes our
# stdin).
_MOUNT_SCRIPT = r"""
opts="lowerdir=$1,upperdir=$2/upper,workdir=$2/work"
if mount -t overlay azbatch-node -o "$opts" "$3" 2>/dev/null; then
    disk=disk
elif mount -t tmpfs -o mode=0700 azbatch-node-layer "$2" && mkdir "$2/upper" "$2/work" \
        && mount -t overlay azbatch-node -o "$opts" "$3"; then
    disk=memory
else
    exit 1
fi
merged=$3; shift 3; n=0
[ $# -eq 0 ] || mkdir -p "$merged/usr/local/share/ca-certificates" "$merged/etc/ssl/certs" || exit 1
for pem in "$@"; do
    n=$((n + 1))
    printf '%s\n' "$pem" > "$merged/usr/local/share/ca-certificates/azbatch-local-host-$n.crt" || exit 1
    printf '%s\n' "$pem" >> "$merged/etc/ssl/certs/ca-certificates.crt" || exit 1
done
echo ready $disk
exec cat >/dev/null
"""


class IsolationError(RuntimeError):
    """A node sandbox cannot be set up: the message is one actionable line."""


def missing_packages() -> list[str]:
    """Debian packages the sandbox needs that are not installed."""
    return sorted({package for tool, package in _TOOLS.items() if not shutil.which(tool)})


@dataclass(frozen=True)
class Launch:
    """Start the process with `subprocess.Popen(launch.argv, env=launch.env)`. The task gets exactly its variables;
    `env` holds those the launchers may see, the rest (PATH, HOME, LD_*, ...) are `--setenv` arguments."""

    argv: list[str]
    env: dict[str, str]


class NodeSandbox:
    """One local node's isolated system: see the module docstring. `start()` once, `launch()` per process."""

    def __init__(
        self,
        image: NodeImage,
        state_dir: Path,
        *,
        node_id: str,
        node_root: Path,
        network: str = NETWORK_HOST,
        forward_ports: Sequence[int] = (),
        trusted_cas: Sequence[str] = (),
    ) -> None:
        if network not in NETWORK_MODES:
            raise IsolationError(f"node network {network!r}: choose one of {', '.join(NETWORK_MODES)}")
        self.image = image
        self.state_dir = Path(state_dir).absolute()
        self.node_id = node_id
        self.node_root = Path(node_root).absolute()
        self.network = network
        self.forward_ports = list(forward_ports)
        self.trusted_cas = list(trusted_cas)  # PEM certificates the node trusts besides its image's (node_trust.py)
        self.disk = ""  # "disk" or "memory" once started
        self._ns_fds: dict[str, int] = {}
        self._forwarder: LoopbackForwarder | None = None
        self._tools: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        missing = missing_packages()
        if missing:
            raise IsolationError(f"node sandbox needs {', '.join(missing)}: install the Debian package(s)")
        if os.geteuid() != 0:
            raise IsolationError("node sandbox needs root (it mounts the node's disk and namespaces): run as root")
        self._tools = {tool: shutil.which(tool) or tool for tool in _TOOLS}
        layer, merged = self.state_dir / "layer", self.state_dir / "merged"
        for path in (self.image.rootfs, layer):
            if any(ch in str(path) for ch in ",:\\"):
                raise IsolationError(f"{path}: overlay paths cannot contain ',', ':' or '\\'; choose another root")
        shutil.rmtree(layer, ignore_errors=True)  # a new node starts from the stock image
        for path in (layer / "upper", layer / "work", merged):
            path.mkdir(parents=True, exist_ok=True)
        self.node_root.mkdir(parents=True, exist_ok=True)
        self._open_namespaces(layer, merged)
        if self.network == NETWORK_LOCAL_ONLY:
            self._forwarder = LoopbackForwarder(self._ns_path("net"), self.forward_ports)
            try:
                self._forwarder.start()
            except OSError as exc:
                self.stop()
                raise IsolationError(f"node {self.node_id}: {exc}") from None

    def stop(self) -> None:
        """Release the node's namespaces; the overlay unmounts once no process of the node is left."""
        if self._forwarder is not None:
            self._forwarder.stop()
            self._forwarder = None
        for fd in self._ns_fds.values():
            os.close(fd)
        self._ns_fds.clear()

    @property
    def started(self) -> bool:
        return bool(self._ns_fds)

    @property
    def netns_path(self) -> str | None:
        """The node's own network namespace (local-only nodes), e.g. for `podman run --network ns:PATH`."""
        return self._ns_path("net") if "net" in self._ns_fds else None

    def _ns_path(self, kind: str) -> str:
        return f"/proc/{os.getpid()}/fd/{self._ns_fds[kind]}"

    def _open_namespaces(self, layer: Path, merged: Path) -> None:
        unshare = [self._tools["unshare"], "--mount", "--propagation", "private"]
        if self.network == NETWORK_LOCAL_ONLY:
            unshare.append("--net")
        helper = subprocess.Popen(
            [*unshare, "--", "/bin/sh", "-c", _MOUNT_SCRIPT, "azbatch-node", str(self.image.rootfs), str(layer),
             str(merged), *self.trusted_cas],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            assert helper.stdout is not None
            ready, _, _ = select.select([helper.stdout], [], [], _READY_TIMEOUT_S)
            line = helper.stdout.readline().decode().split() if ready else []
            if line[:1] != ["ready"]:
                helper.kill()
                err = helper.communicate()[1].decode(errors="replace").strip().splitlines()[-1:]
                raise IsolationError(
                    f"node {self.node_id}: cannot mount its disk (overlay of {self.image.rootfs}): "
                    f"{err[0] if err else 'no answer from unshare'}"
                )
            self.disk = line[1]
            kinds = ("mnt", "net") if self.network == NETWORK_LOCAL_ONLY else ("mnt",)
            for kind in kinds:
                self._ns_fds[kind] = os.open(f"/proc/{helper.pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if helper.stdin is not None:
                helper.stdin.close()  # the helper exits; our descriptors keep the namespaces alive
            helper.wait()

    # ------------------------------------------------------------------ processes

    def launch(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], admin: bool, usage_fd: int | None = None
    ) -> Launch:
        """The command that runs `argv` on this node in `cwd` (inside AZ_BATCH_NODE_ROOT_DIR).

        env: the task's variables (AZ_BATCH_* and its environment settings). The process gets exactly these plus
        what a Batch task gets on Linux: PATH (the image's, then the shared and working directories), HOME (the
        working directory) and USER. argv[0] is looked up on that PATH inside the node. With `usage_fd` (an fd
        the caller passes to the process), the command runs under task_rusage's reaper, which reports on it.
        """
        if usage_fd is not None:
            argv = task_rusage.reaped(list(argv), usage_fd)
        if not self.started:
            raise IsolationError(f"node {self.node_id}: the sandbox is not started")
        nsenter = [self._tools["nsenter"], f"--mount={self._ns_path('mnt')}"]
        if "net" in self._ns_fds:
            nsenter.append(f"--net={self._ns_path('net')}")
        merged = self.state_dir / "merged"
        bwrap = [
            self._tools["bwrap"],
            "--bind", str(merged), "/",
            "--proc", "/proc",
            "--ro-bind", "/proc/sys", "/proc/sys",
            "--dev", "/dev",
            # As on a Linux node: a world-writable /dev/shm (POSIX semaphores, e.g. Python's multiprocessing locks).
            "--perms", "1777", "--tmpfs", "/dev/shm",
            *self._mount_point_dirs(),
            "--bind", str(self.node_root), str(self.node_root),
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", self.node_id,
            "--die-with-parent", "--new-session",
            "--chdir", str(cwd),
            "--cap-drop", "ALL",
        ]  # fmt: skip
        if self.network == NETWORK_HOST and os.path.exists("/etc/resolv.conf"):
            bwrap += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        if admin:
            for cap in ADMIN_CAPABILITIES:
                bwrap += ["--cap-add", cap]
            command = list(argv)
        else:
            # setpriv (util-linux, in the image) drops root for the task user; changing uid clears every capability.
            bwrap += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            uid, gid = self.image.task_uid, self.image.task_gid
            command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *argv]
        inherited, explicit = split_launcher_env(self.task_env(env, admin=admin, cwd=cwd))
        for key, value in explicit.items():
            bwrap += ["--setenv", key, value]
        return Launch([*nsenter, "--", *bwrap, "--", *command], inherited)

    def _mount_point_dirs(self) -> list[str]:
        """Directories leading to the node root, traversable by every user as /mnt/batch is on Batch: bwrap would
        create missing ones 0700, and a root under e.g. /root (0700 in the image) would hide a non-admin task's
        files from their absolute paths. Only the node's own disk changes, never the image."""
        args: list[str] = []
        for ancestor in reversed(self.node_root.parents[:-1]):  # from the top, without "/"
            in_image = self.image.rootfs / ancestor.relative_to("/")
            if not in_image.exists():
                args += ["--perms", "0755", "--dir", str(ancestor)]
            elif in_image.is_dir() and not in_image.stat().st_mode & 0o001:
                args += ["--chmod", "0755", str(ancestor)]
        return args

    def task_env(self, env: Mapping[str, str], *, admin: bool, cwd: Path) -> dict[str, str]:
        """What a Batch Linux task sees besides its own variables (observed on Batch nodes: PATH ends with the
        shared and working directories, HOME is the working directory)."""
        workdir = env.get("AZ_BATCH_TASK_WORKING_DIR") or str(cwd)
        path = [NODE_PATH] + [p for p in (env.get("AZ_BATCH_NODE_SHARED_DIR"), workdir) if p]
        user = "root" if admin else self.image.task_user
        return {"PATH": ":".join(path), "HOME": workdir, "USER": user, "LOGNAME": user, **env}

    def task_owner(self, admin: bool) -> tuple[int, int]:
        """(uid, gid) that should own a task's directories so it can write them: root, or the task user."""
        return (0, 0) if admin else (self.image.task_uid, self.image.task_gid)
