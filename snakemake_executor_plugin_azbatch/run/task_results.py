"""What comes back from a finished task: its outputs downloaded and checked, or its Batch logs, the node's upload
log and a one-paragraph reason; many finished tasks collected at once."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any, Callable

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from ..azure_api.batch_client import BatchService
from ..config import Config
from ..staging import Staging
from ..tasks import task_spec
from ..azure_api.azure_sdk import enum_text, error_text, redact
from ..staging.log_tails import SAVED_LOG_BYTES, file_tail
from .node_health import upload_errors
from .outage import OutageExpired, Outages
from ..tasks.output_check import output_problem, recreate_empty_dirs
from ..staging.input_check import mismatched_blobs

EMPTY_DIRS_LIMIT = 16 << 20  # the node's list of empty directories: 16 MiB is ~200,000 of them

# How Snakemake on the node reports the rule's failed command (Python's CalledProcessError text) before it exits 1.
_COMMAND_EXIT = re.compile(rb"returned non-zero exit status (\d+)\.|died with <Signals\.(SIG\w+): \d+>\.")

STATE_DIR = Path(".snakemake") / "azbatch"
LOG_DIR = STATE_DIR / "logs"


class TaskResults:
    """`link_failure_line(job_info, failure, upload_log)`: why a task failed on an expired link, or None
    (link_renewal.py)."""

    def __init__(self, config: Config, batch: BatchService, staging: Staging, outages: Outages, workdir: str, logger,
                 link_failure_line: Callable[[SubmittedJobInfo, Any, str], str | None]):
        self.config = config
        self.batch = batch
        self.staging = staging
        self.layout = staging.layout
        self.outages = outages
        self.workdir = workdir
        self.logger = logger
        self.link_failure_line = link_failure_line

    async def collect_all(self, finished_jobs: list) -> list[tuple[bool, str | None, list[str]] | None]:
        """`_collect` for every finished job, `upload_concurrency` at a time: each costs a few blob round trips,
        so one after the other a round of thousands of finished tasks would take as many seconds (hours at 20,000).
        None for a job whose download met an outage past the tolerance (the run is ending)."""
        limit = asyncio.Semaphore(self.config.scale.upload_concurrency)

        async def collect(job_info: SubmittedJobInfo, task) -> tuple[bool, str | None, list[str]] | None:
            async with limit:
                try:
                    return await asyncio.to_thread(self._collect, job_info, task)
                except OutageExpired:
                    return None
                except Exception as e:  # never let one task stop the status thread (Snakemake would wait forever)
                    return False, f"azbatch: collecting task {job_info.external_jobid} failed: {error_text(e)}", []

        return await asyncio.gather(*(collect(job_info, task) for job_info, task in finished_jobs))

    def _recreate_empty_dirs(self, prefix: str, outputs: list[task_spec.OutputPath], downloads) -> str | None:
        """Empty directories inside directory() outputs, from the list the node uploaded next to them (read by
        name, never saved among the user's files)."""
        if not any(o.directory for o in outputs):
            return None
        blob = f"{self.layout.task_files_dir(prefix)}/{task_spec.EMPTY_DIRS_FILE}"
        record = self.outages.storage.call(lambda: downloads.read_small(blob, EMPTY_DIRS_LIMIT))
        return recreate_empty_dirs(record, outputs, self.workdir) if record is not None else None

    def _remove_changed_inputs(self, stderr_tail: str) -> None:
        """Content-addressed blobs the node found changed (staging/input_check.py) are removed, one line each, so a
        retry or the next run uploads them again; a changed blob of this run is not used again."""
        for path, blob, name_start in mismatched_blobs(stderr_tail):
            self.staging.forget_file(os.path.join(self.workdir, path))  # hashed again, through the store
            if not self.staging.is_cas(blob):  # an earlier task's output, never read by another run
                continue
            blob = self.outages.storage.call(lambda: self.staging.remove_cas_blob(blob, name_start))
            if blob:
                self.logger.warning(
                    f"azbatch: removed blob {blob} (input {path}) from storage container "
                    f"{self.config.storage.container}: its content no longer matched its sha256 name; a retry "
                    "(--retries) or the next run uploads it again"
                )

    def _bring_back(self, job_info: SubmittedJobInfo, prefix: str, ok: bool, downloads) -> tuple[bool, list[str]]:
        """Download the task's logs, and its outputs when Batch says it succeeded, then check them; (still ok,
        problems). `downloads`: from this run's container, or a dead run's for a task adopted from it."""
        problems = []
        try:
            files = task_spec.job_files(job_info.job)
            wanted = [*(files.outputs if ok else ()), *files.logs]  # outputs are uploaded on success only
            # A storage outage is waited out (outage.py) rather than failing the job.
            self.outages.storage.call(lambda: downloads.download_files(
                self.layout.task_files_dir(prefix), [o.path for o in wanted if not o.directory],
                [o.path for o in wanted if o.directory], self.workdir,
            ))
            if ok:
                outputs = files.outputs
                problem = self._recreate_empty_dirs(prefix, outputs, downloads) or output_problem(outputs, self.workdir)
                if problem:
                    ok = False
                    problems.append(f"{problem}; rerun with --azbatch-keep-job to inspect the task's files")
                for out in outputs:
                    if ok and out.directory:
                        os.makedirs(out.path, exist_ok=True)  # an empty directory output has no blobs
        except OutageExpired:
            raise
        except Exception as e:
            ok = False
            problems.append(redact(str(e)))
        return ok, problems

    def _save_logs(self, prefix: str, log_dir: Path, problems: list[str], downloads) -> tuple[list[str], str]:
        """The ends of the task's Batch logs saved locally (and blobs the node found changed removed); (saved
        paths, the end of stderr). A failure is added to `problems`."""
        aux_logs = []
        stderr_tail = ""
        try:
            for name in task_spec.BATCH_LOG_FILES:  # their ends only: a failed task's stderr may be huge
                blob = f"{self.layout.task_batch_logs_dir(prefix)}/{name}"
                local = os.path.join(self.workdir, log_dir, name)
                saved = self.outages.storage.call(
                    lambda blob=blob, local=local: downloads.download_tail(blob, local, SAVED_LOG_BYTES))
                aux_logs += [saved] if saved else []
            stderr_tail = file_tail(log_dir / "stderr.txt")
            self._remove_changed_inputs(stderr_tail)
        except OutageExpired:
            raise
        except Exception as e:
            problems.append(f"fetching Batch logs failed: {redact(str(e))}")
        return aux_logs, stderr_tail

    def _collect(self, job_info: SubmittedJobInfo, task) -> tuple[bool, str | None, list[str]]:
        """Bring back what the task wrote; on failure, its Batch logs and a one-paragraph reason."""
        info = task.execution_info
        result = enum_text(getattr(info, "result", None))
        exit_code = getattr(info, "exit_code", None)
        succeeded = result == "success" and exit_code in (None, 0)  # by Batch's account, before the outputs' check
        ok = succeeded
        prefix = job_info.aux["blob_prefix"]
        downloads = self.staging.downloads_for(job_info.aux.get("run_container"))  # an adopted task: its run's
        ok, problems = self._bring_back(job_info, prefix, ok, downloads)
        if ok:
            return True, None, []
        tid = job_info.external_jobid
        log_dir = LOG_DIR / tid
        aux_logs, stderr_tail = self._save_logs(prefix, log_dir, problems, downloads)
        failure = getattr(info, "failure_info", None)
        upload_log = ""
        if failure is not None and str(failure.code or "").startswith("FileUpload"):  # the node's own account
            upload_log, saved = upload_errors(self.batch.client, job_info.aux["batch_job"], tid, log_dir, self.logger)
            aux_logs += [str(saved)] if saved else []
            saved_text = f" (its log: {saved})" if saved else ""
            problems.append(f"the node could not upload the task's output files{saved_text}")
        command_exit = command_exit_status(log_dir / "stderr.txt") if exit_code == 1 else None
        if succeeded:
            parts = [f"azbatch: Batch task {tid} succeeded but its outputs are wrong"]
        elif command_exit:
            parts = [f"azbatch: Batch task {tid} failed ({command_exit} of the rule's command; Snakemake on the "
                     f"node exited 1)"]
        else:
            parts = [f"azbatch: Batch task {tid} failed (exit code {exit_code})"]
        if failure is not None:
            details = "; ".join(f"{d.name}={d.value}" for d in (failure.details or []))
            parts.append(f"{enum_text(failure.category)} {failure.code}: {failure.message or ''}{' (' + details + ')' if details else ''}")
        parts += problems
        message = ". ".join(redact(p) for p in parts) + "."
        expired = self.link_failure_line(job_info, failure, upload_log)  # link_renewal.py
        if expired:
            message += f"\n{expired}"
        if upload_log:
            message += f"\nThe node's fileuploaderr.txt:\n{upload_log}\n"
        if stderr_tail:
            message += f"\nLast lines of stderr:\n{redact(stderr_tail)}\n"
        return False, message, aux_logs


def command_exit_status(stderr: Path) -> str | None:
    """The rule's own failure ("exit code 3", "signal SIGKILL") from the end of the task's saved stderr, where
    Snakemake on the node reports the command that failed (the task itself then exits 1); None when absent."""
    try:
        with open(stderr, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - (64 << 10)))
            matches = list(_COMMAND_EXIT.finditer(f.read()))
    except OSError:
        return None
    if not matches:
        return None
    code, signal_name = matches[-1].groups()
    return f"exit code {int(code)}" if code else f"signal {signal_name.decode()}"
