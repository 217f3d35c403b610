"""The local service with `--node-image`: nodes run in the stock node image, containers in podman.

Over HTTP with the real SDK (responses spec-validated), files through the real Azurite. One service for the module:
pool `stock` (a start task run as admin installs a tool on the node's disk) and, when podman is installed, the
container-enabled pool `boxes`. Builds (or reuses) the cached image; skips with one line naming the Debian
package when debootstrap, bubblewrap or podman is missing (or without root).
"""

from __future__ import annotations

import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.node_sandbox import IMAGE_DIR, PODMAN_STORE, REPO, podman_engine, skip_unless, stock_image
from support.blob_access import blob_url, container_url, make_container
from support.waiting import wait_for

from support.services import ServiceHandle, start_service
from snakemake_executor_plugin_azbatch.local.nodes import containers, isolation, node_image
from snakemake_executor_plugin_azbatch.local.service_config import AppPackageSpec, PoolSpec
from snakemake_executor_plugin_azbatch.local.pool_file import start_task

WAIT_SECONDS = 120
ADMIN = {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}
INSTALL_TOOL = (
    "/bin/sh -c \"printf '#!/bin/sh\\necho tool-from-the-start-task\\n' > /usr/local/bin/node-tool && "
    'chmod 755 /usr/local/bin/node-tool && id -u"'
)
CHECKS = f"""\
exec > report.txt 2>&1
id -un; id -u
command -v snakemake pip pip3 || echo no-snakemake-no-pip
python3 -c 'import snakemake' 2>/dev/null || echo no-snakemake-module
python3 -c 'import azure' 2>/dev/null || echo no-azure-module
python3 -m venv /tmp/v >/dev/null 2>&1 || echo no-venv
test -e {REPO / 'pyproject.toml'} || echo no-project-checkout
test -e {Path(sys.prefix) / 'bin' / 'python'} || echo no-host-venv
{{ touch /usr/local/bin/mine; }} 2>/dev/null || echo cannot-write-system-dirs
echo "input: $(cat input.txt)"
echo "app: $("$AZ_BATCH_APP_PACKAGE_tools_1_0/bin/hello")"
echo "tool: $(node-tool)"
echo "ids: $AZ_BATCH_JOB_ID $AZ_BATCH_TASK_ID $AZ_BATCH_TASK_USER_IDENTITY $AZ_BATCH_POOL_ID"
echo "dirs: $PWD $HOME $AZ_BATCH_TASK_WORKING_DIR"
echo "setting: $MY_SETTING"
"""


def _app_zip(path: Path) -> Path:
    hello = zipfile.ZipInfo("bin/hello")
    hello.create_system, hello.external_attr = 3, 0o100755 << 16  # made on Unix, executable: it runs as it is
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(hello, "#!/bin/sh\necho hello-from-the-package\n")
    return path


@pytest.fixture(scope="module")
def podman_reference() -> str | None:
    """The stock image as a local podman image, or None when podman is missing (container tests then skip)."""
    if containers.missing_packages():
        return None
    return node_image.import_into_podman(stock_image(), podman_engine())


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, podman_reference: str | None) -> Iterator[ServiceHandle]:
    stock_image()
    skip_unless(isolation.missing_packages())
    root = tmp_path_factory.mktemp("stock-nodes")
    pools = [PoolSpec("stock", 1, 2, start_task=start_task({"commandLine": INSTALL_TOOL, "userIdentity": ADMIN}, "t"))]
    if podman_reference is not None:
        boxes = {"type": "dockerCompatible", "containerImageNames": [podman_reference]}
        pools.append(PoolSpec("boxes", 1, 2, container_configuration=boxes))
    apps = [AppPackageSpec("tools", "1.0", _app_zip(root / "tools.zip"))]
    handle = start_service(root / "service", {"pools": pools, "node_image": IMAGE_DIR, "app_packages": apps})
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def storage(svc: ServiceHandle) -> dict[str, str]:
    """A container with the task's input and check script; a writable SAS URL for its outputs."""
    container = make_container(svc, "stock")
    container.upload_blob("input.txt", b"staged input\n")
    container.upload_blob("check.sh", CHECKS.encode())
    return {
        "name": container.container_name,
        "input": blob_url(svc, container.container_name, "input.txt"),
        "check": blob_url(svc, container.container_name, "check.sh"),
        "outputs": container_url(svc, container.container_name, write=True, create=True, list=True, read=True),
    }


