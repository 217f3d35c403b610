"""Request-body validation: what the local service accepts in job, task and task-collection bodies.

Choices where Batch's behaviour is not documented (or would make a local service useless):
- `usesTaskDependencies: true` is refused with 400 `InvalidPropertyValue` (dependencies are not simulated), so a
  task `dependsOn` gets Batch's `TaskDependenciesNotSpecifiedOnJob`.
- `jobManagerTask`, `multiInstanceSettings` and `autoPoolSpecification` are refused with 400
  `InvalidPropertyValue` (not simulated) rather than silently ignored; `affinityInfo` is accepted and ignored.
- More than 100 tasks in one add-collection request: 413 `RequestBodyTooLarge`, nothing is added.
- Properties the service stores and answers with are type-checked (`check_shapes`: strings, booleans, whole
  numbers, ISO-8601 durations, lists of name/value pairs) and refused with 400 `InvalidPropertyValue`, `null`
  included, so a body of the wrong shape never comes back in a GET; properties not listed are kept as sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import (
    InvalidPropertyValue,
    InvalidRequestBody,
    JobBeingDeleted,
    JobBeingTerminated,
    JobCompleted,
    MissingRequiredProperty,
    RequestBodyTooLarge,
    TaskDependenciesNotSpecifiedOnJob,
    TaskIdSameAsJobPreparationTask,
    TaskIdSameAsJobReleaseTask,
)
from .timestamps import is_duration

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Shapes of the stored properties (`check_shapes`): a type, "duration", (int, low, high), {property: shape} for an
# object, [shape] for a list of them.
_PAIRS = [{"name": str, "value": str}]
_IDENTITY = {"resourceId": str}
_USER = {"username": str, "autoUser": {"scope": str, "elevationLevel": str}}
_RESOURCE_FILES = [{"httpUrl": str, "storageContainerUrl": str, "autoStorageContainerName": str, "blobPrefix": str,
                    "filePath": str, "fileMode": str, "identityReference": _IDENTITY}]
_TASK_CONSTRAINTS = {"maxWallClockTime": "duration", "retentionTime": "duration", "maxTaskRetryCount": (int, -1, None)}
_CONTAINER = {"imageName": str, "containerRunOptions": str, "workingDirectory": str}
_JOB_TASK = {"id": str, "commandLine": str, "resourceFiles": _RESOURCE_FILES, "environmentSettings": _PAIRS,
             "constraints": _TASK_CONSTRAINTS, "waitForSuccess": bool, "userIdentity": _USER,
             "rerunOnNodeRebootAfterSuccess": bool, "maxWallClockTime": "duration", "retentionTime": "duration",
             "containerSettings": _CONTAINER}
JOB_SHAPES: dict[str, Any] = {
    "displayName": str, "priority": (int, -1000, 1000), "maxParallelTasks": (int, -1, None),
    "allowTaskPreemption": bool, "metadata": _PAIRS, "commonEnvironmentSettings": _PAIRS,
    "constraints": {"maxWallClockTime": "duration", "maxTaskRetryCount": (int, -1, None)},
    "jobPreparationTask": _JOB_TASK, "jobReleaseTask": _JOB_TASK,
}
POOL_SHAPES: dict[str, Any] = {
    "displayName": str, "metadata": _PAIRS, "enableInterNodeCommunication": bool, "resizeTimeout": "duration",
    "startTask": {"commandLine": str, "resourceFiles": _RESOURCE_FILES, "environmentSettings": _PAIRS,
                  "userIdentity": _USER, "maxTaskRetryCount": (int, -1, None), "waitForSuccess": bool,
                  "containerSettings": _CONTAINER},
    "applicationPackageReferences": [{"applicationId": str, "version": str}],
}
TASK_SHAPES: dict[str, Any] = {
    "displayName": str, "requiredSlots": (int, 1, None), "constraints": _TASK_CONSTRAINTS,
    "environmentSettings": _PAIRS, "resourceFiles": _RESOURCE_FILES, "userIdentity": _USER,
    "outputFiles": [{"filePattern": str, "uploadOptions": {"uploadCondition": str},
                     "destination": {"container": {"containerUrl": str, "path": str, "identityReference": _IDENTITY,
                                                   "uploadHeaders": _PAIRS}}}],
    "containerSettings": _CONTAINER, "applicationPackageReferences": [{"applicationId": str, "version": str}],
    "exitConditions": dict,
}
MAX_TASKS_PER_COLLECTION = 100
_JOB_ENUMS = {
    "onAllTasksComplete": ("noaction", "terminatejob"),
    "onTaskFailure": ("noaction", "performexitoptionsjobaction"),
}


def check_shapes(body: dict[str, Any], shapes: dict[str, Any], where: str = "") -> None:
    """Each property of `body` that `shapes` names has that shape; InvalidPropertyValue naming the first that has
    not. (Its recursion is bounded: request bodies nest at most 64 levels, http_messages.MAX_JSON_DEPTH.)"""
    for name, value in body.items():
        if name in shapes:
            _check_shape(value, shapes[name], f"{where}{name}")


def _check_shape(value: Any, shape: Any, where: str) -> None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise _wrong(where, value, "an object")
        check_shapes(value, shape, f"{where}.")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise _wrong(where, value, "a list")
        for i, item in enumerate(value):
            _check_shape(item, shape[0], f"{where}[{i}]")
    elif shape == "duration":
        if not is_duration(value):
            raise _wrong(where, value, "an ISO 8601 duration such as PT1H")
    elif isinstance(shape, tuple) or shape is int:
        _, low, high = shape if isinstance(shape, tuple) else (int, None, None)
        if (isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low)
                or (high is not None and value > high)):
            bounds = "".join([f" of at least {low}" if low is not None else "",
                              f" and at most {high}" if high is not None else ""])
            raise _wrong(where, value, f"a whole number{bounds}")
    elif not isinstance(value, shape) or (shape is not bool and isinstance(value, bool)):
        raise _wrong(where, value, {str: "a string", bool: "true or false", dict: "an object"}.get(shape, "valid"))


def _wrong(where: str, value: Any, expected: str) -> InvalidPropertyValue:
    return InvalidPropertyValue(f"{where} must be {expected}.",
                                {"PropertyName": where, "PropertyValue": json.dumps(value)[:100]})


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MissingRequiredProperty(f"The {what} id is required.", {"PropertyName": "id"})
    if not ID_PATTERN.match(value):
        raise InvalidPropertyValue(
            f"The {what} id may contain only letters, digits, hyphens and underscores and at most 64 characters.",
            {"PropertyName": "id", "PropertyValue": value[:100], "Reason": "invalid characters or too long"},
        )
    return value


def check_job_body(body: Any) -> tuple[str, str]:
    """(job id, pool id) of a valid job body (BatchJobCreateOptions)."""
    if not isinstance(body, dict):
        raise InvalidRequestBody("The request body must be a JSON object describing a job.")
    job_id = check_id(body.get("id"), "job")
    check_shapes(body, JOB_SHAPES)
    pool_info = body.get("poolInfo")
    if not isinstance(pool_info, dict):
        raise MissingRequiredProperty("A job requires poolInfo.", {"PropertyName": "poolInfo"})
    if "autoPoolSpecification" in pool_info or not pool_info.get("poolId"):
        raise InvalidPropertyValue(
            "The local service supports only poolInfo.poolId (no auto pools).", {"PropertyName": "poolInfo.poolId"}
        )
    if body.get("usesTaskDependencies"):
        raise InvalidPropertyValue(
            "usesTaskDependencies is not supported by the local Batch service.",
            {"PropertyName": "usesTaskDependencies", "PropertyValue": "true"},
        )
    if body.get("jobManagerTask"):
        raise InvalidPropertyValue(
            "jobManagerTask is not supported by the local Batch service.", {"PropertyName": "jobManagerTask"}
        )
    for prop, allowed in _JOB_ENUMS.items():
        value = body.get(prop)
        if value is not None and str(value).lower() not in allowed:
            raise InvalidPropertyValue(
                f"{prop} must be one of {', '.join(allowed)}.", {"PropertyName": prop, "PropertyValue": str(value)}
            )
    check_metadata(body.get("metadata"))
    for prop in ("jobPreparationTask", "jobReleaseTask"):
        sub = body.get(prop)
        if sub is not None and (not isinstance(sub, dict) or not sub.get("commandLine")):
            raise MissingRequiredProperty(f"{prop}.commandLine is required.", {"PropertyName": f"{prop}.commandLine"})
    if body.get("jobReleaseTask") and not body.get("jobPreparationTask"):
        raise InvalidPropertyValue(
            "A job release task requires a job preparation task.", {"PropertyName": "jobReleaseTask"}
        )
    return job_id, str(pool_info["poolId"])


def check_job_accepts_tasks(state: str) -> None:
    if state == "completed":
        raise JobCompleted()
    if state == "terminating":
        raise JobBeingTerminated()
    if state == "deleting":
        raise JobBeingDeleted()


def check_task_body(job: dict[str, Any], body: Any) -> str:
    """The id of a valid task body (BatchTaskCreateOptions) for the job whose REST dict is `job`."""
    if not isinstance(body, dict):
        raise InvalidRequestBody("Each task must be a JSON object.")
    task_id = check_id(body.get("id"), "task")
    if not isinstance(body.get("commandLine"), str) or not body["commandLine"].strip():
        raise MissingRequiredProperty("The task commandLine is required.", {"PropertyName": "commandLine"})
    check_shapes(body, TASK_SHAPES)
    for prop, error in (("jobPreparationTask", TaskIdSameAsJobPreparationTask),
                        ("jobReleaseTask", TaskIdSameAsJobReleaseTask)):
        special = job.get(prop)
        if special and special.get("id", "").lower() == task_id.lower():
            raise error(f"The task id {task_id} is the id of the job's {prop}.")
    if body.get("dependsOn"):
        raise TaskDependenciesNotSpecifiedOnJob(
            "The job does not use task dependencies (not supported by the local service)."
        )
    if body.get("multiInstanceSettings"):
        raise InvalidPropertyValue("multiInstanceSettings is not supported by the local Batch service.",
                                   {"PropertyName": "multiInstanceSettings"})
    slots = body.get("requiredSlots", 1)
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise InvalidPropertyValue("requiredSlots must be a whole number ≥ 1.",
                                   {"PropertyName": "requiredSlots", "PropertyValue": str(slots)})
    for i, rf in enumerate(body.get("resourceFiles") or []):
        _check_resource_file(i, rf)
    for i, of in enumerate(body.get("outputFiles") or []):
        if not of.get("filePattern") or not (of.get("destination") or {}).get("container", {}).get(
            "containerUrl"
        ) or not (of.get("uploadOptions") or {}).get("uploadCondition"):
            raise MissingRequiredProperty(
                "outputFiles need filePattern, destination.container.containerUrl and uploadOptions.uploadCondition.",
                {"PropertyName": f"outputFiles[{i}]"},
            )
    return task_id


def _check_resource_file(i: int, rf: dict[str, Any]) -> None:
    sources = [k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if rf.get(k)]
    if len(sources) != 1:
        raise InvalidPropertyValue("Exactly one of httpUrl, storageContainerUrl, autoStorageContainerName is required.",
                                   {"PropertyName": f"resourceFiles[{i}]"})
    if rf.get("httpUrl") and not rf.get("filePath"):
        raise MissingRequiredProperty("filePath is required with httpUrl.",
                                      {"PropertyName": f"resourceFiles[{i}].filePath"})
    path = rf.get("filePath") or ""
    if path.startswith("/") or ".." in Path(path).parts:
        raise InvalidPropertyValue("A resource file's filePath cannot break out of the task working directory.",
                                   {"PropertyName": f"resourceFiles[{i}].filePath", "PropertyValue": path})


def check_task_collection(group: Any) -> list[Any]:
    """The task bodies of an add-collection body (`{"value": [...]}`), at most 100 of them."""
    if not isinstance(group, dict):
        raise InvalidRequestBody('The task collection must be a JSON object {"value": [...]}.')
    if "value" not in group:
        raise MissingRequiredProperty("The task collection has no 'value' list of tasks.", {"PropertyName": "value"})
    return check_task_list(group["value"])


def check_task_list(tasks: Any) -> list[Any]:
    """A list of at most 100 task bodies (each is checked on its own by `check_task_body`)."""
    if not isinstance(tasks, list):
        raise InvalidPropertyValue("The task collection's 'value' must be a list of tasks.", {"PropertyName": "value"})
    if len(tasks) > MAX_TASKS_PER_COLLECTION:
        raise RequestBodyTooLarge(
            f"The collection has {len(tasks)} tasks; at most {MAX_TASKS_PER_COLLECTION} may be added per request."
        )
    return tasks


def check_job_changes(changes: Any) -> dict[str, Any]:
    if not isinstance(changes, dict):
        raise InvalidRequestBody("The job changes must be a JSON object.")
    check_shapes(changes, JOB_SHAPES)
    check_metadata(changes.get("metadata"))
    return changes


def check_metadata(items: Any) -> None:
    """A metadata list (BatchMetadataItem: name and value, both required strings); an update replaces the list."""
    if items is None:
        return
    if not isinstance(items, list):
        raise InvalidPropertyValue("metadata must be a list of name/value items.", {"PropertyName": "metadata"})
    for i, item in enumerate(items):
        for key in ("name", "value"):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise MissingRequiredProperty(f"metadata[{i}].{key} is required and must be a string.",
                                              {"PropertyName": f"metadata[{i}].{key}"})


def terminate_reason(options: Any) -> str | None:
    """terminateReason from the optional Jobs_TerminateJob body."""
    if not isinstance(options, dict):
        raise InvalidRequestBody("The terminate options must be a JSON object.")
    reason = options.get("terminateReason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidPropertyValue("terminateReason must be a string.", {"PropertyName": "terminateReason"})
    return reason
