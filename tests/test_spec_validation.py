"""The spec validator itself: documented bodies pass, corrupted copies fail, routes map to the right operations.

Bodies come from the spec extract (one instance per documented JSON response, every property filled) and from a
task list written here; Microsoft's own examples are checked too when `AZBATCH_UPSTREAM_SPEC` names the upstream spec
file (its `examples/` folder next to it), which is not part of the repository.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import spec_validation
from support.spec_validation import SpecValidationPolicy, find_operation, load_spec, validate_response

pytestmark = pytest.mark.quick

UPSTREAM_ENV = "AZBATCH_UPSTREAM_SPEC"
UPSTREAM = os.environ.get(UPSTREAM_ENV)
EXAMPLES_DIR = Path(UPSTREAM).parent / "examples" if UPSTREAM else None
BASE_URL = "https://account.region.batch.azure.com"


def _operation_index() -> dict[str, tuple[str, str]]:
    """operationId -> (method, path template)."""
    index = {}
    for template, item in load_spec()["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                index[operation["operationId"]] = (method.upper(), template)
    return index


def _url(template: str, params: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(params.get(name, "dir/sub/file.txt" if name == "filePath" else "x" + name))

    return BASE_URL + re.sub(r"\{([^}]+)\}", value, template)


def _example_url(example: dict[str, Any]) -> tuple[str, str]:
    method, template = _operation_index()[example["operationId"]]
    return method, _url(template, example.get("parameters", {}))


def _example_responses() -> list[tuple[str, str, int, Any]]:
    cases = []
    for path in sorted(EXAMPLES_DIR.glob("*.json")) if EXAMPLES_DIR else ():
        example = json.loads(path.read_text())
        for status, response in example["responses"].items():
            cases.append((path.name, example, int(status), response.get("body")))
    return cases


EXAMPLES = _example_responses()
EXAMPLES_WITH_JSON = [case for case in EXAMPLES if isinstance(case[3], dict)]
needs_examples = pytest.mark.skipif(
    not UPSTREAM, reason=f"{UPSTREAM_ENV} unset: Microsoft's examples are not in the repository"
)


def _cases(cases: list[tuple[str, Any, int, Any]]) -> Any:
    # One skipped placeholder instead of pytest's "empty parameter set" when the examples are absent.
    return cases or [pytest.param(None, None, 0, None, marks=needs_examples)]


# -- bodies built from the spec: every documented property filled -------------------------------------------

_STRING_BY_FORMAT = {
    "date-time": "2026-02-03T04:05:06.1234567Z",
    "duration": "PT1H2M3.5S",
    "uri": "https://account.region.batch.azure.com/some/where",
    "int64": "1234",
    "byte": "AAEC",
}


def _instance(schema: dict[str, Any], definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """A value for `schema` that uses every property it documents (a $ref met again on the way is left out)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _instance(definitions[name], definitions, seen + (name,))
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type", "object")
    if kind == "object":
        body = {}
        for name, sub in schema.get("properties", {}).items():
            if sub.get("$ref", "").rsplit("/", 1)[-1] in seen:
                continue
            body[name] = _instance(sub, definitions, seen)
        if isinstance(schema.get("additionalProperties"), dict):
            body["someKey"] = _instance(schema["additionalProperties"], definitions, seen)
        return body
    if kind == "array":
        return [_instance(schema["items"], definitions, seen)]
    if kind == "integer":
        return max(schema.get("minimum", 3), min(schema.get("maximum", 3), 3))
    if kind == "number":
        return 2.5
    if kind == "boolean":
        return True
    return _STRING_BY_FORMAT.get(schema.get("format"), "text")


