"""Pure translation of a Snakemake job into Batch REST bodies (task, job, job preparation task). No network."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

MAX_ID_LENGTH = 64
BATCH_LOG_FILES = ("stdout.txt", "stderr.txt")
BATCH_LOGS_PATTERN = "../std*.txt"  # matches exactly BATCH_LOG_FILES in the task directory
# What a task with directory() outputs writes in its working directory after Snakemake succeeded: the outputs'
# empty directories, which no file pattern uploads (node_helper.py empty-dirs; output_check recreates them).
EMPTY_DIRS_FILE = ".azbatch-empty-dirs.json"
TASK_PREFIX_VARIABLE = "AZBATCH_TASK_PREFIX"  # the job-wide part of every task's script (job environment)
SNAKEMAKE_FUNCTION = "snakemake_task"  # defined by that prefix: Snakemake's run-wide command line, job args as "$@"
RUN_WIDE = object()  # stands for "no particular job" where the executor composes the run-wide command line

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def safe_id_part(text: str) -> str:
    return _UNSAFE_ID_CHARS.sub("-", text).strip("-") or "x"


def short_hash(*parts: Any, length: int = 8) -> str:
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return digest[:length]


def task_id(job) -> str:
    """Deterministic Batch task id: `<rule>-<jobid>-a<attempt>-<hash>` (`group-<group>-...` for group jobs), ≤ 64
    characters of [A-Za-z0-9_-]; the hash keeps it unique when the rule or group name is truncated."""
    if job.is_group():
        label = f"group-{safe_id_part(str(job.groupid))}"
        ident = short_hash(job.jobid, length=6)
    else:
        label = safe_id_part(job.name)
        ident = str(job.jobid)
    suffix = f"-{ident}-a{job.attempt}-{short_hash(job.name, job.jobid, job.attempt, sorted(map(str, job.output)))}"
    return label[: MAX_ID_LENGTH - len(suffix)] + suffix


def job_id(workflow_label: str, pool_id: str, run_token: str, generation: int = 1) -> str:
    """Batch job id for one run on one pool, e.g. `sm-myworkflow-20250101T120000-ab12cd-mypool`; later generations
    (a new job for fresh links, link_renewal.py) end in `-g2`, `-g3`, ..."""
    tail = f"-{run_token}-{safe_id_part(pool_id)}"
    head = f"sm-{safe_id_part(workflow_label)}"
    mark = f"-g{generation}" if generation > 1 else ""  # kept whole: a cut one would name the first generation
    return (head[: max(4, MAX_ID_LENGTH - len(tail))] + tail)[: MAX_ID_LENGTH - len(mark)] + mark


@dataclass(frozen=True)
class OutputPath:
    path: str  # relative to the working directory
    directory: bool = False
    required: bool = True  # False: upload if present (logs, benchmarks, temp files)


@dataclass
class JobFiles:
    """What a (group) job reads and writes, as working-directory paths."""

    inputs: list[str] = field(default_factory=list)
    outputs: list[OutputPath] = field(default_factory=list)  # uploaded when the task succeeds
    logs: list[OutputPath] = field(default_factory=list)  # uploaded when the task completes (also on failure)


def _flag(f, name: str) -> bool:
    flags = getattr(f, "flags", None) or {}
    return bool(flags.get(name))


def _is_storage(f) -> bool:
    return bool(getattr(f, "is_storage", False))


def job_files(job) -> JobFiles:
    """Inputs to stage and products to bring back. For a group job every member's products come back (Snakemake
    checks them all), except members' temp files, which only come back if present."""
    members = list(job.jobs) if job.is_group() else [job]
    files = JobFiles(inputs=[str(f) for f in job.input if not _is_storage(f)])
    seen: set[str] = set()
    for member in members:
        for f in member.output:
            if _is_storage(f) or str(f) in seen:
                continue
            seen.add(str(f))
            directory = bool(getattr(f, "is_directory", False)) or _flag(f, "directory")
            required = not (_flag(f, "temp") or _flag(f, "nodelocal"))
            files.outputs.append(OutputPath(str(f), directory=directory, required=required))
        products = list(member.log)
        if getattr(member, "benchmark", None):
            products.append(member.benchmark)
        for f in products:
            if _is_storage(f) or str(f) in seen:
                continue
            seen.add(str(f))
            files.logs.append(OutputPath(str(f), required=False))
    return files


