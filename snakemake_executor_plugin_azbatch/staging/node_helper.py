"""Runs ON THE NODE with the stock image's python3 (standard library only; never imports the plugin).

The job preparation task downloads this file and the run's sources archive, then `prepare` checks the archive's
sha256 (its blob name) and extracts it once per node and Batch job. Each task then runs `link` (symlinks every
extracted file into its working directory, where Snakemake expects the Snakefile and scripts) and, when its inputs
travel in a manifest, `fetch` (downloads the listed blobs, each checked against its sha256); otherwise `verify`
checks the input resource files Batch downloaded against their sha256 before the rule's command runs. Around the
command, `watch` measures what its processes used (peak memory, CPU) for the run report (usage_probe.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

CHUNK = 1024 * 1024
FETCH_THREADS = 8
READ_URL_VARIABLE = "AZBATCH_BLOB_READ_URL"  # container URL + read SAS, set by the plugin for manifest tasks
RUN_READ_URL_VARIABLE = "AZBATCH_RUN_READ_URL"  # the run's own container + read SAS: manifest entries marked "run"
INPUT_MISMATCH_EXIT = 97  # an input's content differs from its sha256: the plugin removes the blob (input_check.py)
RUN_BLOBS_MARKER = "--run"  # verify: the entries after it are blobs this run's tasks wrote (not content-addressed)
RUN_BLOB_NAME = "written by this run"  # how a mismatch line names such a blob (the node does not know its name)
DIGEST_TOKEN_BYTES = 24  # 192 bits of the sha256: no second preimage (2^192) nor collision (2^96) within reach
CUT_NAME_MARK = "..."  # a content-addressed blob named by the first 48 hex of its name


def fail(message: str) -> None:
    print(f"azbatch node: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(archive: str, expected: str, dest: str) -> None:
    """Extract `archive` into `dest` once; a rerun (node reboot, retry) with the same archive does nothing."""
    marker = os.path.join(dest, f".azbatch-complete-{expected}")
    if os.path.exists(marker):
        return
    actual = sha256_of(archive)
    if actual != expected:
        fail(f"sources archive {archive} has sha256 {actual}, expected {expected}; the blob was altered or cut short")
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sources-", dir=parent)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:  # what the 'data' filter refuses, checked by hand for Pythons without it
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                fail(f"sources archive entry {member.name!r} is not a plain relative file")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, members=members, filter="data")
        else:
            tar.extractall(tmp, members=members)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    open(marker, "w").close()


def link(roots: list[str], workdir: str = ".") -> None:
    """Symlink every file below each root into `workdir` (directories are created, never linked, so what a task
    writes stays in its own directory); a file already there (an input) wins."""
    for root in roots:
        if not os.path.isdir(root):
            continue
        for current, dirs, files in os.walk(root):
            rel = os.path.relpath(current, root)
            target_dir = os.path.normpath(os.path.join(workdir, rel))
            os.makedirs(target_dir, exist_ok=True)
            for name in files:
                if name.startswith(".azbatch-complete-"):
                    continue
                target = os.path.join(target_dir, name)
                if not os.path.lexists(target):
                    os.symlink(os.path.join(current, name), target)


def _fetch_one(base: str, query: str, entry: list, run_url: str = "") -> None:
    node_path, blob, expected = entry[:3]
    if entry[3:] == ["run"]:  # a blob this run's task wrote, in the run's own container
        base, _, query = run_url.partition("?")
        base = base.rstrip("/")
    url = f"{base}/{urllib.parse.quote(blob, safe='/')}" + (f"?{query}" if query else "")
    os.makedirs(os.path.dirname(node_path) or ".", exist_ok=True)
    tmp = f"{node_path}.azbatch-part"
    digest = hashlib.sha256()
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
                digest = hashlib.sha256()
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            break
        except OSError as e:
            if attempt == 2:
                fail(f"downloading input {node_path} failed: {type(e).__name__} {getattr(e, 'code', '')}".strip())
    if digest.hexdigest() != expected:
        os.unlink(tmp)
        input_mismatch([(node_path, blob)])
    os.replace(tmp, node_path)


def fetch(manifest_path: str) -> None:
    """Download every [node path, blob name, sha256] of the manifest (whose own name is its sha256)."""
    expected = os.path.basename(manifest_path).split(".")[0]
    if sha256_of(manifest_path) != expected:
        fail(f"input manifest {manifest_path} does not match its sha256 name")
    with open(manifest_path) as f:
        entries = json.load(f)["files"]
    read_url = os.environ.get(READ_URL_VARIABLE)
    if not read_url:
        fail(f"{READ_URL_VARIABLE} is not set; the task cannot read its inputs")
    base, _, query = read_url.partition("?")
    run_url = os.environ.get(RUN_READ_URL_VARIABLE, "")
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        for _ in pool.map(lambda e: _fetch_one(base.rstrip("/"), query, e, run_url), entries):
            pass


def record_empty_dirs(record_file: str, roots: list[str]) -> None:
    """Write `record_file`: JSON listing the empty directories (leaves) at or below each root, a task's
    `directory()` outputs, which the node agent's file patterns cannot upload; the plugin recreates them."""
    empty = []
    for root in roots:
        for current, dirs, files in os.walk(root):
            if not dirs and not files:
                empty.append(os.path.normpath(current).replace(os.sep, "/"))
    with open(record_file, "w") as f:
        json.dump({"version": 1, "dirs": sorted(empty)}, f, separators=(",", ":"))


