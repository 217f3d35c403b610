"""How a task attempt ends, in Batch's words: exit codes, failureInfo shapes and the job action a failure asks for."""

from __future__ import annotations

import signal
from typing import Any

# Exit codes are a process's status as a Linux node's agent reports it: death by signal N is -N (a task process
# killed by SIGKILL reports -9 on Batch's Linux nodes, e.g. github.com/Azure/Batch/issues/101), i.e. what
# Popen.returncode says. A task ended by its maxWallClockTime: Batch's docs give 0xC000013A (STATUS_CONTROL_C_EXIT),
# a Windows code; the spec says a task Batch terminates may report "an operating system-defined exit code". Local
# nodes are Linux and their agent ends the task's process group with SIGKILL, so it reports -9.
WALL_CLOCK_EXIT_CODE = -signal.SIGKILL


def ended_by_user() -> dict[str, Any]:
    return {"category": "usererror", "code": "TaskEnded", "message": "Task Was Ended by User Request"}


def wall_clock_failure() -> dict[str, Any]:
    return {"category": "servererror", "code": "TaskEnded",
            "message": "The task exceeded its maxWallClockTime constraint and was ended"}


def exit_failure() -> dict[str, Any]:
    return {"category": "usererror", "code": "FailureExitCode",
            "message": "The task exited with an exit code representing a failure"}


UPLOAD_MESSAGES = {
    "FileUploadContainerNotFound": "The destination container of an output file does not exist; see "
                                   "fileuploaderr.txt in the task directory",
    "FileUploadMiscError": "One or more output files failed to upload; see fileuploaderr.txt in the task directory",
}


def upload_failure(code: str, first_error: str) -> dict[str, Any]:
    """failureInfo of a task whose output files did not all upload (Batch: category usererror, the task completes)."""
    return {
        "category": "usererror",
        "code": code,
        "message": UPLOAD_MESSAGES.get(code, UPLOAD_MESSAGES["FileUploadMiscError"]),
        "details": [{"name": "Message", "value": first_error}],
    }


def node_error(message: str) -> dict[str, Any]:
    return {"category": "servererror", "code": "Unknown", "message": message}


def exit_job_action(conditions: dict[str, Any] | None, exit_code: int | None, failure: dict[str, Any]) -> str:
    """The jobAction of a failed task's exitConditions, defaulting to terminate as Batch does for failures.

    `disable` is treated as `none` (jobs cannot be disabled here).
    """
    conditions = conditions or {}
    options = None
    if exit_code is not None and failure.get("code") in ("FailureExitCode", "TaskEnded"):
        for entry in conditions.get("exitCodes") or []:
            if entry.get("code") == exit_code:
                options = entry.get("exitOptions")
                break
        if options is None:
            for entry in conditions.get("exitCodeRanges") or []:
                if entry.get("start", 0) <= exit_code <= entry.get("end", -1):
                    options = entry.get("exitOptions")
                    break
    elif str(failure.get("code", "")).startswith("FileUpload"):
        options = conditions.get("fileUploadError")
    else:
        options = conditions.get("preProcessingError")
    if options is None:
        options = conditions.get("default")
    action = str((options or {}).get("jobAction") or "terminate").lower()
    return "terminate" if action == "terminate" else "none"
