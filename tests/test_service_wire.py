"""The local service's Batch REST surface, driven over loopback HTTP by the real azure-batch SDK (every response
validated against the spec by the harness policy) and, where the SDK cannot express a request, by raw signed HTTP.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from support.spec_validation import validate_response
from support.batch_jobs import fresh_job
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.local.auth.shared_key import authorization_header
from snakemake_executor_plugin_azbatch.staging.log_tails import node_file_tail

WAIT_SECONDS = 60

JSON_TYPE = "application/json; odata=minimalmetadata"
NEVER_SCHEDULED = 1000  # requiredSlots no node has: the task stays active, no process runs


# -- helpers ------------------------------------------------------------------------------------------------


class Raw:
    """Signed raw HTTP against the service, for what the SDK cannot send; validates bodies against the spec."""

    def __init__(self, svc: Any):
        self.svc = svc
        self.session = requests.Session()

    def request(
        self,
        method: str,
        path_and_query: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
        sign: bool = True,
        validate: bool = True,
    ) -> requests.Response:
        url = self.svc.account_url + path_and_query
        data = b""
        all_headers = {"ocp-date": formatdate(usegmt=True)}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers["Content-Type"] = JSON_TYPE
        if method not in ("GET", "HEAD"):
            all_headers["Content-Length"] = str(len(data))
        all_headers.update(headers or {})
        if sign:
            all_headers["Authorization"] = authorization_header(
                method, url, all_headers, self.svc.config.account_name, key or self.svc.config.account_key
            )
        response = self.session.request(method, url, data=data or None, headers=all_headers, timeout=60)
        if validate and "/files/" not in path_and_query:
            validate_response(method, url, response.status_code, response.content)
        return response


def error_of(response: requests.Response) -> tuple[str, dict[str, str]]:
    body = response.json()
    assert body["odata.metadata"].endswith("$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element")
    assert body["message"]["lang"] == "en-US" and body["message"]["value"]
    return body["code"], {v["key"]: v["value"] for v in body.get("values", [])}


def sdk_error_code(exc: HttpResponseError) -> str | None:
    return exc.error.code if exc.error else None


def task_state(client: BatchClient, job_id: str, task_id: str) -> str:
    return str(client.get_task(job_id, task_id).state.value)


def op_count(metrics: dict[str, Any], operation: str) -> int:
    return metrics["operations"].get(operation, {}).get("count", 0)


@pytest.fixture
def client(local_service: Any) -> BatchClient:
    return local_service.batch_client()


@pytest.fixture
def raw(local_service: Any) -> Raw:
    return Raw(local_service)


@pytest.fixture
def job(client: BatchClient, local_service: Any) -> Iterator[str]:
    """A fresh job on the shared service, deleted afterwards."""
    with fresh_job(client, local_service.pool_id, "wire") as job_id:
        yield job_id


# -- pools, nodes, applications -----------------------------------------------------------------------------


def test_pools_and_nodes(client: BatchClient, raw: Raw, local_service: Any) -> None:
    pool_id = local_service.pool_id
    validated_before = dict(local_service.spec_policy.validated)
    pools = list(client.list_pools())
    assert [p.id for p in pools] == [p.id for p in local_service.config.pools]
    pool = client.get_pool(pool_id.upper())  # IDs are case-insensitive
    assert pool.id == pool_id and pool.task_slots_per_node == local_service.config.pools[0].slots
    assert client.pool_exists(pool_id) is True
    missing = raw.request("HEAD", "/pools/no-such-pool?api-version=2025-06-01.21.0")
    assert missing.status_code == 404 and missing.content == b""
    with pytest.raises(ResourceNotFoundError) as raised:
        client.get_pool("no-such-pool")
    assert sdk_error_code(raised.value) == "PoolNotFound"

    nodes = list(client.list_nodes(pool_id))
    assert len(nodes) == local_service.config.pools[0].nodes
    node = client.get_node(pool_id, nodes[0].id.upper())
    assert node.id == nodes[0].id
    with pytest.raises(ResourceNotFoundError) as raised:
        client.get_node(pool_id, "tvmps_missing")
    assert sdk_error_code(raised.value) == "NodeNotFound"
    node_files = [f.name for f in client.list_node_files(pool_id, nodes[0].id)]
    assert "shared" in node_files and "workitems" in node_files

    counts = list(client.list_pool_node_counts())
    assert [c.pool_id for c in counts] == [pool_id]
    assert counts[0].dedicated.total == len(nodes)
    images = list(client.list_supported_images())
    assert images and images[0].node_agent_sku_id == pool.virtual_machine_configuration.node_agent_sku_id
    # the harness policy checked these responses against the spec (it raises on a mismatch)
    validated = local_service.spec_policy.validated
    for operation in ("Pools_ListPools", "Pools_GetPool", "Pools_PoolExists", "Nodes_ListNodes", "Nodes_GetNode"):
        assert validated.get(operation, 0) > validated_before.get(operation, 0), operation


def test_applications_without_packages(client: BatchClient) -> None:
    assert list(client.list_applications()) == []
    with pytest.raises(ResourceNotFoundError) as raised:
        client.get_application("tools")
    assert sdk_error_code(raised.value) == "ApplicationNotFound"


def test_applications_list_get_and_paging(make_service: Any, tmp_path: Any) -> None:
    import zipfile

    from snakemake_executor_plugin_azbatch.local.service_config import AppPackageSpec

    archive = tmp_path / "tools.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("bin/tool.sh", "echo tool\n")
    specs = [AppPackageSpec("tools", "1.0", archive), AppPackageSpec("tools", "2.0", archive),
             AppPackageSpec("Aligner", "0.7", archive)]
    svc = make_service(app_packages=specs, pools=["apps:1:1"])
    client = svc.batch_client()
    apps = {a.id: a for a in client.list_applications(max_results=1)}  # one per page: the SDK follows nextLinks
    assert set(apps) == {"tools", "Aligner"} and sorted(apps["tools"].versions) == ["1.0", "2.0"]
    assert svc.metrics()["operations"]["Applications_ListApplications"]["count"] == 2
    assert client.get_application("ALIGNER").versions == ["0.7"]
    assert client.get_application("tools").display_name == "tools"


# -- jobs -----------------------------------------------------------------------------------------------------


def test_job_create_get_list_terminate_delete(client: BatchClient, raw: Raw, local_service: Any) -> None:
    job_id = f"Wire-Job-{uuid.uuid4().hex[:8]}"
    created = raw.request(
        "POST", "/jobs?api-version=2025-06-01.21.0", body={"id": job_id, "poolInfo": {"poolId": local_service.pool_id}}
    )
    assert created.status_code == 201 and created.content == b""
    url = f"{local_service.account_url}/jobs/{job_id}"
    assert created.headers["Location"] == url and created.headers["DataServiceId"] == url
    assert created.headers["ETag"] and created.headers["Last-Modified"].endswith("GMT")

    with pytest.raises(ResourceExistsError) as raised:
        client.create_job(m.BatchJobCreateOptions(id=job_id.lower(), pool_info=m.BatchPoolInfo(pool_id=local_service.pool_id)))
    assert sdk_error_code(raised.value) == "JobExists"

    got = client.get_job(job_id.lower())
    assert got.id == job_id and got.state == m.BatchJobState.ACTIVE
    listed = [j.id for j in client.list_jobs(filter=f"id eq '{job_id.upper()}'")]
    assert listed == [job_id]
    counts = client.get_job_task_counts(job_id)
    assert counts.task_counts.active == 0 and counts.task_slot_counts.completed == 0

    client.update_job(job_id, m.BatchJobUpdateOptions(priority=5, all_tasks_complete_mode=m.BatchAllTasksCompleteMode.NO_ACTION))
    assert client.get_job(job_id).priority == 5
    with pytest.raises(HttpResponseError) as raised:
        client.update_job(job_id, m.BatchJobUpdateOptions(pool_info=m.BatchPoolInfo(pool_id="elsewhere")))
    assert raised.value.status_code == 400

    client.begin_terminate_job(job_id, m._models.BatchJobTerminateOptions(termination_reason="wire test"), polling_interval=0).result()
    done = client.get_job(job_id)
    assert done.state == m.BatchJobState.COMPLETED and done.execution_info.termination_reason == "wire test"
    assert [j.id for j in client.list_jobs(filter=f"id eq '{job_id}' and state eq 'completed'")] == [job_id]

    client.begin_delete_job(job_id, polling_interval=0).result()
    with pytest.raises(ResourceNotFoundError) as raised:
        client.get_job(job_id)
    assert sdk_error_code(raised.value) == "JobNotFound"


def test_job_terminate_and_delete_status_codes(raw: Raw, local_service: Any) -> None:
    job_id = f"wire-codes-{uuid.uuid4().hex[:8]}"
    raw.request("POST", "/jobs?api-version=2025-06-01.21.0", body={"id": job_id, "poolInfo": {"poolId": local_service.pool_id}})
    terminated = raw.request("POST", f"/jobs/{job_id}/terminate?api-version=2025-06-01.21.0")
    assert terminated.status_code == 202 and terminated.content == b""
    deleted = raw.request("DELETE", f"/jobs/{job_id}?api-version=2025-06-01.21.0")
    assert deleted.status_code == 202 and deleted.content == b""


# -- tasks and their files ----------------------------------------------------------------------------------


def test_task_lifecycle_and_files(client: BatchClient, raw: Raw, job: str) -> None:
    client.create_task(
        job,
        m.BatchTaskCreateOptions(
            id="Writer",
            command_line=(
                "/bin/sh -c 'printf 0123456789 > data.txt; mkdir -p sub/deeper \"odd dir\"; echo hi > sub/deeper/x.txt; "
                "echo odd > \"odd dir/ü+x 1.txt\"; ln -s /etc/hostname escape; echo out'"
            ),
        ),
    )
    with pytest.raises(ResourceExistsError) as raised:
        client.create_task(job, m.BatchTaskCreateOptions(id="writer", command_line="true"))
    assert sdk_error_code(raised.value) == "TaskExists"
    wait_for(lambda: task_state(client, job, "writer") == "completed", WAIT_SECONDS, "task writer to complete")
    task = client.get_task(job, "WRITER")
    assert task.id == "Writer" and task.execution_info.exit_code == 0
    assert [t.id for t in client.list_tasks(job, filter="executionInfo/exitCode eq 0 and executionInfo/result eq 'success'")] == ["Writer"]
    assert list(client.list_tasks(job, filter="executionInfo/exitCode ne 0")) == []

    top = {f.name: f for f in client.list_task_files(job, "writer")}
    assert {"stdout.txt", "stderr.txt", "wd"} <= set(top)
    assert top["wd"].is_directory and not top["stdout.txt"].is_directory
    assert "wd/data.txt" not in top
    everything = {f.name: f for f in client.list_task_files(job, "writer", recursive=True)}
    assert {"wd/data.txt", "wd/sub", "wd/sub/deeper", "wd/sub/deeper/x.txt"} <= set(everything)
    assert everything["wd/data.txt"].properties.content_length == 10
    assert everything["wd/data.txt"].url.endswith(f"/jobs/{job}/tasks/Writer/files/wd/data.txt")
    only_data = [f.name for f in client.list_task_files(job, "writer", recursive=True, filter="startswith(name,'wd/d')")]
    assert only_data == ["wd/data.txt"]

    assert b"".join(client.download_task_file(job, "writer", "stdout.txt")) == b"out\n"
    assert b"".join(client.download_task_file(job, "writer", "wd/data.txt")) == b"0123456789"
    assert b"".join(client.download_task_file(job, "writer", "wd/data.txt", ocp_range="bytes=2-5")) == b"2345"
    assert b"".join(client.download_task_file(job, "writer", "wd\\sub\\deeper\\x.txt")) == b"hi\n"

    assert b"".join(client.download_task_file(job, "writer", "wd/odd dir/ü+x 1.txt")) == b"odd\n"
    assert "wd/odd dir/ü+x 1.txt" in everything and "wd/escape" not in everything
    with pytest.raises(ResourceNotFoundError):  # a symlink out of the task directory is not served
        b"".join(client.download_task_file(job, "writer", "wd/escape"))

    props = client.get_task_file_properties(job, "writer", "wd/data.txt")
    assert props.content_length == 10 and props.is_directory is False
    assert props.url.endswith("/files/wd/data.txt") and props.file_mode.startswith("0100")
    assert props.creation_time is not None and props.last_modified is not None
    dir_props = client.get_task_file_properties(job, "writer", "wd/sub")
    assert dir_props.is_directory is True

    api = "api-version=2025-06-01.21.0"
    head = raw.request("HEAD", f"/jobs/{job}/tasks/writer/files/wd%2Fdata.txt?{api}")
    assert head.status_code == 200 and head.content == b"" and head.headers["Content-Length"] == "10"
    for header in ("ocp-creation-time", "ocp-batch-file-isdirectory", "ocp-batch-file-url", "ocp-batch-file-mode", "Last-Modified"):
        assert head.headers[header]
    ranged = raw.request("GET", f"/jobs/{job}/tasks/writer/files/wd%2Fdata.txt?{api}", headers={"Range": "bytes=7-"})
    assert ranged.status_code == 206 and ranged.content == b"789" and ranged.headers["Content-Range"] == "bytes 7-9/10"
    suffix = raw.request("GET", f"/jobs/{job}/tasks/writer/files/wd%2Fdata.txt?{api}", headers={"ocp-range": "bytes=-3"})
    assert suffix.status_code == 200 and suffix.content == b"789"
    beyond = raw.request("GET", f"/jobs/{job}/tasks/writer/files/wd%2Fdata.txt?{api}", headers={"ocp-range": "bytes=10-20"})
    assert beyond.status_code == 416 and error_of(beyond)[0] == "InvalidRange"
    malformed = raw.request("GET", f"/jobs/{job}/tasks/writer/files/wd%2Fdata.txt?{api}", headers={"ocp-range": "lines=1-2"})
    assert malformed.status_code == 400 and error_of(malformed)[0] == "InvalidHeaderValue"
    for missing_path in ("wd%2Fnope.txt", "..%2F..%2F..%2Fmetrics.json", "wd%2F..%2F..%2Fx"):
        missing = raw.request("GET", f"/jobs/{job}/tasks/writer/files/{missing_path}?{api}")
        assert missing.status_code == 404 and error_of(missing)[0] == "FileNotFound", missing_path
    with pytest.raises(ResourceNotFoundError):  # streamed: the SDK does not read the error body
        b"".join(client.download_task_file(job, "writer", "absent.txt"))

    # The same file through the node's file endpoints.
    node_id = task.node_info.node_id
    pool_id = task.node_info.pool_id
    on_node = [f.name for f in client.list_node_files(pool_id, node_id, recursive=True) if f.name.endswith("/Writer/wd/data.txt")]
    assert len(on_node) == 1
    assert b"".join(client.download_node_file(pool_id, node_id, on_node[0])) == b"0123456789"
    assert client.get_node_file_properties(pool_id, node_id, on_node[0]).content_length == 10

    # The plugin's tail reader (log_tails): the file's size, then only its last bytes by ocp-range.
    def tail(limit, where=(pool_id, node_id, on_node[0])):
        return node_file_tail(lambda: client.get_node_file_properties(*where),
                              lambda **kw: client.download_node_file(*where, **kw), limit)

    assert tail(4) == b"6789" and tail(10) == b"0123456789" and tail(100) == b"0123456789"

    client.delete_task(job, "writer")
    with pytest.raises(ResourceNotFoundError) as raised:
        client.get_task(job, "writer")
    assert sdk_error_code(raised.value) == "TaskNotFound"


def test_terminate_running_task_and_status_codes(client: BatchClient, raw: Raw, job: str) -> None:
    client.create_task(job, m.BatchTaskCreateOptions(id="sleeper", command_line="/bin/sh -c 'sleep 60'"))
    wait_for(lambda: task_state(client, job, "sleeper") == "running", WAIT_SECONDS, "task sleeper to run")
    terminated = raw.request("POST", f"/jobs/{job}/tasks/sleeper/terminate?api-version=2025-06-01.21.0")
    assert terminated.status_code == 204 and terminated.content == b""
    wait_for(lambda: task_state(client, job, "sleeper") == "completed", WAIT_SECONDS, "terminated task to complete")
    created = raw.request(
        "POST", f"/jobs/{job}/tasks?api-version=2025-06-01.21.0", body={"id": "raw-task", "commandLine": "true"}
    )
    assert created.status_code == 201
    assert created.headers["Location"].endswith(f"/jobs/{job}/tasks/raw-task")
    deleted = raw.request("DELETE", f"/jobs/{job}/tasks/raw-task?api-version=2025-06-01.21.0")
    assert deleted.status_code == 200


def test_task_files_before_scheduling_are_unavailable(client: BatchClient, raw: Raw, job: str) -> None:
    client.create_task(job, m.BatchTaskCreateOptions(id="waiting", command_line="true", required_slots=NEVER_SCHEDULED))
    listed = raw.request("GET", f"/jobs/{job}/tasks/waiting/files?api-version=2025-06-01.21.0")
    assert listed.status_code == 409 and error_of(listed)[0] == "TaskFilesUnavailable"
    missing_task = raw.request("GET", f"/jobs/{job}/tasks/nope/files?api-version=2025-06-01.21.0")
    assert missing_task.status_code == 404 and error_of(missing_task)[0] == "TaskNotFound"


def test_retention_time_removes_the_task_directory_but_keeps_the_task(
    client: BatchClient, raw: Raw, job: str, local_service: Any
) -> None:
    """constraints.retentionTime is how long the task's directory stays on its node after it completes; then
    the directory goes, the record stays, and file requests answer 409 TaskFilesCleanedup."""
    constraints = m.BatchTaskConstraints(retention_time=datetime.timedelta(seconds=2))
    client.create_task(job, m.BatchTaskCreateOptions(id="brief", command_line="/bin/sh -c 'echo kept'",
                                                     constraints=constraints))
    client.create_task(job, m.BatchTaskCreateOptions(id="default", command_line="/bin/sh -c 'echo kept'"))
    wait_for(lambda: all(task_state(client, job, t) == "completed" for t in ("brief", "default")), WAIT_SECONDS,
             "both tasks to complete")
    directory = local_service.service.state.task_dir(job, "brief")
    assert directory.is_dir()
    assert b"".join(client.download_task_file(job, "brief", "stdout.txt")) == b"kept\n"

    def cleaned() -> bool:
        listed = raw.request("GET", f"/jobs/{job}/tasks/brief/files?api-version=2025-06-01.21.0")
        return listed.status_code == 409 and error_of(listed)[0] == "TaskFilesCleanedup"

    wait_for(cleaned, 10, "the files of task brief to be cleaned up 2 s after it completed")
    wait_for(lambda: not directory.exists(), 10, f"{directory} to be removed")
    with pytest.raises(HttpResponseError) as raised:
        b"".join(client.download_task_file(job, "brief", "stdout.txt"))
    assert raised.value.status_code == 409  # a streamed download leaves the error body unread: the raw request names it
    task = client.get_task(job, "brief")  # the record stays
    assert task.execution_info.exit_code == 0 and task.constraints.retention_time.total_seconds() == 2
    # Without retentionTime Batch keeps the directory 7 days.
    assert client.get_task(job, "default").constraints.retention_time.days == 7
    assert b"".join(client.download_task_file(job, "default", "stdout.txt")) == b"kept\n"


def test_deleting_a_task_deletes_its_directory_whatever_its_retention_time(
    client: BatchClient, job: str, local_service: Any
) -> None:
    """Batch: when a task is deleted, the files in its directory on the node are deleted too, regardless of the
    retention time; a running task's once it has been stopped."""
    client.create_task(job, m.BatchTaskCreateOptions(id="done", command_line="/bin/sh -c 'echo done'"))
    client.create_task(job, m.BatchTaskCreateOptions(id="busy", command_line="/bin/sh -c 'echo busy && sleep 300'"))
    wait_for(lambda: task_state(client, job, "done") == "completed" and task_state(client, job, "busy") == "running",
             WAIT_SECONDS, "one task completed and one running")
    state = local_service.service.state
    done, busy = state.task_dir(job, "done"), state.task_dir(job, "busy")
    wait_for(lambda: (busy / "stdout.txt").is_file() and (busy / "stdout.txt").read_text() == "busy\n", WAIT_SECONDS,
             "the running task's stdout")
    assert (done / "stdout.txt").read_text() == "done\n"
    client.delete_task(job, "done")
    client.delete_task(job, "busy")
    wait_for(lambda: not done.exists() and not busy.exists(), 20, f"{done} and {busy} to be removed")
    assert {t.id for t in client.list_tasks(job)} == set()