def _documented_bodies() -> tuple[list[tuple[str, str, str, int, Any]], list[tuple[str, str, str, int, bool]]]:
    """(operationId, method, url, status, body) for every 2xx response with a JSON body, and (operationId, method,
    url, status, is_file) for every other 2xx response (no body, or file content)."""
    spec = load_spec()
    with_json, without = [], []
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                schema = response.get("schema")
                case = (operation["operationId"], method.upper(), _url(template, {}), int(status))
                if schema is None or schema.get("type") == "file":
                    without.append(case + (schema is not None,))
                else:
                    with_json.append(case + (_instance(schema, spec["definitions"]),))
    return with_json, without


DOCUMENTED, BODYLESS = _documented_bodies()


def test_documented_bodies_cover_the_spec() -> None:
    # 2025-06-01.21.0: 77 operations, 29 with a JSON body on success, 2 with file content.
    operations = {case[0] for case in DOCUMENTED + BODYLESS}
    assert len(operations) == len(_operation_index()) >= 70
    assert len(DOCUMENTED) >= 25
    assert {"Tasks_ListTasks", "Pools_GetPool", "Tasks_CreateTaskCollection", "Jobs_GetJobTaskCounts"} <= {
        case[0] for case in DOCUMENTED
    }


@pytest.mark.parametrize("operation_id,method,url,status,is_file", BODYLESS, ids=[c[0] for c in BODYLESS])
def test_bodyless_responses_take_no_json(operation_id: str, method: str, url: str, status: int, is_file: bool) -> None:
    assert validate_response(method, url, status, b"") == operation_id
    if is_file:
        # File content is not JSON and is not checked; its headers are (test_documented_headers_and_content_type).
        assert validate_response(method, url, status, b"any bytes") == operation_id
    else:
        no_body = rf"{operation_id} {status}: (the spec documents no response body|HEAD response carries a body)"
        with pytest.raises(AssertionError, match=no_body):
            validate_response(method, url, status, b'{"id": "x"}')


def _assert_unknown_fields_refused(operation_id: str, method: str, url: str, status: int, body: Any) -> None:
    """An unknown property at the top of `body`, and in its first nested object, fails validation."""
    unknown_top = dict(body, surpriseField=1)
    with pytest.raises(AssertionError, match=rf"{operation_id} {status}: .*surpriseField"):
        validate_response(method, url, status, json.dumps(unknown_top).encode())
    nested = _first_object_path(body)
    if nested is not None:
        unknown_nested = copy.deepcopy(body)
        _get(unknown_nested, nested)["surpriseField"] = 1
        with pytest.raises(AssertionError, match=r"at \$[.\[].*surpriseField"):
            validate_response(method, url, status, json.dumps(unknown_nested).encode())


@pytest.mark.parametrize("operation_id,method,url,status,body", DOCUMENTED, ids=[c[0] for c in DOCUMENTED])
def test_documented_bodies_validate_and_corruptions_fail(
    operation_id: str, method: str, url: str, status: int, body: Any
) -> None:
    assert validate_response(method, url, status, json.dumps(body).encode()) == operation_id

    _assert_unknown_fields_refused(operation_id, method, url, status, body)

    scalar = _first_scalar_path(body)
    if scalar is not None:
        wrong_type = copy.deepcopy(body)
        _get(wrong_type, scalar[:-1])[scalar[-1]] = {"not": "a scalar"}
        with pytest.raises(AssertionError, match=rf"{operation_id} {status}: .*{re.escape(str(scalar[-1]))}"):
            validate_response(method, url, status, json.dumps(wrong_type).encode())


# -- Microsoft's examples (only with the upstream spec at hand) -----------------------------------------------


@needs_examples
def test_examples_are_present() -> None:
    # Guards the parametrised tests below against silently running on nothing.
    assert len(EXAMPLES) >= 15
    assert len(EXAMPLES_WITH_JSON) >= 10


@pytest.mark.parametrize("name,example,status,body", _cases(EXAMPLES), ids=[f"{c[0]}-{c[2]}" for c in EXAMPLES] or None)
def test_spec_examples_validate(name: str, example: dict[str, Any], status: int, body: Any) -> None:
    method, url = _example_url(example)
    raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else b""
    assert validate_response(method, url, status, raw) == example["operationId"]


