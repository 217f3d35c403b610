"""Batch's error codes as exceptions: each class carries its HTTP status and code; the HTTP layer renders the body.

Raise the named class with a message (and `values`, which Batch reports as `[{key, value}]` details). `BatchError`
itself is the base; `DynamicError` is for errors whose status and code come from outside (injected faults).
"""

from __future__ import annotations

from collections.abc import Mapping


class BatchError(Exception):
    """An error answered with a Batch error body: `status`, `code`, `message`, `values`."""

    status = 500
    code = "InternalError"
    default_message = "The local Batch service hit an internal error; see its log."

    def __init__(self, message: str | None = None, values: Mapping[str, object] | None = None) -> None:
        self.message = message or self.default_message
        self.values = {key: str(value) for key, value in (values or {}).items()}
        super().__init__(self.message)


class DynamicError(BatchError):
    """An error whose status and code are chosen at run time (fault injection, authentication)."""

    def __init__(self, status: int, code: str, message: str, values: Mapping[str, object] | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message, values)


# -- 400: the request is malformed -----------------------------------------------------------------------------


class InvalidRequestBody(BatchError):
    status, code = 400, "InvalidRequestBody"
    default_message = "The request body is invalid."


class MissingRequiredProperty(BatchError):
    status, code = 400, "MissingRequiredProperty"
    default_message = "A required property is missing."


class InvalidPropertyValue(BatchError):
    status, code = 400, "InvalidPropertyValue"
    default_message = "A property has an invalid value."


class TaskDependenciesNotSpecifiedOnJob(BatchError):
    status, code = 400, "TaskDependenciesNotSpecifiedOnJob"
    default_message = "The job does not use task dependencies."


class InvalidQueryParameterValue(BatchError):
    status, code = 400, "InvalidQueryParameterValue"
    default_message = "A query parameter has an invalid value."


class OutOfRangeQueryParameterValue(BatchError):
    status, code = 400, "OutOfRangeQueryParameterValue"
    default_message = "A query parameter is out of range."


class MissingRequiredQueryParameter(BatchError):
    status, code = 400, "MissingRequiredQueryParameter"
    default_message = "A required query parameter is missing."


class InvalidHeaderValue(BatchError):
    status, code = 400, "InvalidHeaderValue"
    default_message = "A header has an invalid value."


class InvalidUri(BatchError):
    status, code = 400, "InvalidUri"
    default_message = "The request URI is invalid."


class RequestUrlFailedToParse(BatchError):
    status, code = 400, "RequestUrlFailedToParse"
    default_message = "The request line could not be parsed."


class InvalidHttpVerb(BatchError):
    status, code = 400, "InvalidHttpVerb"
    default_message = "The HTTP verb is not recognized."
class AutoScalingFormulaSyntaxError(BatchError):
    status, code = 400, "AutoScalingFormulaSyntaxError"
    default_message = "The autoscale formula has a syntax error."


# -- 404: the entity does not exist ----------------------------------------------------------------------------


class PoolNotFound(BatchError):
    status, code = 404, "PoolNotFound"
    default_message = "The specified pool does not exist."


class NodeNotFound(BatchError):
    status, code = 404, "NodeNotFound"
    default_message = "The specified node does not exist."


class ApplicationNotFound(BatchError):
    status, code = 404, "ApplicationNotFound"
    default_message = "The specified application does not exist."


class JobNotFound(BatchError):
    status, code = 404, "JobNotFound"
    default_message = "The specified job does not exist."


class TaskNotFound(BatchError):
    status, code = 404, "TaskNotFound"
    default_message = "The specified task does not exist."


class FileNotFound(BatchError):
    status, code = 404, "FileNotFound"
    default_message = "The specified file does not exist."
# -- 405 / 409 / 412 / 413 / 416 / 500 -------------------------------------------------------------------------


class UnsupportedHttpVerb(BatchError):
    status, code = 405, "UnsupportedHttpVerb"
    default_message = "The HTTP verb is not supported on this resource."


class PoolExists(BatchError):
    status, code = 409, "PoolExists"
    default_message = "The specified pool already exists."


class PoolBeingDeleted(BatchError):
    status, code = 409, "PoolBeingDeleted"
    default_message = "The specified pool has been marked for deletion and is being deleted."


class PoolQuotaReached(BatchError):
    status, code = 409, "PoolQuotaReached"
    default_message = "The account has reached its quota of pools."


class PoolBeingResized(BatchError):
    status, code = 409, "PoolBeingResized"
    default_message = "The pool is being resized; wait until its allocation state is steady."


class OperationInvalidForCurrentState(BatchError):
    status, code = 409, "OperationInvalidForCurrentState"
    default_message = "The operation is not valid for the current state of the resource."


class JobExists(BatchError):
    status, code = 409, "JobExists"
    default_message = "The specified job already exists."


class ActiveJobAndScheduleQuotaReached(BatchError):
    status, code = 409, "ActiveJobAndScheduleQuotaReached"
    default_message = "The specified account has reached the maximum number of active jobs and job schedules."


class TaskExists(BatchError):
    status, code = 409, "TaskExists"
    default_message = "The specified task already exists."


class JobCompleted(BatchError):
    status, code = 409, "JobCompleted"
    default_message = "The specified job is already in a completed state."


class JobBeingTerminated(BatchError):
    status, code = 409, "JobBeingTerminated"
    default_message = "The specified job is being terminated."


class JobBeingDeleted(BatchError):
    status, code = 409, "JobBeingDeleted"
    default_message = "The specified job is being deleted."


class TaskIdSameAsJobPreparationTask(BatchError):
    status, code = 409, "TaskIdSameAsJobPreparationTask"
    default_message = "The task id is the id of the job's preparation task."


class TaskIdSameAsJobReleaseTask(BatchError):
    status, code = 409, "TaskIdSameAsJobReleaseTask"
    default_message = "The task id is the id of the job's release task."


class JobPreparationTaskOrReleaseTaskNotSpecified(BatchError):
    status, code = 409, "JobPreparationTaskOrReleaseTaskNotSpecified"
    default_message = "The job does not have a job preparation or job release task."


class TaskFilesUnavailable(BatchError):
    status, code = 409, "TaskFilesUnavailable"
    default_message = "The task has no files on a node yet."


class TaskFilesCleanedup(BatchError):
    status, code = 409, "TaskFilesCleanedup"
    default_message = "The files of the specified task are cleaned up."


class ConditionNotMet(BatchError):
    status, code = 412, "ConditionNotMet"
    default_message = "The condition specified using HTTP conditional header(s) is not met."


class RequestBodyTooLarge(BatchError):
    status, code = 413, "RequestBodyTooLarge"
    default_message = "The request body is too large."


class InvalidRange(BatchError):
    status, code = 416, "InvalidRange"
    default_message = "The requested range cannot be satisfied."


class InternalError(BatchError):
    status, code = 500, "InternalError"
    default_message = BatchError.default_message