def test_deleting_a_job_deletes_its_task_directories_the_preparation_tasks_included(
    client: BatchClient, local_service: Any
) -> None:
    job_id = f"wire-delete-{uuid.uuid4().hex[:8]}"
    client.create_job(m.BatchJobCreateOptions(
        id=job_id, pool_info=m.BatchPoolInfo(pool_id=local_service.pool_id),
        job_preparation_task=m.BatchJobPreparationTask(command_line="/bin/sh -c 'echo prep'"),
    ))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="kept", command_line="/bin/sh -c 'echo kept'"))
    wait_for(lambda: task_state(client, job_id, "kept") == "completed", WAIT_SECONDS, "the task to complete")
    task_dir = local_service.service.state.task_dir(job_id, "kept")
    job_dir = task_dir.parent.parent
    assert (task_dir / "stdout.txt").read_text() == "kept\n"
    assert {p.name for p in (job_dir / "job-1").iterdir()} >= {"kept", "jobpreparation"}
    client.begin_delete_job(job_id, polling_interval=1).result()
    wait_for(lambda: not job_dir.exists(), 20, f"{job_dir} to be removed with its job")


def test_job_preparation_status_is_listed(client: BatchClient, local_service: Any) -> None:
    job_id = f"wire-prep-{uuid.uuid4().hex[:8]}"
    client.create_job(
        m.BatchJobCreateOptions(
            id=job_id,
            pool_info=m.BatchPoolInfo(pool_id=local_service.pool_id),
            job_preparation_task=m.BatchJobPreparationTask(command_line="/bin/sh -c 'echo prep'"),
        )
    )
    try:
        client.create_task(job_id, m.BatchTaskCreateOptions(id="after-prep", command_line="true"))
        wait_for(lambda: task_state(client, job_id, "after-prep") == "completed", WAIT_SECONDS, "task after prep to complete")
        statuses = list(client.list_job_preparation_and_release_task_status(job_id))
        assert statuses and statuses[0].pool_id == local_service.pool_id
        assert statuses[0].job_preparation_task_execution_info.exit_code == 0
    finally:
        client.begin_delete_job(job_id, polling_interval=0).result()


