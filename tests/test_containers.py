"""Container tasks through podman: Batch's mounts, user mapping, environment and failure codes.

Uses the stock node image imported into the repository's cached podman store (no registry involved); skips with
one line naming the Debian package when podman, runc or debootstrap is missing.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest
from support.node_sandbox import Node, podman_engine, skip_unless, stock_image

from snakemake_executor_plugin_azbatch.local.nodes import containers, isolation, node_image
from snakemake_executor_plugin_azbatch.local.nodes.containers import ContainerTaskFailure

SECRET = "s3cr3t-value-that-must-not-reach-argv"


@pytest.fixture(scope="module")
def engine() -> containers.PodmanEngine:
    return podman_engine()


@pytest.fixture(scope="module")
def reference(engine) -> str:
    return node_image.import_into_podman(stock_image(), engine)


@pytest.fixture
def node(tmp_path, reference):
    skip_unless(isolation.missing_packages())
    node = Node(tmp_path, stock_image())
    yield node
    node.sandbox.stop()


def run(engine, launch: containers.ContainerLaunch) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(launch.argv, env=launch.env, capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(engine.remove_argv(launch.name), env=engine.env(), capture_output=True)


def launch_for(engine, node, settings, script, *, admin=False, network=containers.NETWORK_HOST, **env):
    return containers.container_launch(
        engine,
        settings,
        ["sh", "-c", script],
        env=node.env(**env),
        node_root=node.root,
        user=node.sandbox.task_owner(admin),
        name=f"azb-test-{uuid.uuid4().hex[:8]}",
        network=network,
    )


def test_a_container_task_runs_with_batchs_mounts_user_and_environment(engine, reference, node):
    settings = {"imageName": reference, "containerRunOptions": "--hostname c1"}
    launch = launch_for(
        engine, node, settings,
        'id -u > out.txt; pwd >> out.txt; hostname >> out.txt; echo "$AZ_BATCH_TASK_ID $SECRET_SETTING" >> out.txt; '
        'ls "$AZ_BATCH_NODE_STARTUP_DIR" >/dev/null && echo startup-visible; echo to-stderr >&2; exit 3',
        SECRET_SETTING=SECRET,
    )  # fmt: skip
    assert SECRET not in " ".join(launch.argv)
    proc = run(engine, launch)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "startup-visible\n" and proc.stderr == "to-stderr\n"
    out = (node.wd / "out.txt").read_text().splitlines()
    assert out == [str(node_image.TASK_UID), str(node.wd), "c1", f"task {SECRET}"]
    assert (node.wd / "out.txt").stat().st_uid == node_image.TASK_UID


def test_an_admin_container_task_runs_as_root(engine, reference, node):
    launch = launch_for(engine, node, {"imageName": reference}, "id -u > admin.txt", admin=True)
    assert run(engine, launch).returncode == 0
    assert (node.wd / "admin.txt").read_text() == "0\n"


def test_selected_data_paths_only_and_their_variables(engine, reference, node):
    settings = {
        "imageName": reference,
        "containerHostBatchBindMounts": [
            {"source": "Task", "isReadOnly": False},
            {"source": "Shared", "isReadOnly": True},
            {"source": "Shared"},
        ],
    }
    launch = launch_for(
        engine, node, settings,
        'echo task-ok > t.txt; { echo x > "$AZ_BATCH_NODE_SHARED_DIR/x"; } 2>&1; '
        f'test -d "{node.root / "startup"}" || echo startup-hidden; '
        'echo "startup=${AZ_BATCH_NODE_STARTUP_DIR-unset}"',
    )  # fmt: skip
    proc = run(engine, launch)
    assert (node.wd / "t.txt").read_text() == "task-ok\n"
    assert "Read-only file system" in proc.stdout
    assert "startup-hidden" in proc.stdout and "startup=unset" in proc.stdout


def test_the_image_default_working_directory(engine, reference, node):
    settings = {"imageName": reference, "workingDirectory": "containerImageDefault"}
    proc = run(engine, launch_for(engine, node, settings, "pwd"))
    assert proc.stdout.strip() == "/"


def test_a_missing_image_fails_as_batch_reports_it(engine):
    with pytest.raises(ContainerTaskFailure) as failure:
        containers.check_image(engine, "localhost/no-such-image:1")
    info = failure.value.failure_info
    assert (info["category"], info["code"]) == ("usererror", "ContainerInvalidImage")
    assert {"name": "ContainerImage", "value": "localhost/no-such-image:1"} in info["details"]


def test_a_missing_image_cannot_run_even_without_the_check(engine, node):
    """--pull never: an absent image is never fetched from a registry; podman exits 125 at once."""
    launch = launch_for(engine, node, {"imageName": "localhost/no-such-image:1"}, "true")
    proc = run(engine, launch)
    assert proc.returncode == 125 and "image not known" in proc.stderr


def test_containers_and_pools_must_agree():
    with pytest.raises(ContainerTaskFailure) as failure:
        containers.check_pool_support(False, {"imageName": "x"})
    assert failure.value.failure_info["code"] == "ContainerPoolNotSupported"
    with pytest.raises(ContainerTaskFailure) as failure:
        containers.check_pool_support(True, None)
    assert failure.value.failure_info["code"] == "ContainerTaskSettingsNotFound"
    containers.check_pool_support(True, None, ordinary_task=False)  # a start task may run on the node itself
    containers.check_pool_support(False, None)
    containers.check_pool_support(True, {"imageName": "x"})


def test_settings_that_cannot_work_are_container_invalid_settings(tmp_path):
    engine = containers.PodmanEngine(tmp_path / "store", executable="podman")
    env = {"AZ_BATCH_TASK_DIR": "/n/t", "AZ_BATCH_TASK_WORKING_DIR": "/n/t/wd"}
    cases = [
        {"imageName": ""},
        {"imageName": "x", "containerHostBatchBindMounts": [{"source": "Shared"}]},  # no Task path, default workdir
        {"imageName": "x", "containerHostBatchBindMounts": [{"source": "Elsewhere"}]},
        {"imageName": "x", "containerRunOptions": "--label 'unterminated"},
    ]
    for settings in cases:
        with pytest.raises(ContainerTaskFailure) as failure:
            containers.container_launch(
                engine, settings, ["true"], env=env, node_root=tmp_path, user=(1000, 1000), name="n"
            )
        assert failure.value.failure_info["code"] == "ContainerInvalidSettings", settings


def test_a_container_on_a_local_only_node_shares_its_network(engine, reference, tmp_path):
    skip_unless(isolation.missing_packages())
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    node = Node(tmp_path, stock_image(), network=isolation.NETWORK_LOCAL_ONLY, forward_ports=[port])
    try:
        script = (
            f"curl -s -o /dev/null -w 'service=%{{http_code}}\\n' http://127.0.0.1:{port}/; "
            "curl -sS -m 5 http://192.0.2.1/ 2>&1 || true"
        )
        proc = run(engine, launch_for(engine, node, {"imageName": reference}, script, network=node.sandbox.netns_path))
        lines = proc.stdout.splitlines()
        assert lines[0] == "service=200", proc.stderr
        assert "(7) Failed to connect to 192.0.2.1" in lines[1]  # no route: only loopback exists in the node
    finally:
        node.sandbox.stop()
        server.shutdown()
        server.server_close()
