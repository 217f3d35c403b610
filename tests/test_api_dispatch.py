"""The HTTP layer in process: signed requests through `Dispatcher.dispatch` (no socket, no Azurite, no process),
each response validated against the Batch OpenAPI spec like every response the SDK tests see."""

from __future__ import annotations

import json
from email.message import Message
from email.utils import formatdate
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.fake_backend import FakeBackend
from support.spec_validation import validate_response

from snakemake_executor_plugin_azbatch.local.service_config import BoundEndpoints, PoolSpec, ServiceConfig
from snakemake_executor_plugin_azbatch.local.http.faults import FaultInjector
from snakemake_executor_plugin_azbatch.local.api.http_messages import Response
from snakemake_executor_plugin_azbatch.local.http.http_server import API_VERSION, Dispatcher, make_request
from snakemake_executor_plugin_azbatch.local.model.batch_state import BatchState
from snakemake_executor_plugin_azbatch.local.http.routes import ROUTES, match_route
from snakemake_executor_plugin_azbatch.local.auth.shared_key import authorization_header

pytestmark = pytest.mark.quick
BASE = "http://127.0.0.1:9"


class InProcessClient:
    def __init__(self, config: ServiceConfig, dispatcher: Dispatcher) -> None:
        self.config = config
        self.dispatcher = dispatcher

    def call(self, method: str, path: str, body: Any = None, *, query: str = f"api-version={API_VERSION}",
             headers: dict[str, str] | None = None, sign: bool = True) -> Response:
        data = json.dumps(body).encode() if body is not None else b""
        target = f"{path}?{query}" if query else path
        sent = {"ocp-date": formatdate(usegmt=True), **(headers or {})}
        if data:
            sent |= {"Content-Type": "application/json; odata=minimalmetadata", "Content-Length": str(len(data))}
        if sign:
            sent["Authorization"] = authorization_header(
                method, BASE + target, sent, self.config.account_name, self.config.account_key
            )
        message = Message()
        for name, value in sent.items():
            message[name] = value
        response = self.dispatcher.dispatch(make_request(method, target, message, data, BASE))
        content = response.body
        if response.file:
            file_path, offset, length = response.file
            content = file_path.read_bytes()[offset:offset + length]
        headers_out = {**dict(response.headers), **({"Content-Type": response.content_type}
                                                     if response.content_type and content else {})}
        if response.status != 304:  # Not Modified has no body by HTTP, whatever the spec lists
            validate_response(method, BASE + target, response.status, content or None, headers_out)
        return response


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[InProcessClient, FakeBackend]]:
    config = ServiceConfig(root=tmp_path, pools=[PoolSpec.parse("p:2:2")])
    backend = FakeBackend()
    state = BatchState(config, backend, BoundEndpoints(BASE))
    state.start()
    try:
        yield InProcessClient(config, Dispatcher(state, config, FaultInjector(config))), backend
    finally:
        state.stop()


def test_every_route_names_its_handler_and_parameters() -> None:
    from snakemake_executor_plugin_azbatch.local.api.batch_api import BatchApi
    from snakemake_executor_plugin_azbatch.local.http.local_endpoints import LocalEndpoints

    for method, template, operation, handler in ROUTES:
        local = template.startswith("/_local/")
        owner = LocalEndpoints if local else BatchApi
        assert callable(getattr(owner, handler, None)), f"{operation}: no {owner.__name__}.{handler}"
        path = template.replace("{filePath:path}", "wd/a%20b.txt").replace("{", "").replace("}", "")
        match = match_route(method, path)
        assert match.route is not None and match.route.operation == operation and match.local == local
    match = match_route("GET", "/jobs/My%20Job/tasks/t-1/files/wd/a%2Fb")
    assert match.operation == "Tasks_GetTaskFile"
    assert match.params == {"jobId": "My Job", "taskId": "t-1", "filePath": "wd/a%2Fb"}  # the file path stays raw
    assert match_route("GET", "/_LOCAL/Metrics/").operation == "Local_GetMetrics"  # case and a trailing slash