# -- collections, paging, filters, select -------------------------------------------------------------------


def test_task_collection_paging_filter_and_select(client: BatchClient, raw: Raw, job: str, local_service: Any) -> None:
    ids = [f"page-{i:03d}" for i in range(250)]
    before = local_service.metrics()
    result = client.create_tasks(
        job, [m.BatchTaskCreateOptions(id=i, command_line="true", required_slots=NEVER_SCHEDULED) for i in ids]
    )
    assert sorted(r.task_id for r in result.result_values) == ids
    assert all(r.status == m.BatchTaskAddStatus.SUCCESS for r in result.result_values)
    after_create = local_service.metrics()
    assert op_count(after_create, "Tasks_CreateTaskCollection") - op_count(before, "Tasks_CreateTaskCollection") == 3

    # The SDK follows odata.nextLink: 250 tasks at 100 per page are three requests.
    listed = [t.id for t in client.list_tasks(job, max_results=100)]
    assert sorted(listed) == ids and len(set(listed)) == 250
    after_list = local_service.metrics()
    assert op_count(after_list, "Tasks_ListTasks") - op_count(after_create, "Tasks_ListTasks") == 3

    # Raw walk: absolute nextLinks that keep $filter / $select and carry a continuation token.
    api = "api-version=2025-06-01.21.0"
    path = f"/jobs/{job}/tasks?{api}&maxresults=40&%24filter=startswith(id%2C%27page-1%27)&%24select=id,state"
    page = raw.request("GET", path)
    seen: list[str] = []
    pages = 0
    while True:
        assert page.status_code == 200
        body = page.json()
        assert body["odata.metadata"] == f"{local_service.account_url}/$metadata#tasks"
        assert all(set(item) == {"id", "state"} for item in body["value"])
        seen += [item["id"] for item in body["value"]]
        pages += 1
        link = body.get("odata.nextLink")
        if not link:
            break
        assert link.startswith(local_service.account_url + f"/jobs/{job}/tasks?")
        query = parse_qs(urlsplit(link).query)
        assert query["$filter"] == ["startswith(id,'page-1')"] and query["$select"] == ["id,state"]
        page = raw.request("GET", link[len(local_service.account_url):])
    # pages are in creation order (the SDK submits in its own order); together they hold each match once
    assert sorted(seen) == [i for i in ids if i.startswith("page-1")] and len(set(seen)) == len(seen) and pages == 3

    # The SDK's own nextLink handling keeps $filter / $select too.
    sdk_walk = list(client.list_tasks(job, max_results=40, filter="startswith(id,'page-1')", select=["id", "state"]))
    assert sorted(t.id for t in sdk_walk) == sorted(seen) and all(t.command_line is None for t in sdk_walk)

    # Filters through the SDK.
    assert sorted(t.id for t in client.list_tasks(job, filter="id eq 'PAGE-007' or id eq 'page-249'")) == ["page-007", "page-249"]
    assert list(client.list_tasks(job, filter="state eq 'completed'")) == []
    assert len(list(client.list_tasks(job, filter="creationTime gt datetime'2020-01-01T00:00:00Z'"))) == 250
    assert list(client.list_tasks(job, filter="creationTime lt datetime'2020-01-01T00:00:00Z'")) == []
    assert len(list(client.list_tasks(job, filter="state eq 'active' and not startswith(id,'page-2')"))) == 200
    with pytest.raises(HttpResponseError) as raised:
        list(client.list_tasks(job, filter="state eq"))
    assert raised.value.status_code == 400 and sdk_error_code(raised.value) == "InvalidQueryParameterValue"
    selected = client.get_task(job, "page-001", select=["id", "requiredSlots"])
    assert selected.id == "page-001" and selected.required_slots == NEVER_SCHEDULED and selected.state is None
    # $select may leave out properties the spec calls required (a job's poolInfo): as on Batch.
    jobs = list(client.list_jobs(filter=f"id eq '{job}'", select=["id", "state"]))
    assert [(j.id, j.pool_info) for j in jobs] == [(job, None)]
    assert client.get_job(job, select=["id"]).state is None

    for bad in ("0", "1001", "ten"):
        response = raw.request("GET", f"/jobs/{job}/tasks?{api}&maxresults={bad}")
        assert response.status_code == 400, bad
        code, values = error_of(response)
        assert code in ("InvalidQueryParameterValue", "OutOfRangeQueryParameterValue")
        assert values["QueryParameterName"] == "maxresults"
    bad_token = raw.request("GET", f"/jobs/{job}/tasks?{api}&%24skiptoken=garbage")
    assert bad_token.status_code == 400 and error_of(bad_token)[1]["QueryParameterName"] == "$skiptoken"
    bad_select = raw.request("GET", f"/jobs/{job}/tasks?{api}&%24select=id,,state")
    assert bad_select.status_code == 400 and error_of(bad_select)[1]["QueryParameterName"] == "$select"