def _first_object_path(node: Any, path: tuple = ()) -> tuple | None:
    """Path of the deepest-first nested dict inside the body (so corruption lands below the top level)."""
    if isinstance(node, dict):
        for key, value in node.items():
            found = _first_object_path(value, path + (key,))
            if found is not None:
                return found
        return path if path else None
    if isinstance(node, list):
        for index, value in enumerate(node):
            found = _first_object_path(value, path + (index,))
            if found is not None:
                return found
    return None


def _first_scalar_path(node: Any, path: tuple = ()) -> tuple | None:
    """Path of the first string/number/boolean below an object (not a list element, not a map's free key)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "someKey":
                continue
            if isinstance(value, (str, int, float)):
                return path + (key,)
            found = _first_scalar_path(value, path + (key,))
            if found is not None:
                return found
    if isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, (dict, list)):
                found = _first_scalar_path(value, path + (index,))
                if found is not None:
                    return found
    return None


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


@pytest.mark.parametrize(
    "name,example,status,body",
    _cases(EXAMPLES_WITH_JSON),
    ids=[f"{c[0]}-{c[2]}" for c in EXAMPLES_WITH_JSON] or None,
)
def test_corrupted_examples_fail(name: str, example: dict[str, Any], status: int, body: dict[str, Any]) -> None:
    method, url = _example_url(example)
    operation_id = example["operationId"]

    _assert_unknown_fields_refused(operation_id, method, url, status, body)


def _task(task_id: str, state: str, created: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "url": f"{BASE_URL}/jobs/job/tasks/{task_id}",
        "eTag": "0x8DC0FFEE00" + task_id[-1],
        "creationTime": created,
        "lastModified": created,
        "state": state,
        "stateTransitionTime": created,
        "commandLine": f"/bin/sh -c 'echo {task_id}'",
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
        "constraints": {"maxWallClockTime": "PT2H", "retentionTime": "P7D", "maxTaskRetryCount": 1},
        "requiredSlots": 1,
        "executionInfo": {"retryCount": 0, "requeueCount": 0},
    }


def _task_list_body() -> dict[str, Any]:
    """A Tasks_ListTasks body of our own: two tasks as Batch lists them (7-digit fractions of seconds)."""
    return {
        "value": [
            _task("task1", "active", "2026-01-05T10:20:30.1234567Z"),
            _task("task2", "running", "2026-01-05T10:20:31.7654321Z"),
        ]
    }


def _check_tasks(body: Any) -> None:
    validate_response("GET", f"{BASE_URL}/jobs/j/tasks", 200, json.dumps(body).encode())


def test_enum_date_time_duration_and_types_are_enforced() -> None:
    _check_tasks(_task_list_body())

    bad_enum = _task_list_body()
    bad_enum["value"][0]["state"] = "sleeping"
    with pytest.raises(AssertionError, match=r"Tasks_ListTasks 200: .* at \$\.value\[0\]\.state"):
        _check_tasks(bad_enum)

    bad_date = _task_list_body()
    bad_date["value"][0]["creationTime"] = "2016-13-21T22:43:31Z"
    with pytest.raises(AssertionError, match=r"\$\.value\[0\]\.creationTime"):
        _check_tasks(bad_date)

    not_rfc3339 = _task_list_body()
    not_rfc3339["value"][0]["lastModified"] = "Mon, 21 Nov 2016 22:43:31 GMT"
    with pytest.raises(AssertionError, match=r"\$\.value\[0\]\.lastModified"):
        _check_tasks(not_rfc3339)

    seven_digit_fraction = _task_list_body()
    seven_digit_fraction["value"][0]["creationTime"] = "2024-01-02T03:04:05.1234567Z"
    _check_tasks(seven_digit_fraction)

    bad_duration = _task_list_body()
    bad_duration["value"][0]["constraints"]["maxWallClockTime"] = "10 minutes"
    with pytest.raises(AssertionError, match=r"maxWallClockTime"):
        _check_tasks(bad_duration)

    wrong_type = _task_list_body()
    wrong_type["value"][0]["requiredSlots"] = "2"
    with pytest.raises(AssertionError, match=r"requiredSlots"):
        _check_tasks(wrong_type)

    out_of_int32 = _task_list_body()
    out_of_int32["value"][0]["requiredSlots"] = 2**31
    with pytest.raises(AssertionError, match=r"requiredSlots"):
        _check_tasks(out_of_int32)


def test_odata_keys() -> None:
    body = _task_list_body()
    body["odata.metadata"] = f"{BASE_URL}/$metadata#tasks"
    body["odata.nextLink"] = f"{BASE_URL}/jobs/j/tasks?$skiptoken=abc"
    _check_tasks(body)
    body["odata.metadata"] = 7
    with pytest.raises(AssertionError, match="odata.metadata"):
        _check_tasks(body)


def test_error_bodies_use_the_default_schema() -> None:
    error = {
        "odata.metadata": f"{BASE_URL}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": "JobNotFound",
        "message": {"lang": "en-US", "value": "The specified job does not exist.\nRequestId:1\nTime:2024-01-01"},
        "values": [{"key": "Reason", "value": "x"}],
    }
    assert validate_response("GET", f"{BASE_URL}/jobs/nope", 404, json.dumps(error).encode()) == "Jobs_GetJob"
    flat_message = dict(error, message="The specified job does not exist.")
    with pytest.raises(AssertionError, match=r"Jobs_GetJob 404: .* at \$\.message"):
        validate_response("GET", f"{BASE_URL}/jobs/nope", 404, json.dumps(flat_message).encode())


def test_bodies_must_match_what_the_spec_documents() -> None:
    # 201 from CreateTask has no body in the spec.
    validate_response("POST", f"{BASE_URL}/jobs/j/tasks", 201, b"")
    with pytest.raises(AssertionError, match="Tasks_CreateTask 201: the spec documents no response body"):
        validate_response("POST", f"{BASE_URL}/jobs/j/tasks", 201, b'{"id": "t"}')
    with pytest.raises(AssertionError, match="Tasks_ListTasks 200: the spec documents a JSON body"):
        validate_response("GET", f"{BASE_URL}/jobs/j/tasks", 200, b"")
    with pytest.raises(AssertionError, match="Tasks_ListTasks 200: response body is not JSON"):
        validate_response("GET", f"{BASE_URL}/jobs/j/tasks", 200, b"<html>")
    with pytest.raises(AssertionError, match="Tasks_ListTasks: status 201 is not a documented response"):
        validate_response("GET", f"{BASE_URL}/jobs/j/tasks", 201, b"")


def test_routes_map_to_operations() -> None:
    assert find_operation("GET", "/JOBS/MyJob/Tasks?api-version=1")[0] == "Tasks_ListTasks"
    assert find_operation("post", f"{BASE_URL}/jobs/j/addtaskcollection")[0] == "Tasks_CreateTaskCollection"
    assert find_operation("GET", "/jobs/j/tasks/t/files/wd/sub/out.txt")[0] == "Tasks_GetTaskFile"
    assert find_operation("HEAD", "/jobs/j/tasks/t/files/stdout.txt")[0] == "Tasks_GetTaskFileProperties"
    assert find_operation("GET", "/jobs/j/tasks/t")[0] == "Tasks_GetTask"
    assert find_operation("POST", "/jobs/j/tasks/t/terminate")[0] == "Tasks_TerminateTask"
    assert find_operation("GET", "/jobs/j/taskcounts")[0] == "Jobs_GetJobTaskCounts"
    assert find_operation("GET", "/pools/p/nodes/n")[0] == "Nodes_GetNode"
    with pytest.raises(AssertionError, match="no operation in the Batch spec"):
        find_operation("GET", "/jobs/j/tasks/t/bogus")
    with pytest.raises(AssertionError, match="no operation in the Batch spec"):
        find_operation("PATCH", "/applications")


def test_missing_spec_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"extract not found at .*missing.json: .*tools/extract_batch_spec.py"):
        spec_validation.spec_path(tmp_path / "missing.json")


# -- the policy inside a real azure-batch client, against a canned loopback HTTP server ------------------------


class _CannedBatch(BaseHTTPRequestHandler):
    body: bytes = b""
    status: int = 200

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json;odata=minimalmetadata")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def canned_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CannedBatch)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        _CannedBatch.body, _CannedBatch.status = b"", 200


def _client(server: ThreadingHTTPServer, policy: SpecValidationPolicy):
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    from snakemake_executor_plugin_azbatch.local.service_config import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

    return BatchClient(
        f"http://127.0.0.1:{server.server_address[1]}",
        AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY),
        per_call_policies=[policy],
        retry_total=0,
    )


def test_policy_validates_sdk_responses(canned_server: ThreadingHTTPServer) -> None:
    policy = SpecValidationPolicy()
    client = _client(canned_server, policy)

    _CannedBatch.body = json.dumps(_task_list_body()).encode()
    tasks = list(client.list_tasks("job"))
    assert [t.id for t in tasks] == ["task1", "task2"]
    assert policy.validated == {"Tasks_ListTasks": 1}

    corrupted = _task_list_body()
    corrupted["value"][1]["executionInfo"]["retries"] = 3
    _CannedBatch.body = json.dumps(corrupted).encode()
    with pytest.raises(AssertionError, match=r"Tasks_ListTasks 200: .*\$\.value\[1\]\.executionInfo.*retries"):
        list(client.list_tasks("job"))


def test_documented_headers_and_content_type() -> None:
    url = f"{BASE_URL}/jobs/j/tasks/t"
    body = json.dumps(_task_list_body()["value"][0]).encode()
    good = {"Content-Type": "application/json;odata=minimalmetadata", "Last-Modified": "Mon, 21 Nov 2016 22:43:31 GMT"}
    assert validate_response("GET", url, 200, body, good) == "Tasks_GetTask"
    with pytest.raises(AssertionError, match="Tasks_GetTask 200: header Last-Modified: .* date-time-rfc7231"):
        validate_response("GET", url, 200, body, {**good, "Last-Modified": "2016-11-21T22:43:31Z"})
    with pytest.raises(AssertionError, match="Content-Type 'text/plain'"):
        validate_response("GET", url, 200, body, {**good, "Content-Type": "text/plain"})

    file_url = f"{BASE_URL}/jobs/j/tasks/t/files/stdout.txt"
    file_headers = {"ocp-batch-file-isdirectory": "False", "Content-Length": "12", "ocp-creation-time": good["Last-Modified"]}
    validate_response("HEAD", file_url, 200, b"", file_headers)
    with pytest.raises(AssertionError, match="header ocp-batch-file-isdirectory: 'no'"):
        validate_response("HEAD", file_url, 200, b"", {**file_headers, "ocp-batch-file-isdirectory": "no"})


def test_select_relaxes_required_properties_only() -> None:
    # A job trimmed by $select lacks the required poolInfo: valid only when the request carried $select.
    job = {"id": "j", "state": "active"}
    body = json.dumps(job).encode()
    with pytest.raises(AssertionError, match="poolInfo"):
        validate_response("GET", "http://127.0.0.1:1/jobs/j?api-version=2025-06-01.21.0", 200, body)
    url = "http://127.0.0.1:1/jobs/j?api-version=2025-06-01.21.0&%24select=id%2Cstate"
    assert validate_response("GET", url, 200, body) == "Jobs_GetJob"
    # Unknown fields and wrong types still fail under $select.
    for bad in ({"id": "j", "notInSpec": 1}, {"id": "j", "state": "running"}):
        with pytest.raises(AssertionError):
            validate_response("GET", url, 200, json.dumps(bad).encode())
