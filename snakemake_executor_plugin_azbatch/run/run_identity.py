"""Who a run is, as its Batch jobs' metadata says, and whether a run named there is still alive.

Host name and working directory name a workflow (`workflow_key`), never a run: containers share default host names
and paths such as `/workspace`, and `--nolock` runs share a directory. A run is named by a random run token and
carries, in every Batch job's metadata:

- `azbatch-process`: `<pid>:<start time>` of the Snakemake process (start time in clock ticks since boot, from
  /proc/<pid>/stat, so a reused pid is not mistaken for the run),
- `azbatch-space`: a hash of /etc/machine-id, the kernel's boot id and the pid namespace: two runs with the same
  value see the same processes, so a missing process proves the run dead (none of the three is sent raw),
- `azbatch-heartbeat`: UTC time the run last said it was alive (the run rewrites it every heartbeat interval),
  and `azbatch-heartbeat-every`: that interval in seconds.

A machine id copied into container images is not unique, so a different boot on the "same machine" proves nothing;
only a stale heartbeat ends a run whose processes this one cannot see.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

WORKFLOW_KEY = "azbatch-workflow"
RUN_KEY = "azbatch-run"
HOST_KEY = "azbatch-host"
PROCESS_KEY = "azbatch-process"
SPACE_KEY = "azbatch-space"
HEARTBEAT_KEY = "azbatch-heartbeat"
HEARTBEAT_EVERY_KEY = "azbatch-heartbeat-every"
STALE_INTERVALS = 3  # a run's heartbeat is stale after this many of its own intervals, at least


def workflow_key(workdir: str, host: str | None = None) -> str:
    """Same machine, same working directory: the same workflow (16 hex digits; neither path nor host is sent)."""
    host = host if host is not None else socket.gethostname()
    digest = hashlib.sha256(f"{host}\0{os.path.realpath(workdir)}".encode("utf-8")).hexdigest()
    return digest[:16]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when unknown, e.g. not Linux)."""
    stat = _read(f"/proc/{pid}/stat")
    # The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    fields = stat[stat.rfind(")") + 2:].split() if ")" in stat else []
    return fields[19] if len(fields) > 19 else ""


def process_space() -> str:
    """Hash of machine id, boot id and pid namespace (16 hex digits); '' when none of them can be read."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    parts = (_read("/etc/machine-id"), _read("/proc/sys/kernel/random/boot_id"), namespace)
    if not any(parts):
        return ""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:16]


def heartbeat_text(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_heartbeat(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RunIdentity:
    """This run, as its Batch jobs' metadata names it."""

    workflow: str  # workflow_key
    run: str  # the run token (random part included)
    host: str
    process: str  # pid:start
    space: str  # process_space()
    heartbeat_every: float  # seconds

    @classmethod
    def current(cls, workflow: str, run: str, heartbeat_every: float) -> "RunIdentity":
        pid = os.getpid()
        return cls(workflow, run, socket.gethostname()[:256], f"{pid}:{process_start(pid)}", process_space(),
                   heartbeat_every)

    def metadata(self, heartbeat: datetime) -> list[dict[str, str]]:
        """Every key, always: Jobs_UpdateJob replaces the whole metadata list."""
        return [
            {"name": WORKFLOW_KEY, "value": self.workflow},
            {"name": RUN_KEY, "value": self.run},
            {"name": HOST_KEY, "value": self.host},
            {"name": PROCESS_KEY, "value": self.process},
            {"name": SPACE_KEY, "value": self.space},
            {"name": HEARTBEAT_KEY, "value": heartbeat_text(heartbeat)},
            {"name": HEARTBEAT_EVERY_KEY, "value": f"{self.heartbeat_every:g}"},
        ]


def metadata_of(job: Any) -> dict[str, str]:
    items = getattr(job, "metadata", None) or []
    return {str(getattr(m, "name", "")): str(getattr(m, "value", "")) for m in items}


def process_alive(process: str) -> bool:
    """Whether `pid:start` is a live process here (a pid now used by another process is not)."""
    pid_text, _, start = process.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # unreadable: not proof of death
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return not start or process_start(pid) in ("", start)


def why_dead(meta: dict[str, str], me: RunIdentity, stale_seconds: float, now: datetime,
             created: datetime | None = None) -> str | None:
    """Why the run that wrote `meta` is dead, or None while it may be alive. A job without a heartbeat (an older
    plugin) is judged by its creation time."""
    process, space = meta.get(PROCESS_KEY, ""), meta.get(SPACE_KEY, "")
    if space and space == me.space and process and not process_alive(process):
        return f"its process {process.partition(':')[0]} on this machine has ended"
    beat = parse_heartbeat(meta.get(HEARTBEAT_KEY, "")) or created
    if beat is None:
        return None
    try:
        every = float(meta.get(HEARTBEAT_EVERY_KEY, "") or 0)
    except ValueError:
        every = 0.0
    limit = max(stale_seconds, STALE_INTERVALS * every)
    age = (now - beat).total_seconds()
    if age > limit:
        return f"no heartbeat for {age_text(age)} (stale after {age_text(limit)})"
    return None


def age_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