def test_concurrent_task_collections(client: BatchClient, job: str, local_service: Any) -> None:
    before = local_service.metrics()
    tasks = [m.BatchTaskCreateOptions(id=f"c{i}", command_line="true", required_slots=NEVER_SCHEDULED) for i in range(400)]
    result = client.create_tasks(job, tasks, max_concurrency=4)
    assert len(result.result_values) == 400
    assert all(r.status == m.BatchTaskAddStatus.SUCCESS for r in result.result_values)
    assert client.get_job_task_counts(job).task_counts.active == 400
    after = local_service.metrics()
    assert op_count(after, "Tasks_CreateTaskCollection") - op_count(before, "Tasks_CreateTaskCollection") == 4


def test_task_collection_limits(raw: Raw, job: str) -> None:
    api = "api-version=2025-06-01.21.0"
    too_many = {"value": [{"id": f"t{i}", "commandLine": "true"} for i in range(101)]}
    response = raw.request("POST", f"/jobs/{job}/addtaskcollection?{api}", body=too_many)
    assert response.status_code == 413 and error_of(response)[0] == "RequestBodyTooLarge"
    huge = {"value": [{"id": "big", "commandLine": "true " + "x" * (1024 * 1024)}]}
    response = raw.request("POST", f"/jobs/{job}/addtaskcollection?{api}", body=huge)
    assert response.status_code == 413 and error_of(response)[0] == "RequestBodyTooLarge"
    response = raw.request("POST", f"/jobs/{job}/addtaskcollection?{api}", body={"tasks": []})
    assert response.status_code == 400 and error_of(response)[0] == "MissingRequiredProperty"
    mixed = {"value": [{"id": "ok-1", "commandLine": "true", "requiredSlots": NEVER_SCHEDULED}, {"id": "bad id!", "commandLine": "true"}]}
    response = raw.request("POST", f"/jobs/{job}/addtaskcollection?{api}", body=mixed)
    assert response.status_code == 200
    results = {r["taskId"]: r for r in response.json()["value"]}
    assert results["ok-1"]["status"] == "success" and results["bad id!"]["status"] == "clienterror"