def test_local_endpoints_are_rows_of_the_route_table_answered_without_auth(api) -> None:
    client, _ = api
    health = client.dispatcher.dispatch(make_request("GET", "/_local/health", Message(), b"", BASE))
    assert (health.status, health.operation) == (200, "Local_GetHealth")
    unknown = client.dispatcher.dispatch(make_request("GET", "/_local/nothing", Message(), b"", BASE))
    assert unknown.status == 404 and b"/_local/metrics" in unknown.body
    wrong_verb = client.dispatcher.dispatch(make_request("DELETE", "/_local/metrics", Message(), b"", BASE))
    assert wrong_verb.status == 405 and b"use GET" in wrong_verb.body
    node_id = client.call("GET", "/pools/p/nodes").json()["value"][0]["id"]
    marked = client.dispatcher.dispatch(make_request("POST", f"/_local/pools/p/nodes/{node_id}/state", Message(),
                                                     b'{"state": "unusable"}', BASE))
    assert (marked.status, json.loads(marked.body)["state"]) == (200, "unusable")
    assert client.call("GET", f"/pools/p/nodes/{node_id}").json()["state"] == "unusable"
    no_switch = client.dispatcher.dispatch(make_request("GET", "/_local/outage", Message(), b"", BASE))
    assert no_switch.status == 404  # a service without an outage switch has no such endpoint


def test_the_socket_server_matches_each_request_route_once(tmp_path: Path, monkeypatch) -> None:
    import threading
    import urllib.error
    import urllib.request

    from snakemake_executor_plugin_azbatch.local.http import http_server
    from snakemake_executor_plugin_azbatch.local.http.metrics import Metrics
    from snakemake_executor_plugin_azbatch.local.http.outage_switch import OutageSwitch

    lookups: list[str] = []

    def counted(method: str, path: str):
        lookups.append(f"{method} {path}")
        return match_route(method, path)

    monkeypatch.setattr(http_server, "match_route", counted)
    config = ServiceConfig(root=tmp_path, pools=[PoolSpec.parse("p:1:1")], port=0)
    state = BatchState(config, FakeBackend())
    metrics = Metrics()
    server = http_server.make_server(state, config, metrics, FaultInjector(config), OutageSwitch())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(urllib.error.HTTPError) as unsigned:
            urllib.request.urlopen(f"{url}/jobs?api-version={API_VERSION}", timeout=10)
        assert unsigned.value.code == 403
        with urllib.request.urlopen(f"{url}/_local/outage", timeout=10) as response:
            assert json.loads(response.read())["batch"]["down"] is False
        assert lookups == ["GET /jobs", "GET /_local/outage"]
        assert list(metrics.snapshot()["operations"]) == ["Jobs_ListJobs"]  # the /_local/ request is not counted
    finally:
        server.shutdown()
        server.server_close()


def test_job_and_task_round_trip(api) -> None:
    client, backend = api
    created = client.call("POST", "/jobs", {"id": "j1", "poolInfo": {"poolId": "p"}})
    assert created.status == 201 and created.header("Location") == f"{BASE}/jobs/j1"
    assert client.call("POST", "/jobs/j1/tasks", {"id": "t1", "commandLine": "x"}).status == 201
    result = client.call("POST", "/jobs/j1/addtaskcollection",
                         {"value": [{"id": "t2", "commandLine": "x"}, {"id": "T1", "commandLine": "x"}]}).json()
    assert [(r["taskId"], r["status"]) for r in result["value"]] == [("t2", "success"), ("T1", "clienterror")]
    assert result["value"][1]["error"]["code"] == "TaskExists"
    backend.finish(backend.attempt("t1"))
    task = client.call("GET", "/jobs/j1/tasks/t1").json()
    assert task["state"] == "completed" and task["executionInfo"]["result"] == "success"
    counts = client.call("GET", "/jobs/j1/taskcounts").json()["taskCounts"]
    assert counts["completed"] == 1 and counts["succeeded"] == 1


def test_errors_carry_batch_codes_and_bodies(api) -> None:
    client, _ = api
    missing = client.call("GET", "/jobs/nope")
    assert missing.status == 404 and missing.json()["code"] == "JobNotFound"
    assert missing.json()["odata.metadata"].endswith("errors/@Element")
    client.call("POST", "/jobs", {"id": "j", "poolInfo": {"poolId": "p"}})
    exists = client.call("POST", "/jobs", {"id": "J", "poolInfo": {"poolId": "p"}})
    assert (exists.status, exists.json()["code"]) == (409, "JobExists")
    too_many = client.call("POST", "/jobs/j/addtaskcollection",
                           {"value": [{"id": f"t{i}", "commandLine": "x"} for i in range(101)]})
    assert (too_many.status, too_many.json()["code"]) == (413, "RequestBodyTooLarge")
    unsigned = client.call("GET", "/jobs", sign=False)
    assert (unsigned.status, unsigned.json()["code"]) == (403, "AuthenticationFailed")
    no_version = client.call("GET", "/jobs", query="")
    assert no_version.json()["code"] == "MissingRequiredQueryParameter"




