"""What a task's processes used inside a node sandbox, for Batch's task statistics.

bubblewrap's pid-namespace init is not waited for by the outer bwrap, so the rusage of a sandboxed task never
reaches the node agent's wait4. The sandbox therefore runs the task under `REAPER` (the image's python3, as the
task's user): it starts the command, waits for it with wait4 (its rusage covers every descendant waited for), writes
`user system inblock oublock` to a pipe the agent holds, and ends as the command did (the same exit code, or
the same signal). A program that cannot be started is one line on stderr, as bwrap's own (`EXEC_FAILED_PREFIX`).
"""

from __future__ import annotations

EXEC_FAILED_PREFIX = "azbatch-node: execvp"

REAPER = f"""
import os, signal, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
os.set_inheritable(fd, False)
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, ("{EXEC_FAILED_PREFIX} %s: %s\\n" % (argv[0], os.strerror(e.errno))).encode())
        os._exit(1)
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda s, f: os.kill(pid, s))
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
os.write(fd, ("%r %r %d %d" % (ru.ru_utime, ru.ru_stime, ru.ru_inblock, ru.ru_oublock)).encode())
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
os._exit(code & 255)
"""


# The reaper is the node's python3, which a node may lack (its image, or a start task that removed it): a task
# must not need what the node does not have, so without one the command runs as it is (no statistics beyond
# bwrap's own), a missing program still named in the reaper's words.
_WITHOUT_PYTHON = (
    'command -v python3 >/dev/null 2>&1 && exec python3 -c "$0" "$@"; shift; '
    'command -v "$1" >/dev/null 2>&1 || { echo "' + EXEC_FAILED_PREFIX + ' $1: No such file or directory" >&2; '
    'exit 1; }; exec "$@"'
)


def reaped(argv: list[str], fd: int) -> list[str]:
    """`argv` run under the reaper, which reports on `fd`."""
    return ["/bin/sh", "-c", _WITHOUT_PYTHON, REAPER, str(fd), *argv]


def parse(data: bytes) -> tuple[float, float, int, int] | None:
    """(user s, system s, block inputs, block outputs) as the reaper wrote them; None when it wrote nothing."""
    try:
        user, system, inblock, oublock = data.decode().split()
        return float(user), float(system), int(inblock), int(oublock)
    except ValueError:
        return None