# -- wire details -------------------------------------------------------------------------------------------


def test_headers_and_conditional_requests(raw: Raw, job: str) -> None:
    api = "api-version=2025-06-01.21.0"
    client_id = str(uuid.uuid4())
    got = raw.request("GET", f"/jobs/{job}?{api}", headers={"client-request-id": client_id, "return-client-request-id": "true"})
    assert got.status_code == 200
    assert got.headers["Content-Type"] == JSON_TYPE and got.headers["DataServiceVersion"] == "3.0"
    assert got.headers["client-request-id"] == client_id
    assert uuid.UUID(got.headers["request-id"]) and got.headers["request-id"] != client_id
    assert got.json()["odata.metadata"].endswith("$metadata#jobs/@Element")
    etag = got.headers["ETag"]
    assert etag == got.json()["eTag"] and got.headers["Last-Modified"].endswith("GMT")

    quiet = raw.request("GET", f"/jobs/{job}?{api}", headers={"client-request-id": client_id})
    assert "client-request-id" not in quiet.headers

    not_modified = raw.request("GET", f"/jobs/{job}?{api}", headers={"If-None-Match": etag}, validate=False)
    assert not_modified.status_code == 304 and not_modified.content == b""
    mismatch = raw.request("GET", f"/jobs/{job}?{api}", headers={"If-Match": '"0x1"'})
    assert mismatch.status_code == 412 and error_of(mismatch)[0] == "ConditionNotMet"