def test_listing_pages_with_next_link_and_conditions(api) -> None:
    client, _ = api
    for i in range(5):
        client.call("POST", "/jobs", {"id": f"job{i}", "poolInfo": {"poolId": "p"}})
    seen, query = [], f"api-version={API_VERSION}&maxresults=2"
    while True:
        page = client.call("GET", "/jobs", query=query).json()
        seen += [job["id"] for job in page["value"]]
        if "odata.nextLink" not in page:
            break
        query = page["odata.nextLink"].split("?", 1)[1]
    assert seen == [f"job{i}" for i in range(5)]
    etag = client.call("GET", "/jobs/job0").header("ETag")
    assert client.call("GET", "/jobs/job0", headers={"If-None-Match": etag}).status == 304
    stale = client.call("PATCH", "/jobs/job0", {"priority": 5}, headers={"If-Match": "0x1"})
    assert (stale.status, stale.json()["code"]) == (412, "ConditionNotMet")


def test_a_verb_the_path_does_not_support_is_405(api) -> None:
    client, _ = api
    response = client.dispatcher.dispatch(make_request("PUT", f"/jobs?api-version={API_VERSION}", Message(), b"", BASE))
    assert response.operation == "Unknown" and response.json()["code"] == "AuthenticationFailed"  # auth first
    match = match_route("PUT", "/jobs")
    assert match.route is None and sorted(match.allowed) == ["GET", "POST"]


def test_bodies_and_filters_of_the_wrong_shape_are_400_not_stored(api) -> None:
    client, _ = api
    assert client.call("POST", "/jobs", {"id": "j", "poolInfo": {"poolId": "p"}}).status == 201

    def refused(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, str, dict[str, str]]:
        response = client.call(method, path, body, **kwargs)
        payload = response.json()
        return response.status, payload["code"], {v["key"]: v["value"] for v in payload.get("values", [])}

    status, code, values = refused("POST", "/jobs", {"id": "k", "poolInfo": {"poolId": "p"}, "priority": [None]})
    assert (status, code, values["PropertyName"]) == (400, "InvalidPropertyValue", "priority")
    status, code, values = refused("PATCH", "/jobs/j", {"constraints": {"maxWallClockTime": "soon"}})
    assert (status, code, values["PropertyName"]) == (400, "InvalidPropertyValue", "constraints.maxWallClockTime")
    task = {"id": "t", "commandLine": "true", "environmentSettings": [{"name": "A", "value": 1}]}
    status, code, values = refused("POST", "/jobs/j/tasks", task)
    assert (status, code, values["PropertyName"]) == (400, "InvalidPropertyValue", "environmentSettings[0].value")
    pool = {"id": "q", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 0, "virtualMachineConfiguration": {
        "imageReference": {"publisher": []}, "nodeAgentSKUId": "batch.node.ubuntu 22.04"}}
    status, code, values = refused("POST", "/pools", pool)
    assert (status, code, values["PropertyName"]) == (400, "InvalidPropertyValue", "publisher")
    assert refused("POST", "/jobs", [{"id": "k"}])[:2] == (400, "InvalidRequestBody")  # a list, not an object
    deep = f"api-version={API_VERSION}&$filter=" + "(" * 100 + "id eq 'j'" + ")" * 100
    assert refused("GET", "/jobs", query=deep)[:2] == (400, "InvalidQueryParameterValue")
    chain = f"api-version={API_VERSION}&$filter=" + " or ".join(["id eq 'x'"] * 3000 + ["id eq 'j'"])
    listed = client.call("GET", "/jobs", query=chain.replace(" ", "%20"))
    assert listed.status == 200 and [job["id"] for job in listed.json()["value"]] == ["j"]
    assert [job["id"] for job in client.call("GET", "/jobs").json()["value"]] == ["j"]  # nothing else was stored
