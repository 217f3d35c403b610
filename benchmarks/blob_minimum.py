"""The least Blob traffic a run could need without a shared filesystem, from Snakemake's own account of its jobs.

Snakemake logs every job it runs as a block (`rule NAME:` or, for jobs it runs itself, `localrule NAME:`, then
`input:`, `output:`, `log:`, `benchmark:` lines). From the log of a finished run and the files it left behind:

* each input file that no job produced (the workflow's data) is uploaded once;
* the workflow's sources travel as one archive: uploaded once, downloaded once per node that ran tasks;
* each Batch task downloads each of its input files once and uploads each file it wrote (outputs, logs,
  benchmarks; every file of a directory output);
* each file a task wrote is downloaded once to where Snakemake runs.

One request per file (fine for files below the single-request size; the example's are). Listing, container checks
and stdout/stderr are overhead above this minimum. The plugin's own share (`plugin_requests`: uploads of data and
archive, downloads of what tasks wrote) is what the service counts as `storagePlugin` (by User-Agent).
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

_JOB_HEADER = re.compile(r"^(local)?(rule|checkpoint) (\S+):$")
_FILE_FIELDS = ("input", "output", "log", "benchmark")


@dataclass
class LoggedJob:
    rule: str
    local: bool
    files: dict[str, list[str]] = field(default_factory=dict)


def logged_jobs(log_text: str) -> list[LoggedJob]:
    """The jobs Snakemake announced in its log, with their files (workdir-relative paths)."""
    jobs: list[LoggedJob] = []
    current: LoggedJob | None = None
    for line in log_text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            current = LoggedJob(rule=header.group(3), local=bool(header.group(1)))
            jobs.append(current)
            continue
        if not line.startswith("    "):
            current = None  # the block ended
            continue
        if current is None:
            continue
        key, _, value = line.strip().partition(": ")
        if key in _FILE_FIELDS and value:
            current.files[key] = [part.strip() for part in value.split(", ") if part.strip()]
    return jobs


def _files(workdir: Path, paths: list[str]) -> list[Path]:
    """Each path as files: a directory stands for every file below it."""
    result = []
    for rel in paths:
        path = workdir / rel
        if path.is_dir():
            result.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            result.append(path)
    return result


def sources_archive_size(workdir: Path, sources: list[str]) -> int:
    """Size of a gzip tar of the workflow's source files (the one archive a run needs to ship)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for rel in sources:
            archive.add(workdir / rel, arcname=rel)
    return len(buffer.getvalue())


@dataclass
class Minimum:
    tasks: int
    requests: int
    bytes: int
    plugin_requests: int = 0  # the submitting side's part: data and archive up, what tasks wrote down


def minimum_traffic(workdir: Path, log_text: str, sources: list[str], nodes: int) -> Minimum:
    jobs = logged_jobs(log_text)
    remote = [job for job in jobs if not job.local]
    produced = {p.resolve() for job in jobs for key in ("output", "log", "benchmark")
                for p in _files(workdir, job.files.get(key, []))}
    requests = 0
    size = 0
    downloads = 0
    data: set[Path] = set()
    for job in remote:
        inputs = _files(workdir, job.files.get("input", []))
        written = [p for key in ("output", "log", "benchmark") for p in _files(workdir, job.files.get(key, []))]
        data.update(p.resolve() for p in inputs if p.resolve() not in produced)
        requests += len(inputs) + 2 * len(written)
        downloads += len(written)
        size += sum(p.stat().st_size for p in inputs) + 2 * sum(p.stat().st_size for p in written)
    archive = sources_archive_size(workdir, sources)
    nodes_used = min(nodes, len(remote))
    requests += len(data) + 1 + nodes_used
    size += sum(p.stat().st_size for p in data) + archive * (1 + nodes_used)
    return Minimum(tasks=len(remote), requests=requests, bytes=size,
                   plugin_requests=len(data) + 1 + downloads)
