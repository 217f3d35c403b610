"""BatchRetryPolicy: POST requests (task collections, job creation) are retried on throttling and gateway errors
that azure-core does not retry for POST by default. This pins the azure-core behaviour the policy relies on (the
request option `retry_on_methods` read in RetryPolicy.configure_retries)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import retry_kwargs
from snakemake_executor_plugin_azbatch.azure_api.batch_client import BatchRetryPolicy

pytestmark = pytest.mark.quick


class ScriptedServer:
    """A loopback HTTP server that answers request N with the N-th status of a script and counts requests."""

    def __init__(self, statuses: list[int]):
        statuses = list(statuses)
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                outer.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(statuses.pop(0))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PATCH = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_port}/jobs"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def send(policy: RetryPolicy, method: str, statuses: list[int], **options) -> tuple[int, int]:
    server = ScriptedServer(statuses)
    with server as url, Pipeline(RequestsTransport(), policies=[policy]) as pipeline:
        response = pipeline.run(HttpRequest(method, url, json={}), **options)
    return response.http_response.status_code, server.requests


FAST = {**retry_kwargs(), "retry_backoff_factor": 0, "retry_backoff_max": 0}


@pytest.mark.parametrize("status", [408, 429, 502])
def test_post_is_retried_on_throttling_and_gateway_errors(status):
    assert send(BatchRetryPolicy(**FAST), "POST", [status, 200]) == (200, 2)


@pytest.mark.parametrize("status", [408, 429, 502])
def test_plain_azure_core_policy_does_not_retry_these_posts(status):
    """The reason BatchRetryPolicy exists; if azure-core starts retrying them itself, the policy can go."""
    assert send(RetryPolicy(**FAST), "POST", [status, 200]) == (status, 1)


def test_a_request_that_names_its_own_methods_keeps_them():
    assert send(BatchRetryPolicy(**FAST), "POST", [429, 200], retry_on_methods=frozenset({"GET"})) == (429, 1)


def test_client_errors_are_not_retried():
    assert send(BatchRetryPolicy(**FAST), "POST", [409, 200]) == (409, 1)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_bad_status_without_retry_after_is_retried_three_times(method):
    """What the README's outage section states: the plugin sets only the total cap (retry_total) and the
    back-off, so azure-core's default of 3 retries on bad statuses applies; a fifth answer is never asked for."""
    assert send(BatchRetryPolicy(**FAST), method, [503, 503, 503, 503, 200]) == (503, 4)
    assert send(BatchRetryPolicy(**FAST), method, [503, 503, 503, 200]) == (200, 4)