def new_job(client, pool: str, **extra: Any) -> str:
    job_id = f"{pool}-{uuid.uuid4().hex[:8]}"
    client.create_job({"id": job_id, "poolInfo": {"poolId": pool}, **extra})
    return job_id


def run_task(client, job_id: str, body: dict[str, Any]):
    client.create_task(job_id, body)
    return wait_for(lambda: (t := client.get_task(job_id, body["id"])).state == "completed" and t, WAIT_SECONDS,
                    lambda: f"task {body['id']} never completed: {client.get_task(job_id, body['id']).as_dict()}")


def output_file(storage: dict[str, str], pattern: str, path: str) -> dict[str, Any]:
    return {"filePattern": pattern, "destination": {"container": {"containerUrl": storage["outputs"], "path": path}},
            "uploadOptions": {"uploadCondition": "taskcompletion"}}


def blob_text(svc: ServiceHandle, storage: dict[str, str], name: str) -> str:
    blob = svc.blob_service_client().get_blob_client(storage["name"], name)
    return blob.download_blob().readall().decode()


def task_stderr(svc: ServiceHandle, client, job_id: str, task_id: str) -> str:
    return b"".join(client.download_task_file(job_id, task_id, "stderr.txt")).decode()


def test_the_start_task_ran_as_admin_on_the_node(svc: ServiceHandle) -> None:
    client = svc.batch_client()
    node = wait_for(lambda: (n := next(iter(client.list_nodes("stock")))).state == "idle" and n, WAIT_SECONDS,
                    lambda: str(next(iter(client.list_nodes("stock"))).as_dict()))
    assert node.start_task_info.result == "success" and node.start_task_info.exit_code == 0
    assert b"".join(client.download_node_file("stock", node.id, "startup/stdout.txt")) == b"0\n"


def test_stock_pools_report_the_image_their_nodes_run(svc: ServiceHandle) -> None:
    """Debian 13 (the stock image's system), not the host's; the plugin reads the nodes' Python from it. Its
    /etc/os-release says the same."""
    client = svc.batch_client()
    debian = {"publisher": "debian", "offer": "debian-13", "sku": "13", "version": "latest"}
    vm = client.get_pool("stock").virtual_machine_configuration
    assert (vm.image_reference.as_dict(), vm.node_agent_sku_id) == (debian, "batch.node.debian 13")
    assert all(n.virtual_machine_info.image_reference.as_dict() == debian for n in client.list_nodes("stock"))
    os_release = (stock_image().rootfs / "usr/lib/os-release").read_text()
    assert 'ID=debian' in os_release and 'VERSION_ID="13"' in os_release


def test_a_task_on_a_stock_node_sees_batch_and_nothing_of_the_host(svc: ServiceHandle, storage) -> None:
    client = svc.batch_client()
    job_id = new_job(client, "stock")
    body = {
        "id": "checks",
        "commandLine": "/bin/sh check.sh",
        "resourceFiles": [{"httpUrl": storage["check"], "filePath": "check.sh"},
                          {"httpUrl": storage["input"], "filePath": "input.txt"}],
        "applicationPackageReferences": [{"applicationId": "tools", "version": "1.0"}],
        "environmentSettings": [{"name": "MY_SETTING", "value": "from the task"}],
        "outputFiles": [output_file(storage, "report.txt", f"{job_id}/report.txt")],
    }
    task = run_task(client, job_id, body)
    assert task.execution_info.result == "success", task_stderr(svc, client, job_id, "checks")
    lines = blob_text(svc, storage, f"{job_id}/report.txt").splitlines()
    wd = svc.root / "nodes" / "stock" / task.node_info.node_id / task.node_info.task_root_directory / "wd"
    assert lines[:2] == [node_image.TASK_USER, str(node_image.TASK_UID)]
    for marker in ("no-snakemake-no-pip", "no-snakemake-module", "no-azure-module", "no-venv",
                   "no-project-checkout", "no-host-venv", "cannot-write-system-dirs",
                   "input: staged input", "app: hello-from-the-package", "tool: tool-from-the-start-task",
                   f"ids: {job_id} checks PoolNonAdmin stock", f"dirs: {wd} {wd} {wd}",
                   "setting: from the task"):  # fmt: skip
        assert marker in lines, "\n".join(lines)
    assert (wd / "report.txt").stat().st_uid == node_image.TASK_UID