def test_sdk_conditional_delete_with_stale_etag_is_refused(client: BatchClient, job: str) -> None:
    client.create_task(job, m.BatchTaskCreateOptions(id="cond", command_line="true", required_slots=NEVER_SCHEDULED))
    with pytest.raises(HttpResponseError) as raised:
        client.delete_task(job, "cond", etag="0x1", match_condition=MatchConditions.IfNotModified)
    assert raised.value.status_code == 412
    current = client.get_task(job, "cond")
    client.delete_task(job, "cond", etag=current.etag, match_condition=MatchConditions.IfNotModified)


def test_urls_match_in_any_case_and_expand_is_accepted(client: BatchClient, raw: Raw, job: str) -> None:
    client.create_task(job, m.BatchTaskCreateOptions(id="CaseTask", command_line="true", required_slots=NEVER_SCHEDULED))
    listed = raw.request("GET", f"/JOBS/{job.upper()}/Tasks?api-version=2025-06-01.21.0")
    assert listed.status_code == 200 and [t["id"] for t in listed.json()["value"]] == ["CaseTask"]
    got = raw.request("GET", f"/Jobs/{job}/TASKS/casetask?api-version=2025-06-01.21.0")
    assert got.status_code == 200 and got.json()["id"] == "CaseTask"
    assert [j.id for j in client.list_jobs(filter=f"id eq '{job}'", expand=["stats"])] == [job]
    assert [t.id for t in client.list_tasks(job, expand=["stats"])] == ["CaseTask"]


