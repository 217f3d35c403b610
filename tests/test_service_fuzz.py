"""Malformed requests over raw sockets against one local service: garbled request lines, verbs, paths and
queries, huge or broken headers, bad Content-Length, broken chunked framing, random and hostile bodies, deep JSON,
well-formed JSON of the wrong shapes — signed and unsigned. Every one gets an HTTP status, every error a Batch error
body with a code, none a 500, and the service keeps serving. Seeded: a failure names its case and repeats."""

from __future__ import annotations

import http.client
import json
import random
import socket
import string
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
from azure.batch import models as m

from support.services import ServiceHandle, start_service
from snakemake_executor_plugin_azbatch.local.http.http_server import BatchRequestHandler
from snakemake_executor_plugin_azbatch.local.http.request_body import MAX_BODY_BYTES
from snakemake_executor_plugin_azbatch.local.http.routes import BATCH_ROUTES
from snakemake_executor_plugin_azbatch.local.auth.shared_key import authorization_header

SEED = 19
CASES = 320
API = "api-version=2025-06-01.21.0"
JSON_TYPE = "application/json; odata=minimalmetadata"
POOL, JOB, TASK = "fuzz", "fuzz-job", "fuzz-task"
NEVER_SCHEDULED = 1000  # requiredSlots no node has: nothing the fuzz creates runs