def test_an_admin_task_runs_as_root_on_its_node(svc: ServiceHandle) -> None:
    client = svc.batch_client()
    job_id = new_job(client, "stock")
    task = run_task(client, job_id, {
        "id": "admin", "userIdentity": ADMIN,
        "commandLine": "/bin/sh -c 'id -u; touch /usr/local/bin/by-admin && echo wrote; "
                       "echo $AZ_BATCH_TASK_USER_IDENTITY'",
    })  # fmt: skip
    assert task.execution_info.result == "success"
    assert b"".join(client.download_task_file(job_id, "admin", "stdout.txt")) == b"0\nwrote\nPoolAdmin\n"


def test_a_program_missing_on_the_node_is_command_program_not_found(svc: ServiceHandle) -> None:
    """Looked up inside the node (the host has python3 in the venv too; the node has no `pip`)."""
    client = svc.batch_client()
    job_id = new_job(client, "stock")
    for task_id, identity in (("plain", None), ("admin", ADMIN)):
        body = {"id": task_id, "commandLine": "pip install snakemake"}
        if identity:
            body["userIdentity"] = identity
        info = run_task(client, job_id, body).execution_info
        assert (info.result, info.failure_info.code, info.exit_code) == ("failure", "CommandProgramNotFound", None)
        assert info.failure_info.message.endswith(": pip")
    ran = run_task(client, job_id, {"id": "exits", "commandLine": "/bin/sh -c 'exit 127'"}).execution_info
    assert ran.exit_code == 127 and ran.failure_info.code == "FailureExitCode"


def test_the_pip_bootstrap_fails_on_a_stock_node_and_its_tasks_stay_active(svc: ServiceHandle) -> None:
    """What a real stock Batch node does to the plugin's default bootstrap: no venv module, so the preparation
    task fails, the node takes none of the job's tasks, and they wait (the failure is in the prep status)."""
    client = svc.batch_client()
    job_id = new_job(client, "stock", jobPreparationTask={
        "commandLine": '/bin/sh -c \'python3 -m venv "$AZ_BATCH_NODE_SHARED_DIR/venv"\''})  # fmt: skip
    try:
        client.create_task(job_id, {"id": "waits", "commandLine": "/bin/sh -c 'echo never'"})

        def prep_failed():
            statuses = list(client.list_job_preparation_and_release_task_status(job_id))
            info = statuses[0].job_preparation_task_execution_info if statuses else None
            return info if info is not None and info.state == "completed" else None

        prep = wait_for(prep_failed, WAIT_SECONDS, "the preparation task never completed")
        assert prep.result == "failure" and prep.exit_code == 1 and prep.failure_info.code == "FailureExitCode"
        node_id = next(iter(client.list_nodes("stock"))).id
        stdout = b"".join(client.download_node_file("stock", node_id, f"{prep.task_root_directory}/stdout.txt"))
        assert b"because ensurepip is not" in stdout  # python3 -m venv says so on stdout
        task = wait_for(lambda: (t := client.get_task(job_id, "waits")).state == "active" and t, WAIT_SECONDS,
                        "the task never went back to active")
        assert task.previous_state == "preparing" and task.execution_info.result is None
    finally:
        client.begin_delete_job(job_id).result()


def test_a_task_in_a_real_container_sends_its_output_back(svc: ServiceHandle, storage, podman_reference) -> None:
    if podman_reference is None:
        skip_unless(containers.missing_packages())
    client = svc.batch_client()
    pool = client.get_pool("boxes")
    assert pool.virtual_machine_configuration.container_configuration.container_image_names == [podman_reference]
    job_id = new_job(client, "boxes")
    task = run_task(client, job_id, {
        "id": "boxed",
        "commandLine": "/bin/sh -c 'id -u > out.txt; cat /etc/debian_version >> out.txt; "
                       "echo $AZ_BATCH_TASK_ID $MY_SETTING >> out.txt; cat input.txt >> out.txt'",
        "containerSettings": {"imageName": podman_reference, "containerRunOptions": "--hostname boxed"},
        "environmentSettings": [{"name": "MY_SETTING", "value": "mapped in"}],
        "resourceFiles": [{"httpUrl": storage["input"], "filePath": "input.txt"}],
        "outputFiles": [output_file(storage, "out.txt", f"{job_id}/out.txt")],
    })  # fmt: skip
    assert task.execution_info.result == "success", task_stderr(svc, client, job_id, "boxed")
    lines = blob_text(svc, storage, f"{job_id}/out.txt").splitlines()
    debian = (stock_image().rootfs / "etc" / "debian_version").read_text().strip()
    assert lines == [str(node_image.TASK_UID), debian, "boxed mapped in", "staged input"]