def test_server_refuses_non_loopback_hosts(tmp_path: Any) -> None:
    from snakemake_executor_plugin_azbatch.local.service_config import ServiceConfig
    from snakemake_executor_plugin_azbatch.local.http.faults import FaultInjector
    from snakemake_executor_plugin_azbatch.local.http.metrics import Metrics
    from snakemake_executor_plugin_azbatch.local.http.http_server import make_server

    for host in ("0.0.0.0", "192.0.2.10", "example.org"):
        config = ServiceConfig(root=tmp_path, host=host)
        with pytest.raises(ValueError, match="loopback"):
            make_server(None, config, Metrics(), FaultInjector(config))  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["2025-06-01.21.0", "2025-06-01", "2024-07-01.20.0", "2023-05-01.17.0"])
def test_accepted_api_versions(raw: Raw, version: str) -> None:
    assert raw.request("GET", f"/pools?api-version={version}").status_code == 200


def test_request_errors_are_batch_error_bodies(raw: Raw, local_service: Any) -> None:
    missing = raw.request("GET", "/pools")
    assert missing.status_code == 400
    assert error_of(missing) == ("MissingRequiredQueryParameter", {"QueryParameterName": "api-version"})
    for version in ("1999-01-01", "2099-01-01.99.0", "latest"):
        unsupported = raw.request("GET", f"/pools?api-version={version}")
        assert unsupported.status_code == 400
        code, values = error_of(unsupported)
        assert code == "InvalidQueryParameterValue" and values["QueryParameterValue"] == version

    unknown = raw.request("GET", "/no/such/thing?api-version=2025-06-01.21.0", validate=False)
    assert unknown.status_code == 400 and error_of(unknown)[0] == "InvalidUri"
    wrong_verb = raw.request("PUT", "/pools?api-version=2025-06-01.21.0", body={}, validate=False)
    assert wrong_verb.status_code == 405 and error_of(wrong_verb)[0] == "UnsupportedHttpVerb"

    not_json = raw.request("POST", "/jobs?api-version=2025-06-01.21.0", body=b"{not json")
    assert not_json.status_code == 400 and error_of(not_json)[0] == "InvalidRequestBody"
    no_pool = raw.request("POST", "/jobs?api-version=2025-06-01.21.0", body={"id": "no-pool-info"})
    assert no_pool.status_code == 400 and error_of(no_pool)[0] == "MissingRequiredProperty"
    missing_job = raw.request("GET", "/jobs/does-not-exist/tasks?api-version=2025-06-01.21.0")
    assert missing_job.status_code == 404 and error_of(missing_job)[0] == "JobNotFound"