# Well-formed bodies of the operations that take one; the fuzz breaks them (types, values, missing keys).
TEMPLATES: dict[str, dict[str, Any]] = {
    "/jobs": {"id": "fuzz-new", "poolInfo": {"poolId": POOL}, "priority": 0,
              "constraints": {"maxWallClockTime": "PT1H", "maxTaskRetryCount": 1},
              "jobPreparationTask": {"commandLine": "true", "waitForSuccess": True},
              "metadata": [{"name": "a", "value": "b"}], "onAllTasksComplete": "noaction"},
    f"/jobs/{JOB}": {"priority": 1, "onAllTasksComplete": "terminatejob", "constraints": {"maxTaskRetryCount": 2}},
    f"/jobs/{JOB}/terminate": {"terminateReason": "fuzz"},
    f"/jobs/{JOB}/tasks": {"id": "t", "commandLine": "true", "requiredSlots": NEVER_SCHEDULED,
                           "resourceFiles": [{"httpUrl": "http://127.0.0.1:9/x", "filePath": "x"}],
                           "outputFiles": [{"filePattern": "*.txt", "destination": {"container": {
                               "containerUrl": "http://127.0.0.1:9/c?sv=1"}},
                               "uploadOptions": {"uploadCondition": "taskcompletion"}}],
                           "environmentSettings": [{"name": "A", "value": "1"}],
                           "constraints": {"maxWallClockTime": "PT1M", "retentionTime": "PT1H"},
                           "exitConditions": {"exitCodes": [{"code": 1, "exitOptions": {"jobAction": "none"}}]},
                           "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}}},
    f"/jobs/{JOB}/addtaskcollection": {"value": [{"id": "c1", "commandLine": "true", "requiredSlots": NEVER_SCHEDULED}]},
    "/pools": {"id": "fuzz-pool", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 0,
               "virtualMachineConfiguration": {"imageReference": {"publisher": "canonical", "offer": "ubuntu",
                                                                  "sku": "22_04-lts"},
                                               "nodeAgentSKUId": "batch.node.ubuntu 22.04"}},
    f"/pools/{POOL}/resize": {"targetDedicatedNodes": 1, "targetLowPriorityNodes": 0},
    f"/pools/{POOL}/enableautoscale": {"autoScaleFormula": "$TargetDedicatedNodes = 1;",
                                       "autoScaleEvaluationInterval": "PT5M"},
    f"/pools/{POOL}/evaluateautoscale": {"autoScaleFormula": "$TargetDedicatedNodes = max(1, $PendingTasks.GetSample(1));"},
}
ODD_VALUES: list[Any] = [None, 0, -1, 2**31, 10**30, 1.5, -0.0, True, "", "x", "a" * 5000, "\u202e\u0000",
                         "P-1D", "PT99999999999H", [], [None], {}, {"x": [1, {"y": None}]}]


@dataclass
class Case:
    name: str
    data: bytes  # the bytes sent, then the sending side is shut
    head: bool = False  # a HEAD request: the answer has no body


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    handle = start_service(tmp_path_factory.mktemp("fuzz"), {"pools": [f"{POOL}:1:1"]})
    try:
        client = handle.batch_client()
        client.create_job(m.BatchJobCreateOptions(id=JOB, pool_info=m.BatchPoolInfo(pool_id=POOL)))
        client.create_task(JOB, m.BatchTaskCreateOptions(id=TASK, command_line="true", required_slots=NEVER_SCHEDULED))
        yield handle
    finally:
        handle.stop()


class Fuzzer:
    def __init__(self, svc: ServiceHandle, rng: random.Random) -> None:
        self.svc, self.rng = svc, rng
        self.netloc = urlsplit(svc.account_url).netloc

    # -- pieces ---------------------------------------------------------------------------------------------

    def ident(self) -> str:
        return self.rng.choice([POOL, JOB, TASK, "fuzz-none", "%zz", "%00", "..", "%2e%2e", "a" * 300, "%C3%BC",
                                "tvm-1", "x%2Fy", "-", "_", "~"])

    def path(self, template: str | None = None) -> str:
        path = template or self.rng.choice(BATCH_ROUTES)[1]
        for name in ("applicationId", "poolId", "nodeId", "jobId", "taskId"):
            path = path.replace("{" + name + "}", self.ident())
        path = path.replace("{filePath:path}", self.rng.choice(["stdout.txt", "wd/..%2F..%2Fetc", "%ff", "a/b/c"]))
        if template:
            return path
        return self.rng.choice([path, path, path, path + "/extra", path.upper(), "/" + "x" * 50, "/", "//jobs",
                                "/jobs/" + "\u00fc".encode().decode("latin-1"), "*"])

    def query(self) -> str:
        parts = [self.rng.choice([API, API, API, "api-version=", "api-version=1999-01-01",
                                  "api-version=2025-06-01.21.0&api-version=x", "api-version=%zz"])]
        for _ in range(self.rng.randint(0, 3)):
            parts.append(self.rng.choice([
                "$filter=state eq 'active'", "$filter=((((", "$filter=" + "(" * 500, "$filter=id eq",
                "$select=id,,", "$select=" + "a," * 300, "maxresults=-1", "maxresults=abc", f"maxresults={10**30}",
                "$skiptoken=garbage", "timeout=-5", "timeout=x", "$expand=stats", "%zz=%zz", "=", "&&&",
            ]).replace(" ", "%20"))
        return "&".join(parts)

    def headers(self) -> list[tuple[str, str]]:
        chosen = [("Host", self.netloc), ("ocp-date", formatdate(usegmt=True))]
        for _ in range(self.rng.randint(0, 3)):
            chosen.append(self.rng.choice([
                ("If-Match", "garbage"), ("If-None-Match", "*"), ("If-Modified-Since", "yesterday"),
                ("If-Unmodified-Since", "Mon, 32 Foo 2020"), ("ocp-range", "bytes=9-1"), ("Range", "lines=1-2"),
                ("client-request-id", "x" * 200), ("return-client-request-id", "maybe"), ("ocp-date", "not a date"),
                ("Content-Type", "text/plain"), ("X-Weird", "\u00ff\u00fe"), ("Accept", "*/*"),
                ("Expect", "100-continue"), ("Connection", "keep-alive"),
            ]))
        return chosen

    def json_for(self, path: str | None) -> bytes:
        """A well-formed body of the operation at `path` (any when it has none), broken by `mutate`."""
        template = TEMPLATES.get((path or "").partition("?")[0]) or TEMPLATES[self.rng.choice(sorted(TEMPLATES))]
        return json.dumps(self.mutate(json.loads(json.dumps(template)))).encode()

    def body(self, path: str | None = None) -> bytes:
        kind = self.rng.randrange(9)
        if kind == 0:
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 2000)))
        if kind == 1:
            return self.rng.choice([b"{", b"}", b"[1,]", b'{"id":}', b"\xff\xfe\x00", b"null", b"1e999", b"NaN",
                                    b'"\\ud800"', b"1" * 5000, b'{"a":1,"a":2}', b"[]", b'"text"', b"true"])
        if kind == 2:
            depth = self.rng.choice([65, 1000, 100_000])
            return b"[" * depth + b"]" * depth
        if kind == 3:
            depth = self.rng.choice([70, 5000])
            return b'{"a":' * depth + b"1" + b"}" * depth
        return self.json_for(path)

    def mutate(self, value: Any) -> Any:
        """The value with one to three of its leaves or keys replaced, removed or given a wrong type."""
        for _ in range(self.rng.randint(1, 3)):
            holder, key = None, None
            node = value
            while isinstance(node, (dict, list)) and node and self.rng.random() < 0.7:
                holder, key = node, self.rng.choice(list(node) if isinstance(node, dict) else range(len(node)))
                node = node[key]
            if holder is None:
                return self.rng.choice(ODD_VALUES)
            if isinstance(holder, dict) and self.rng.random() < 0.3:
                del holder[key]
            else:
                holder[key] = self.rng.choice(ODD_VALUES)
        return value

    # -- whole requests -------------------------------------------------------------------------------------

    def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None, *,
                sign: bool, framing: str = "length") -> bytes:
        headers = list(headers)
        if body is not None and framing == "length":
            headers += [("Content-Type", JSON_TYPE), ("Content-Length", str(len(body)))]
        elif body is not None:
            headers += [("Content-Type", JSON_TYPE), ("Transfer-Encoding", "chunked")]
        if sign:
            url = f"{self.svc.account_url}{target}"
            headers.append(("Authorization", authorization_header(
                method, url, dict(headers), self.svc.config.account_name, self.svc.config.account_key)))
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1", "replace")
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1", "replace") for k, v in headers) + b"\r\n"
        if body is None:
            return head
        if framing == "length":
            return head + body
        pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)]
        return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"

    def case(self, index: int) -> Case:
        rng = self.rng
        sign = rng.random() < 0.6
        kind = rng.randrange(12)
        if rng.random() < 0.5:  # an operation the service has, so malformed bodies reach its handlers
            method, template = rng.choice([(r[0], r[1]) for r in BATCH_ROUTES if r[0] in ("POST", "PATCH")] + [
                (r[0], r[1]) for r in BATCH_ROUTES])
            target = f"{self.path(template)}?{self.query()}"
        else:
            method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
            target = f"{self.path()}?{self.query()}"
        if kind <= 4:  # a signed or unsigned request with a broken body (or none)
            body = self.body(target) if method not in ("GET", "HEAD") or rng.random() < 0.2 else None
            framing = "chunked" if rng.random() < 0.25 else "length"
            data = self.request(method, target, self.headers(), body, sign=sign, framing=framing)
            return Case(f"{index}: {method} {target[:80]} body", data, head=method == "HEAD")
        if kind == 5:  # garbled request lines and verbs
            line = rng.choice([
                b"GET\r\n", b"GET /pools\r\n", b"get /pools HTTP/1.1\r\n", b"FOO /pools HTTP/1.1\r\n",
                b"GET /pools HTTP/2.0\r\n", b"GET /pools HTTP/1.1.1\r\n", b"GET /pools HTTX/1.1\r\n",
                b"GET /pools?a=b HTTP/1.1 extra\r\n", b"\x00\x01\x02 / HTTP/1.1\r\n", b"GET " + b"/x" * 40000 + b" HTTP/1.1\r\n",
                b"G\xc3\xa9T /pools HTTP/1.1\r\n", b"POST /jobs HTTP/1.1\n",
            ])
            return Case(f"{index}: request line {line[:40]!r}", line + f"Host: {self.netloc}\r\n\r\n".encode())
        if kind == 6:  # broken headers
            head = f"{method} /pools?{API} HTTP/1.1\r\nHost: {self.netloc}\r\n".encode()
            extra = rng.choice([
                b"X-Big: " + b"a" * 70000 + b"\r\n", b"".join(b"X-%d: 1\r\n" % i for i in range(150)),
                b"No colon here\r\n", b" folded: continuation\r\n", b"Bad\x00Name: 1\r\n", b": empty name\r\n",
                b"Authorization: SharedKey\r\n", b"Authorization: SharedKey a:b:c\r\n", b"Authorization: Bearer\r\n",
                b"ocp-date: \xff\xfe\r\n",
            ])
            return Case(f"{index}: header {extra[:30]!r}", head + extra + b"\r\n", head=method == "HEAD")
        if kind == 7:  # bad Content-Length values
            value = rng.choice(["abc", "-5", "1e3", " 7 ", "0x10", "1_0", "99999999999999999999999", "5, 6", "",
                                str(200 * 1024 * 1024)])
            body = b'{"id":"fuzz-cl","poolInfo":{"poolId":"fuzz"}}'[: rng.randint(0, 40)]
            headers = [*self.headers(), ("Content-Length", value)]
            if rng.random() < 0.3:
                headers.append(("Content-Length", "3"))
            data = self.request("POST", f"/jobs?{API}", headers, None, sign=sign) + body
            return Case(f"{index}: Content-Length {value!r}", data)
        if kind in (8, 9):  # broken chunked framing
            frame = rng.choice([
                b"-1\r\nabc\r\n0\r\n\r\n", b"-17D78400\r\n" + b"x" * 100, b"zz\r\nab\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n",
                b"5 \r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhel", b"FFFFFFFFFFFFFFFF\r\n",
                b"5;;;\r\nhello\r\n0\r\n\r\n", b"1" * 2000 + b"\r\n", b"5\r\nhello\r\n", b"5\nhello\n0\n\n",
                b"0\r\nX-Trailer: 1\r\nno colon\r\n\r\n", b"0\r\n" + b"T: 1\r\n" * 40 + b"\r\n",
                b"3;ext=\"quoted\"\r\n{}x\r\n0\r\n\r\n",
            ])
            headers = [*self.headers(), ("Transfer-Encoding", rng.choice(["chunked", "chunked", "gzip, chunked",
                                                                          "chunked, chunked", "identity", "CHUNKED"]))]
            if rng.random() < 0.2:
                headers.append(("Content-Length", "5"))
            data = self.request("POST", f"/jobs/{JOB}/tasks?{API}", headers, None, sign=sign) + frame
            return Case(f"{index}: chunked {frame[:30]!r}", data)
        if kind == 10:  # more than 1 MB, streamed whole: read and thrown away, answered 413
            size = MAX_BODY_BYTES + rng.randint(1, 300_000)
            body = b"[" + b"0," * (size // 2) + b"0]"
            framing = rng.choice(["length", "chunked"])
            data = self.request("POST", f"/jobs/{JOB}/addtaskcollection?{API}", self.headers(), body, sign=sign,
                                framing=framing)
            return Case(f"{index}: {len(body)} bytes {framing}", data)
        # the /_local/ endpoints that only read, with junk
        path = rng.choice(["/_local/metrics", "/_local/health", "/_local/outage", "/_local/nope", "/_local/"])
        data = self.request("GET", path + "?" + "".join(rng.choice(string.printable[:94]) for _ in range(20)),
                            self.headers(), None, sign=False)
        return Case(f"{index}: GET {path}", data)


def exchange(port: int, case: Case) -> tuple[int, bytes]:
    """Send the case, shut the sending side, read one answer (its status and body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(case.data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the service answered (and closed) before reading it all
        response = http.client.HTTPResponse(sock, method="HEAD" if case.head else "GET")
        response.begin()
        return response.status, response.read()


def test_malformed_requests_get_batch_errors_and_the_service_stays_up(service: ServiceHandle) -> None:
    fuzzer = Fuzzer(service, random.Random(SEED))
    port = urlsplit(service.account_url).port
    assert port is not None
    seen: dict[int, int] = {}
    for index in range(CASES):
        case = fuzzer.case(index)
        try:
            status, body = exchange(port, case)
        except (http.client.HTTPException, OSError) as err:
            pytest.fail(f"seed {SEED}, case {case.name}: no HTTP answer ({type(err).__name__}: {err})")
        seen[status] = seen.get(status, 0) + 1
        assert status != 500, f"seed {SEED}, case {case.name}: 500 {body[:300]!r}"
        if status >= 400 and body:
            payload = json.loads(body)
            code = payload.get("code") or payload.get("error")
            assert code, f"seed {SEED}, case {case.name}: {status} without an error code: {body[:300]!r}"
    # The fuzz reached past authentication and the body checks, and the service still serves.
    assert {400, 403, 413} <= seen.keys(), seen
    assert seen.get(400, 0) >= 30 and sum(n for s, n in seen.items() if s < 300) >= 10, seen
    client = service.batch_client()  # its answers are checked against the spec: nothing malformed was stored
    assert client.get_job(JOB).id == JOB
    assert any(pool.id == POOL for pool in client.list_pools())
    assert any(job.id == JOB for job in client.list_jobs())
    assert list(client.list_tasks(JOB)) is not None


def test_a_request_that_never_finishes_is_cut_off(service: ServiceHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each connection reads the limit when it opens: a short one for the connections of this test only.
    monkeypatch.setattr(BatchRequestHandler, "request_seconds", 1.0)
    port = urlsplit(service.account_url).port
    assert port is not None
    stalled = [
        f"POST /jobs?{API} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"id\":".encode(),  # body never ends
        b"GET /pools?" + API.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # headers never end
        f"POST /jobs?{API} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc".encode(),
    ]
    for data in stalled:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(data)  # and then nothing more, with the connection left open
            rest = b""
            while chunk := sock.recv(65536):  # the service ends the connection (our own timeout would raise)
                rest += chunk
            assert b" 500 " not in rest.split(b"\r\n", 1)[0]
    assert service.batch_client().get_job(JOB).id == JOB  # and serves the next one


def signed_head(svc: ServiceHandle, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    headers = [("Host", urlsplit(svc.account_url).netloc), ("ocp-date", formatdate(usegmt=True)), *headers]
    auth = authorization_header(method, svc.account_url + target, dict(headers), svc.config.account_name,
                                svc.config.account_key)
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), f"Authorization: {auth}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_framing_and_nesting_are_refused_before_anything_is_buffered(service: ServiceHandle) -> None:
    port = urlsplit(service.account_url).port
    assert port is not None
    chunked = [("Content-Type", JSON_TYPE), ("Transfer-Encoding", "chunked")]

    def answer(sock: socket.socket) -> tuple[int, dict[str, Any], str]:
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        body = response.read()
        return response.status, json.loads(body) if body else {}, response.getheader("Connection") or ""

    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        # A negative chunk size (it used to read the connection to its end): 400 before any chunk is read.
        sock.sendall(signed_head(service, "POST", f"/jobs/{JOB}/tasks?{API}", chunked) + b"-17D78400\r\n" + b"x" * 64)
        status, payload, connection = answer(sock)
        assert (status, payload["code"], connection) == (400, "InvalidRequestBody", "close")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        # A chunk announced past the discard limit: 413 at once, nothing of it read, the connection closed.
        sock.sendall(signed_head(service, "POST", f"/jobs/{JOB}/tasks?{API}", chunked) + b"FFFFFFFFFFFF\r\n")
        status, payload, connection = answer(sock)
        assert (status, payload["code"], connection) == (413, "RequestBodyTooLarge", "close")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        # Over 1 MB in well-formed chunks: read and dropped, 413, and the connection carries the next request.
        piece = b"x" * 65536
        big = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(20)) + b"0\r\n\r\n"
        sock.sendall(signed_head(service, "POST", f"/jobs/{JOB}/addtaskcollection?{API}", chunked) + big)
        status, payload, connection = answer(sock)
        assert (status, payload["code"], connection) == (413, "RequestBodyTooLarge", "")
        deep = b"[" * 200 + b"]" * 200  # nested deeper than the 64 levels allowed
        sock.sendall(signed_head(service, "POST", f"/jobs/{JOB}/addtaskcollection?{API}",
                                 [("Content-Type", JSON_TYPE), ("Content-Length", str(len(deep)))]) + deep)
        status, payload, _ = answer(sock)
        assert (status, payload["code"]) == (400, "InvalidRequestBody") and "64 levels" in payload["message"]["value"]
        sock.sendall(signed_head(service, "POST", f"/jobs?{API}", [("Content-Length", "-5")]))
        status, payload, connection = answer(sock)
        assert (status, payload["code"], connection) == (400, "InvalidHeaderValue", "close")