_GLOB_CHARS = re.compile(r"([*?\[])")


def glob_escape(path: str) -> str:
    return _GLOB_CHARS.sub(r"[\1]", path)


def _posix(path: str) -> str:
    return path.replace(os.sep, "/")


def _fixed_part(pattern: str) -> str:
    """The leading directories of a pattern without any wildcard: Batch names the blobs of a wildcard pattern
    relative to them. An escaped character (`[[]`) is a wildcard too."""
    fixed = []
    for part in pattern.split("/")[:-1]:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def output_file_spec(
    out: OutputPath, blob_dir: str, container_url: str, condition: str, identity: dict | None
) -> dict:
    """One Batch OutputFile. The blob of `out.path` is always `<blob_dir>/<out.path>`: a plain pattern names the
    blob itself; a wildcard pattern (directories, optional files, and any name holding `* ? [`, which must be
    escaped as a one-character class and so makes the pattern a wildcard) names the virtual directory of the
    pattern's fixed part."""
    path = _posix(os.path.normpath(out.path))
    if out.directory:
        pattern = f"{glob_escape(path)}/**/*"
    elif out.required:
        pattern = glob_escape(path)
    else:
        # A one-character class makes the pattern a wildcard that matches just this file, so a missing log is
        # no upload error.
        parent, name = os.path.split(path)
        escaped = glob_escape(name)
        if escaped == name:
            escaped = f"{name[:-1]}[{name[-1]}]"
        pattern = f"{glob_escape(parent)}/{escaped}" if parent else escaped
    if pattern == path:
        destination = f"{blob_dir}/{path}"
    else:
        fixed = _fixed_part(pattern)
        destination = f"{blob_dir}/{fixed}" if fixed else blob_dir
    container: dict[str, Any] = {"containerUrl": container_url, "path": destination}
    if identity:
        container["identityReference"] = identity
    return {
        "filePattern": pattern,
        "destination": {"container": container},
        "uploadOptions": {"uploadCondition": condition},
    }


def output_file_specs(
    files: JobFiles, files_dir: str, batch_logs_dir: str, container_url: str, identity: dict | None = None
) -> list[dict]:
    """Outputs on success (with directory outputs, EMPTY_DIRS_FILE too); logs, benchmarks and Batch's stdout.txt /
    stderr.txt on completion. `files_dir` and
    `batch_logs_dir` are the task's virtual blob directories (staging's BlobLayout)."""
    specs = [output_file_spec(o, files_dir, container_url, "tasksuccess", identity) for o in files.outputs]
    if any(o.directory for o in files.outputs):
        specs.append(output_file_spec(OutputPath(EMPTY_DIRS_FILE), files_dir, container_url, "tasksuccess", identity))
    specs += [output_file_spec(o, files_dir, container_url, "taskcompletion", identity) for o in files.logs]
    # One pattern for both of Batch's logs (its fixed part is "..", so the blobs are <dir>/stdout.txt and
    # <dir>/stderr.txt): one container URL with its SAS less per task definition.
    container: dict[str, Any] = {"containerUrl": container_url, "path": batch_logs_dir}
    if identity:
        container["identityReference"] = identity
    specs.append(
        {
            "filePattern": BATCH_LOGS_PATTERN,
            "destination": {"container": container},
            "uploadOptions": {"uploadCondition": "taskcompletion"},
        }
    )
    return specs


def required_slots(threads: int, slots_per_node: int) -> tuple[int | None, str | None]:
    """requiredSlots for a job and an optional warning; None when the pool has one slot per node."""
    if slots_per_node <= 1:
        return None, None
    threads = max(1, int(threads))
    if threads > slots_per_node:
        return slots_per_node, (
            f"needs {threads} threads but nodes have {slots_per_node} slots; it gets a whole node ({slots_per_node} slots)"
        )
    return threads, None


def runtime_seconds(resources: Mapping[str, Any]) -> int | None:
    """Snakemake's `runtime` resource is in minutes."""
    runtime = resources.get("runtime")
    if isinstance(runtime, (int, float)) and not isinstance(runtime, bool) and runtime > 0:
        return int(runtime * 60)
    return None


def iso_duration(seconds: int) -> str:
    return f"PT{int(seconds)}S"


def command_line(script: str) -> str:
    """Batch runs command lines without a shell."""
    return f"/bin/bash -c {shlex.quote(script)}"