def test_container_failures_are_batchs(svc: ServiceHandle, podman_reference) -> None:
    if podman_reference is None:
        skip_unless(containers.missing_packages())
    client = svc.batch_client()
    boxes, stock = new_job(client, "boxes"), new_job(client, "stock")
    cases = [
        (boxes, {"id": "no-image", "commandLine": "/bin/sh -c 'touch ran'",
                 "containerSettings": {"imageName": "localhost/no-such-image:1"}}, "ContainerInvalidImage"),
        (boxes, {"id": "plain", "commandLine": "/bin/sh -c 'touch ran'"}, "ContainerTaskSettingsNotFound"),
        (stock, {"id": "boxed", "commandLine": "/bin/sh -c 'touch ran'",
                 "containerSettings": {"imageName": podman_reference}}, "ContainerPoolNotSupported"),
    ]  # fmt: skip
    for job_id, body, code in cases:
        task = run_task(client, job_id, body)
        failure = task.execution_info.failure_info
        assert (task.execution_info.result, failure.category, failure.code) == ("failure", "usererror", code)
        assert task.execution_info.exit_code is None
        wd = svc.root / "nodes" / task.node_info.pool_id / task.node_info.node_id / task.node_info.task_root_directory
        assert not (wd / "wd" / "ran").exists()
    missing = client.get_task(boxes, "no-image").execution_info.failure_info
    assert {"name": "ContainerImage", "value": "localhost/no-such-image:1"} in [d.as_dict() for d in missing.details]


def test_a_local_only_node_reaches_the_local_service_and_nothing_else(make_service) -> None:
    stock_image()
    skip_unless(isolation.missing_packages())
    svc = make_service(pools=["lonely:1:1"], node_image=IMAGE_DIR, node_network="local-only")
    client = svc.batch_client()
    script = (
        "import os, urllib.request, urllib.error\n"
        "for url in (os.environ['AZ_BATCH_ACCOUNT_URL'] + '/pools', os.environ['BLOB'], 'http://192.0.2.1/'):\n"
        "    try:\n"
        "        urllib.request.urlopen(url, timeout=5); print('reached')\n"
        "    except urllib.error.HTTPError as exc: print('answered', exc.code)\n"
        "    except OSError as exc: print('unreachable', type(exc).__name__)\n"
    )
    job_id = new_job(client, "lonely")
    task = run_task(client, job_id, {
        "id": "net", "commandLine": f"python3 -c \"{script}\"",
        "environmentSettings": [{"name": "BLOB", "value": svc.endpoints.storage.blob_url + "/nothing?comp=list"}],
    })  # fmt: skip
    assert task.execution_info.result == "success", task_stderr(svc, client, job_id, "net")
    out = b"".join(client.download_task_file(job_id, "net", "stdout.txt")).decode().splitlines()
    assert out[0] == "answered 401" or out[0].startswith("answered 40"), out  # the Batch API: no credentials
    assert out[1].startswith("answered 4"), out  # storage answers too (no SAS here)
    assert out[2] == "unreachable URLError", out  # nothing beyond the local service


def test_a_container_pool_of_host_nodes_runs_tasks_in_podman_too(make_service, podman_reference) -> None:
    """Without --node-image, container tasks still run in real containers (as the service's user here)."""
    if podman_reference is None:
        skip_unless(containers.missing_packages())
    svc = make_service(pools=[PoolSpec("hostboxes", 1, 1, container_configuration={"type": "dockerCompatible"})],
                       podman_store=PODMAN_STORE)
    client = svc.batch_client()
    job_id = new_job(client, "hostboxes")
    task = run_task(client, job_id, {
        "id": "boxed",
        "commandLine": f"/bin/sh -c 'cat /etc/debian_version; test -e {REPO / 'pyproject.toml'} || echo boxed-in'",
        "containerSettings": {"imageName": podman_reference},
    })  # fmt: skip
    assert task.execution_info.result == "success", task_stderr(svc, client, job_id, "boxed")
    out = b"".join(client.download_task_file(job_id, "boxed", "stdout.txt")).decode().splitlines()
    assert out == [(stock_image().rootfs / "etc" / "debian_version").read_text().strip(), "boxed-in"]