def test_chunked_bodies_and_bad_content_length(raw: Raw, local_service: Any) -> None:
    import http.client

    job_id = f"wire-chunked-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"id": job_id, "poolInfo": {"poolId": local_service.pool_id}}).encode()
    url = f"{local_service.account_url}/jobs?api-version=2025-06-01.21.0"
    headers = {"ocp-date": formatdate(usegmt=True), "Content-Type": JSON_TYPE}
    headers["Authorization"] = authorization_header(
        "POST", url, headers, local_service.config.account_name, local_service.config.account_key
    )
    chunks = (body[i : i + 7] for i in range(0, len(body), 7))  # a generator makes requests send chunked
    created = requests.post(url, data=chunks, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    assert raw.request("GET", f"/jobs/{job_id}?api-version=2025-06-01.21.0").status_code == 200
    raw.request("DELETE", f"/jobs/{job_id}?api-version=2025-06-01.21.0")

    path = "/jobs?api-version=2025-06-01.21.0"
    bad = {"ocp-date": formatdate(usegmt=True), "Content-Length": "twelve"}
    bad["Authorization"] = authorization_header(
        "POST", local_service.account_url + path, bad, local_service.config.account_name, local_service.config.account_key
    )
    connection = http.client.HTTPConnection(urlsplit(local_service.account_url).netloc, timeout=30)
    try:
        connection.putrequest("POST", path)
        for name, value in bad.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    assert response.status == 400 and json.loads(payload)["code"] == "InvalidHeaderValue"


def test_authentication_failures(local_service: Any, raw: Raw) -> None:
    before = local_service.metrics()
    other_key = "b3RoZXIta2V5LXRoYXQtaXMtbm90LXRoZS1zZXJ2ZXJzLWtleS0wMDAwMDAwMDAwMDA="
    bad = raw.request("GET", "/pools?api-version=2025-06-01.21.0", key=other_key)
    assert bad.status_code == 403
    code, values = error_of(bad)
    assert code == "AuthenticationFailed" and "signature" in values["AuthenticationErrorDetail"]
    assert other_key not in bad.text and local_service.config.account_key not in bad.text

    unsigned = raw.request("GET", "/pools?api-version=2025-06-01.21.0", sign=False)
    assert unsigned.status_code == 403 and error_of(unsigned)[0] == "AuthenticationFailed"
    bearer = raw.request("GET", "/pools?api-version=2025-06-01.21.0", sign=False, headers={"Authorization": "Bearer x.y.z"})
    assert bearer.status_code == 401
    assert "Shared Key" in error_of(bearer)[1]["AuthenticationErrorDetail"]

    from azure.batch import BatchClient as SdkClient
    from azure.core.credentials import AzureNamedKeyCredential

    wrong_account = SdkClient(local_service.account_url, AzureNamedKeyCredential("nosuchaccount", local_service.config.account_key))
    with pytest.raises(HttpResponseError) as raised:
        list(wrong_account.list_pools())
    assert raised.value.status_code == 403 and sdk_error_code(raised.value) == "AuthenticationFailed"
    wrong_key = SdkClient(local_service.account_url, AzureNamedKeyCredential(local_service.config.account_name, other_key))
    with pytest.raises(HttpResponseError) as raised:
        wrong_key.get_pool(local_service.pool_id)
    assert raised.value.status_code == 403

    after = local_service.metrics()
    statuses_before = before["operations"].get("Pools_ListPools", {}).get("statuses", {})
    statuses_after = after["operations"]["Pools_ListPools"]["statuses"]
    assert statuses_after.get("403", 0) - statuses_before.get("403", 0) == 3
    assert statuses_after.get("401", 0) - statuses_before.get("401", 0) == 1


def test_local_endpoints_and_metrics(local_service: Any, client: BatchClient, raw: Raw) -> None:
    health = requests.get(local_service.account_url + "/_local/health", timeout=10)
    assert health.status_code == 200
    before = local_service.metrics()
    assert set(before) >= {"operations", "storage"}
    for _ in range(3):
        client.get_pool(local_service.pool_id)
    after = local_service.metrics()
    entry = after["operations"]["Pools_GetPool"]
    assert set(entry) == {"count", "statuses", "requestBytes", "responseBytes"}
    assert entry["count"] - op_count(before, "Pools_GetPool") == 3
    assert entry["statuses"]["200"] - before["operations"].get("Pools_GetPool", {}).get("statuses", {}).get("200", 0) == 3

    # Byte counts are exactly the bodies.
    got = raw.request("GET", f"/pools/{local_service.pool_id}?api-version=2025-06-01.21.0")
    job_body = {"id": f"wire-bytes-{uuid.uuid4().hex[:8]}", "poolInfo": {"poolId": local_service.pool_id}}
    created = raw.request("POST", "/jobs?api-version=2025-06-01.21.0", body=job_body)
    assert created.status_code == 201
    final = local_service.metrics()["operations"]
    assert final["Pools_GetPool"]["responseBytes"] - entry["responseBytes"] == len(got.content)
    assert final["Pools_GetPool"]["requestBytes"] == entry["requestBytes"]
    previous_create = after["operations"].get("Jobs_CreateJob", {"requestBytes": 0, "responseBytes": 0})
    assert final["Jobs_CreateJob"]["requestBytes"] - previous_create["requestBytes"] == len(json.dumps(job_body))
    assert final["Jobs_CreateJob"]["responseBytes"] == previous_create["responseBytes"]
    # /_local requests are neither authenticated nor counted: only the two API calls above were added
    assert sum(e["count"] for e in final.values()) == sum(e["count"] for e in after["operations"].values()) + 2
    client.begin_delete_job(job_body["id"], polling_interval=0).result()