def snakemake_function(command: str) -> str:
    """A shell function running `command`, the run-wide Snakemake command line with "$@" where a task's own
    arguments go: each task definition then carries only those (about 100 bytes instead of about 600)."""
    return f"{SNAKEMAKE_FUNCTION}() {{ {command}; }}"


def path_prefix(dirs: Iterable[str]) -> str:
    """Shell snippet that puts the given directories (may contain $VARS) first on PATH."""
    dirs = list(dirs)
    if not dirs:
        return ""
    return 'export PATH="' + ":".join(dirs) + ':$PATH"'


PREPARATION_TASK_ID = "snakemake-prepare"


def preparation_task(
    script: str, resource_files: list[dict], container_image: str | None = None, env: Mapping[str, str] | None = None
) -> dict:
    """The job preparation task running `script` (composed of parts: bootstrap, ...) once per node and job; the
    job's tasks wait for its success. In a container image when the tasks run in one (Batch requires container
    settings for every task of a container-enabled pool), so what it installs fits the tasks' Python."""
    body: dict[str, Any] = {
        "id": PREPARATION_TASK_ID,
        "commandLine": command_line(script),
        "resourceFiles": resource_files,
        "waitForSuccess": True,
        "rerunOnNodeRebootAfterSuccess": False,
        "constraints": {"maxTaskRetryCount": 1},
    }
    if env:
        body["environmentSettings"] = [{"name": k, "value": str(v)} for k, v in sorted(env.items())]
    if container_image:
        body["containerSettings"] = {"imageName": container_image, "workingDirectory": "taskWorkingDirectory"}
    return body


def job_body(
    job_id: str,
    pool_id: str,
    display_name: str,
    *,
    workflow: str,
    prep_task: dict | None = None,
    metadata: list[dict] | None = None,
    common_env: Mapping[str, str] | None = None,
) -> dict:
    body: dict[str, Any] = {
        "id": job_id,
        "displayName": display_name[:1024],
        "poolInfo": {"poolId": pool_id},
        "onAllTasksComplete": "noaction",
        "constraints": {"maxTaskRetryCount": 0},
        "metadata": [{"name": "snakemake-workflow", "value": workflow}, *(metadata or [])],
    }
    if prep_task:
        body["jobPreparationTask"] = prep_task
    if common_env:
        body["commonEnvironmentSettings"] = [{"name": k, "value": str(v)} for k, v in sorted(common_env.items())]
    return body


@dataclass
class TaskRequest:
    """Everything needed to build one task body; built by the executor from a job."""

    id: str
    display_name: str
    script: str  # shell script run with /bin/bash -c
    env: Mapping[str, str] = field(default_factory=dict)
    resource_files: list[dict] = field(default_factory=list)
    output_files: list[dict] = field(default_factory=list)
    slots: int | None = None
    max_wall_clock_seconds: int | None = None
    container_image: str | None = None
    application_packages: list[dict] = field(default_factory=list)
    retention_seconds: int | None = None  # how long Batch keeps the task directory on its node


def task_body(req: TaskRequest) -> dict:
    """Only what differs from Batch's defaults, so a collection of 100 stays small: no retries (the default 0;
    Snakemake's --retries drives attempts), no empty lists. The display name stays: tools show it (run_demo.py's
    task table, Batch Explorer)."""
    constraints: dict[str, Any] = {}
    if req.max_wall_clock_seconds:
        constraints["maxWallClockTime"] = iso_duration(req.max_wall_clock_seconds)
    if req.retention_seconds:
        constraints["retentionTime"] = iso_duration(req.retention_seconds)
    body: dict[str, Any] = {
        "id": req.id,
        "displayName": req.display_name[:1024],
        "commandLine": command_line(req.script),
    }
    if req.env:
        body["environmentSettings"] = [{"name": k, "value": str(v)} for k, v in sorted(req.env.items())]
    if req.resource_files:
        body["resourceFiles"] = req.resource_files
    if req.output_files:
        body["outputFiles"] = req.output_files
    if constraints:
        body["constraints"] = constraints
    if req.slots:
        body["requiredSlots"] = req.slots
    if req.container_image:
        body["containerSettings"] = {
            "imageName": req.container_image,
            "workingDirectory": "taskWorkingDirectory",
        }
    if req.application_packages:
        body["applicationPackageReferences"] = req.application_packages
    return body
