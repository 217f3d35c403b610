"""A node's output uploads ride out storage that is unreachable for a few seconds (Azurite restarting under running
tasks) by retrying with back-off, and fail with Batch's FileUploadMiscError once it stays away past the retry window.
The task itself switches the nodes' storage off (`nodeStorage` outage) just before it exits, so its upload is sure
to meet the outage."""

from __future__ import annotations

import json
import shlex
import sys
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from support.waiting import wait_for

from support.services import ServiceHandle, start_service

RETRY_SECONDS = 10.0  # the service's node_upload_retry_seconds here (30 by default)
WAIT_SECONDS = 90


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    handle = start_service(tmp_path_factory.mktemp("upload-retries"),
                           {"pools": ["uploads:1:2"], "node_upload_retry_seconds": RETRY_SECONDS})
    try:
        yield handle
    finally:
        handle.stop()


def outage_state(svc: ServiceHandle, **kinds: float) -> dict[str, Any]:
    data = json.dumps(kinds).encode() if kinds else None
    request = urllib.request.Request(f"{svc.account_url}/_local/outage", data=data, method="POST" if kinds else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["nodeStorage"]


def run_task_cutting_storage_for(svc: ServiceHandle, seconds: float) -> tuple[Any, str, Any]:
    """A task that switches the nodes' storage off for `seconds`, writes out.txt and exits; (task, its upload
    logs, the container its output goes to) once it completed."""
    blobs = svc.blob_service_client()
    container = blobs.create_container(f"uploads-{uuid.uuid4().hex[:8]}")
    storage = svc.endpoints.storage
    now = datetime.now(timezone.utc)
    sas = generate_container_sas(storage.account_name, container.container_name, account_key=storage.account_key,
                                 permission=ContainerSasPermissions(write=True, create=True),
                                 start=now - timedelta(minutes=5), expiry=now + timedelta(hours=1))
    script = (
        "import os, urllib.request\n"
        "url = os.environ['AZ_BATCH_ACCOUNT_URL'] + '/_local/outage'\n"
        f"body = b'{{\"nodeStorage\": {seconds}}}'\n"
        "urllib.request.urlopen(urllib.request.Request(url, data=body, method='POST'), timeout=10).read()\n"
        "open('out.txt', 'w').write('result')\n"
    )
    client = svc.batch_client()
    job_id = f"uploads-{uuid.uuid4().hex[:8]}"
    client.create_job({"id": job_id, "poolInfo": {"poolId": "uploads"}})
    client.create_task(job_id, {
        "id": "writer",
        "commandLine": shlex.join([sys.executable, "-c", script]),
        "outputFiles": [{"filePattern": "out.txt",
                         "destination": {"container": {"containerUrl": f"{container.url}?{sas}", "path": "a/out.txt"}},
                         "uploadOptions": {"uploadCondition": "tasksuccess"}}],
    })
    task = wait_for(lambda: (t := client.get_task(job_id, "writer")).state == "completed" and t, WAIT_SECONDS,
                    lambda: f"task never completed: {client.get_task(job_id, 'writer').as_dict()}")
    logs = "".join(b"".join(client.download_task_file(job_id, "writer", name)).decode()
                   for name in ("fileuploadout.txt", "fileuploaderr.txt"))
    return task, logs, container


def test_an_upload_that_meets_a_short_storage_outage_succeeds_after_retries(service: ServiceHandle) -> None:
    dropped = outage_state(service)["dropped"]
    task, logs, container = run_task_cutting_storage_for(service, 3)
    info = task.execution_info
    assert info.exit_code == 0 and info.result == "success" and info.failure_info is None, task.as_dict()
    assert container.download_blob("a/out.txt").readall() == b"result"
    assert outage_state(service)["dropped"] > dropped  # the node's upload did meet the outage
    assert "try 2 after 1 s" in logs and "uploaded " in logs and "sig=" not in logs, logs


def test_an_upload_whose_storage_stays_away_past_the_retry_window_fails_the_task(service: ServiceHandle) -> None:
    try:
        task, logs, container = run_task_cutting_storage_for(service, 600)
    finally:
        outage_state(service, nodeStorage=0)
    info = task.execution_info
    assert info.exit_code == 0 and info.result == "failure", task.as_dict()
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "FileUploadMiscError")
    assert "ServiceResponseError" in logs and " tries over " in logs and "sig=" not in logs, logs
    assert not list(container.list_blobs())