def mismatch_line(node_path: str, blob: str) -> str:
    """The one line the plugin looks for in a failed task's stderr (input_check.mismatched_blobs)."""
    return (f"azbatch: input {node_path} (blob {blob}) does not match its sha256: the blob changed after it was "
            "staged; the command did not run")


def input_mismatch(mismatches: list[tuple[str, str]]) -> None:
    for node_path, blob in mismatches:
        print(mismatch_line(node_path, blob), file=sys.stderr)
    sys.exit(INPUT_MISMATCH_EXIT)  # from a fetch thread too: the pool hands SystemExit to the main thread


def digest_token(sha256_hex: str) -> str:
    """The first 192 bits of a sha256 as 32 base64url characters (instead of 64 hex), so a task's command line
    stays small (issue 11: task definitions under 2 KB with a few inputs)."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)[:DIGEST_TOKEN_BYTES]).decode("ascii")


def verify(cas_prefix: str, tokens: list[str]) -> None:
    """Check input files against their sha256 before the command runs. `tokens` are PATH=DIGEST (digest_token);
    those before RUN_BLOBS_MARKER are content-addressed blobs `<cas_prefix><hex>`, which a mismatch line names by
    the first 48 hex and CUT_NAME_MARK. Files are hashed in parallel (hashlib releases the GIL); every mismatch is
    one line, then the task exits INPUT_MISMATCH_EXIT."""
    entries, in_run = [], False
    for token in tokens:
        if token == RUN_BLOBS_MARKER:
            in_run = True
            continue
        path, sep, expected = token.rpartition("=")
        try:
            cut = base64.urlsafe_b64decode(expected).hex()
        except ValueError:  # binascii.Error
            cut = ""
        if not sep or not path or len(cut) != 2 * DIGEST_TOKEN_BYTES:
            fail(f"verify: {token!r} is not PATH=DIGEST")
        entries.append((path, expected, RUN_BLOB_NAME if in_run else f"{cas_prefix}{cut}{CUT_NAME_MARK}"))

    def check(entry: tuple[str, str, str]) -> tuple[str, str] | None:
        path, expected, blob = entry
        try:
            actual = digest_token(sha256_of(path))
        except OSError:
            actual = ""
        return None if actual == expected else (path, blob)

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        mismatches = [m for m in pool.map(check, entries) if m]
    if mismatches:
        input_mismatch(mismatches)


USAGE_VERSION = "v1"  # first part of a usage file's name; the plugin reads only names of versions it knows
SAMPLE_SECONDS = (0.2, 1.0)  # /proc sampling interval: short at first (short rules), then gentler on the node
SAMPLE_SPEEDUP_UNTIL = 30.0  # seconds after which the longer interval applies


def _children_by_scan(pid: int) -> list[int]:
    """Children of `pid` from every process's parent in /proc/*/stat (kernels without .../children)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (/proc/PID/task/TID/children); [] once it is gone."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return _children_by_scan(pid) if os.path.isdir(f"/proc/{pid}") else []
    except (OSError, ValueError):
        pass
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(resident now, resident peak) of one process in KiB (VmRSS, VmHWM); zeros once it is gone."""
    now = peak = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    now = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return now, peak


class TreePeak:
    """Peak resident memory of a shell's process tree: the sum over its processes at each sample, floored by the
    largest single process's own peak (VmHWM, which catches what rose and fell between samples). `rule` counts
    the processes below the shell's direct children (the node's Snakemake runs the rule's command there);
    `tree` counts Snakemake too."""

    def __init__(self, shell: int, me: int) -> None:
        self.shell, self.me = shell, me
        self.rule = self.tree = 0

    def sample(self) -> None:
        rule_now = tree_now = 0
        level, depth = [c for c in _children(self.shell) if c != self.me], 1
        while level:
            following = []
            for pid in level:
                now, peak = _memory_kib(pid)
                tree_now += now
                if depth > 1:
                    rule_now += now
                    self.rule = max(self.rule, peak)
                self.tree = max(self.tree, peak)
                following += _children(pid)
            level, depth = following, depth + 1
        self.rule, self.tree = max(self.rule, rule_now), max(self.tree, tree_now)


def _children_seconds(times_file: str) -> tuple[float, float]:
    """The children's (user, system) seconds from bash's `times` output (its second line: `0m1.250s 0m0.020s`)."""
    try:
        with open(times_file) as f:
            lines = f.read().split("\n")
        values = []
        for text in lines[1].split()[:2]:
            minutes, _, seconds = text.rstrip("s").partition("m")
            values.append(int(minutes) * 60 + float(seconds))
        return values[0], values[1]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def usage_name(kind: str, cpu: tuple[float, float] | None, peak: TreePeak, wall: float) -> str:
    """The usage file's name carries the values, so one blob listing reads every task's (no request per task):
    v1-<d|s|x>-u<user ms>-k<kernel ms>-r<rule peak KiB>-t<tree peak KiB>-w<wall ms>; `running` instead of the
    numbers while the command runs (a task killed meanwhile still tells its node kind)."""
    if cpu is None:
        return f"{USAGE_VERSION}-{kind}-running"
    return (f"{USAGE_VERSION}-{kind}-u{round(cpu[0] * 1000)}-k{round(cpu[1] * 1000)}-r{peak.rule}-t{peak.tree}"
            f"-w{round(wall * 1000)}")


USAGE_URL_VARIABLE = "AZBATCH_USAGE_URL"  # usage_probe.URL_VARIABLE: the run container + write SAS
USAGE_BLOB_DIR = "usage"  # usage_probe.LISTING_PREFIX without its '/'


def _put_usage(name: str, attempts: int = 2) -> None:
    """The measurement as an empty blob usage/<task id>/<name> in the run's container (Put Blob); no link (a
    managed identity: the output file spec uploads the file) or any failure: nothing, the task goes on."""
    url, task = os.environ.get(USAGE_URL_VARIABLE, ""), os.environ.get("AZ_BATCH_TASK_ID", "")
    if not url or not task:
        return
    base, _, query = url.partition("?")
    blob = urllib.parse.quote(f"{USAGE_BLOB_DIR}/{task}/{name}", safe="/")
    request = urllib.request.Request(f"{base.rstrip('/')}/{blob}" + (f"?{query}" if query else ""), data=b"",
                                     method="PUT", headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"})
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10):  # a task's end waits for it: never long
                return
        except OSError:
            pass


def watch(directory: str) -> None:
    """Run in the background by the task's shell (usage_probe.py) around the rule's command: sample the peak
    memory of the shell's process tree until SIGTERM (or the shell's .end file), then name a file in `directory` with the values; CPU is
    the difference of the shell's `times` before and after the command (begin / end files it wrote). Never fails
    the task: every problem ends in silence."""
    import signal
    import threading
    import time

    # The handler only appends to a list: a handler that takes a lock (Event.set) deadlocks when the signal lands
    # while the main thread holds that same lock (inside Event.wait), and the task would never end.
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    dedicated = os.environ.get("AZ_BATCH_NODE_IS_DEDICATED", "").lower()
    kind = {"true": "d", "false": "s"}.get(dedicated, "x")
    peak, started = TreePeak(os.getppid(), os.getpid()), time.monotonic()
    running = os.path.join(directory, usage_name(kind, None, peak, 0.0))
    try:
        open(running, "w").close()
        # The node's kind, known even if the task is killed; on a thread, so sampling starts at once.
        threading.Thread(target=_put_usage, args=(os.path.basename(running), 1), daemon=True).start()
        end_file = os.path.join(directory, ".end")
        while not stopped and not os.path.exists(end_file):  # .end: a SIGTERM sent before the handler
            peak.sample()
            elapsed = time.monotonic() - started
            time.sleep(SAMPLE_SECONDS[0] if elapsed < SAMPLE_SPEEDUP_UNTIL else SAMPLE_SECONDS[1])
        wall = time.monotonic() - started
        begin = _children_seconds(os.path.join(directory, ".begin"))
        end = _children_seconds(end_file)
        cpu = (max(0.0, end[0] - begin[0]), max(0.0, end[1] - begin[1]))
        final = usage_name(kind, cpu, peak, wall)
        os.replace(running, os.path.join(directory, final))
        _put_usage(final)
    except OSError:
        pass


def main(argv: list[str]) -> None:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "prepare" and len(args) == 3:
        prepare(*args)
    elif command == "link":
        here = os.path.dirname(os.path.abspath(__file__))
        link(args or [os.path.join(here, "sources"), os.path.join(here, "extra")])
    elif command == "fetch" and len(args) == 1:
        fetch(args[0])
    elif command == "empty-dirs" and args:
        record_empty_dirs(args[0], args[1:])
    elif command == "verify" and args:
        verify(args[0], args[1:])
    elif command == "watch" and len(args) == 1:
        watch(args[0])
    else:
        fail("usage: node_helper.py prepare ARCHIVE SHA256 DEST | link [ROOT...] | fetch MANIFEST | "
             "empty-dirs RECORD DIR... | verify CAS_PREFIX [PATH=DIGEST]... [--run PATH=DIGEST...] | watch DIR")


if __name__ == "__main__":
    main(sys.argv[1:])
