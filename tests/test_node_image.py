"""The stock node image and node sandboxes: a task on a stock node sees Batch's environment and nothing of the host.

Builds (or reuses) the image under .azbatch-local/cache/node-image; skips with one line naming the Debian package
when debootstrap or bubblewrap is missing.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from support.node_sandbox import IMAGE_DIR, REPO, Node, skip_unless, stock_image
from support.static_http import handler_for

from snakemake_executor_plugin_azbatch.local.nodes import isolation, node_image

DEBIAN_RELEASE_URL = f"{node_image.DEFAULT_MIRROR}/dists/{node_image.SUITE}/Release"


@pytest.fixture(scope="module")
def image() -> node_image.NodeImage:
    return stock_image()


@pytest.fixture
def make_node(image, tmp_path):
    skip_unless(isolation.missing_packages())
    nodes: list[Node] = []

    def factory(node_id: str = "tvm-1", **options) -> Node:
        node = Node(tmp_path, image, node_id, **options)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.sandbox.stop()


def test_the_image_is_a_stock_batch_node_and_rebuilds_only_when_the_recipe_changes(image):
    assert {"python3", "curl", "ca-certificates"} <= set(image.packages)
    assert not set(node_image.ABSENT_PACKAGES) & set(image.packages)
    record = json.loads((IMAGE_DIR / node_image.STAMP).read_text())
    assert record["key"] == node_image.Recipe().key() == image.key
    assert image.rootfs == IMAGE_DIR / f"rootfs-{image.key[:12]}"
    before = (image.rootfs.stat().st_mtime_ns, (IMAGE_DIR / "build.log").stat().st_mtime_ns)
    again = node_image.build(IMAGE_DIR)
    assert again == image  # cached: same record, nothing rebuilt
    assert (image.rootfs.stat().st_mtime_ns, (IMAGE_DIR / "build.log").stat().st_mtime_ns) == before
    assert node_image.Recipe(packages=("python3", "curl")).key() != image.key
    assert node_image.Recipe(mirror="http://127.0.0.1:9/debian").key() != image.key
    passwd = (image.rootfs / "etc" / "passwd").read_text()
    assert f"{node_image.TASK_USER}:x:{node_image.TASK_UID}:{node_image.TASK_GID}:" in passwd
    assert (image.rootfs / "etc" / "resolv.conf").read_text() == ""
    assert not list((image.rootfs / "var" / "lib" / "apt" / "lists").iterdir())
    assert max(p.lstat().st_mtime for p in (image.rootfs / "etc").rglob("*")) <= node_image.SOURCE_DATE_EPOCH


def test_a_failed_build_leaves_the_cached_image_untouched(image, tmp_path):
    """A broken mirror fails in one line; the stamp and root filesystem of the existing image stay as they were."""
    skip_unless(node_image.missing_packages())
    stamp_before = (IMAGE_DIR / node_image.STAMP).read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake_executor_plugin_azbatch.local.cli", "node-image", "build", str(IMAGE_DIR),
         "--mirror", "http://127.0.0.1:9/debian"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "debootstrap trixie from http://127.0.0.1:9/debian failed" in errors[0]
    assert "Traceback" not in proc.stderr
    assert (IMAGE_DIR / node_image.STAMP).read_text() == stamp_before
    assert node_image.load(IMAGE_DIR) == image
    assert not list(IMAGE_DIR.glob(".build-*"))


def test_the_cli_reuses_the_cached_image(image):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake_executor_plugin_azbatch.local.cli", "node-image", "build", str(IMAGE_DIR)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(IMAGE_DIR)
    assert "is up to date" in proc.stderr


def test_the_readme_documents_every_node_image_build_option():
    from test_readme import LOCAL_SERVICE, code_spans, markdown_table, section

    from snakemake_executor_plugin_azbatch.local import cli

    commands = next(a for a in cli.build_parser()._actions if a.choices and "node-image" in a.choices)
    actions = next(a for a in commands.choices["node-image"]._actions if a.choices and "build" in a.choices)
    build = actions.choices["build"]
    defined = {opt for action in build._actions for opt in action.option_strings if opt != "--help"} - {"-h"}
    defined |= {action.dest.upper() for action in build._actions if not action.option_strings}
    rows = markdown_table(section(LOCAL_SERVICE, "Stock node image, node sandboxes and containers"))
    assert {code_spans(row["option"])[0].split()[0] for row in rows} == defined


def test_a_task_on_a_stock_node_sees_nothing_of_the_host(make_node):
    node = make_node()
    host_venv = Path(sys.prefix)
    script = f"""
        command -v snakemake pip pip3 || echo no-snakemake-no-pip
        python3 -c 'import snakemake' 2>/dev/null || echo no-snakemake-module
        python3 -c 'import azure' 2>/dev/null || echo no-azure-module
        python3 -m venv /tmp/venv >/dev/null 2>&1 || echo no-venv
        test -e {REPO / 'pyproject.toml'} || echo no-project-checkout
        test -e {host_venv / 'bin' / 'python'} || echo no-host-venv
        echo "processes=$(ls /proc | grep -c '^[0-9]')"
        echo "pid1=$(cat /proc/1/comm)"
        echo "host=$(cat /proc/sys/kernel/hostname)"
        echo "path=$PATH"
        env | cut -d= -f1 | sort | tr '\\n' ' '
    """
    proc = node.run(script, env=node.env(MY_SETTING="from-the-task"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for marker in ("no-snakemake-no-pip", "no-snakemake-module", "no-azure-module", "no-venv",
                   "no-project-checkout", "no-host-venv", "host=tvm-1", "pid1=bwrap"):  # fmt: skip
        assert marker in lines, proc.stdout
    assert int(next(line for line in lines if line.startswith("processes=")).split("=")[1]) <= 6  # sh, ls, grep
    expected_path = f"{node_image.NODE_PATH}:{node.root / 'shared'}:{node.wd}"
    assert f"path={expected_path}" in lines
    names = set(lines[-1].split())
    allowed = set(node.env(MY_SETTING="x")) | {"PATH", "HOME", "USER", "LOGNAME", "PWD", "SHLVL", "_"}
    assert "MY_SETTING" in names and "AZ_BATCH_TASK_WORKING_DIR" in names
    assert names <= allowed, f"unexpected variables: {names - allowed}"
    assert not any(name in names for name in os.environ if name not in allowed)


def test_secrets_stay_off_command_lines_and_loader_variables_off_the_hosts_launchers(make_node):
    node = make_node()
    secret = "s3cr3t-value-that-must-not-reach-argv"
    env = node.env(SECRET_SETTING=secret, LD_LIBRARY_PATH="/opt/task-libs", TMPDIR="/tmp")
    launch = node.sandbox.launch(["sh", "-c", 'echo "$SECRET_SETTING $LD_LIBRARY_PATH $TMPDIR"'], cwd=node.wd,
                                 env=env, admin=False)  # fmt: skip
    assert secret not in " ".join(launch.argv) and launch.env["SECRET_SETTING"] == secret
    assert "LD_LIBRARY_PATH" not in launch.env and "TMPDIR" not in launch.env  # nsenter/bwrap must not act on them
    proc = subprocess.run(launch.argv, env=launch.env, capture_output=True, text=True, timeout=60)
    assert proc.stdout == f"{secret} /opt/task-libs /tmp\n", proc.stderr


def test_a_node_root_below_a_private_directory_is_reachable(image, tmp_path):
    """Service roots under /root (0700 in the image) still give non-admin tasks their absolute paths."""
    skip_unless(isolation.missing_packages())
    private = Path("/root") / f".azbatch-test-{os.getpid()}"
    private.mkdir()
    try:
        node = Node(private, image)
        try:
            proc = node.run('echo ok > "$AZ_BATCH_TASK_WORKING_DIR/abs.txt" && echo written')
            assert proc.stdout == "written\n", proc.stderr
        finally:
            node.sandbox.stop()
    finally:
        shutil.rmtree(private)
    assert not (image.rootfs / "root").stat().st_mode & 0o001  # the image itself keeps /root private


def test_non_admin_tasks_write_only_their_directories(make_node, image):
    node = make_node()
    proc = node.run(
        """
        id -un; id -u; echo "home=$HOME"
        touch /usr/local/bin/tool 2>&1 || true
        { echo x >> /etc/passwd; } 2>&1 || true
        touch "$AZ_BATCH_NODE_ROOT_DIR/not-mine" 2>&1 || true
        echo output > result.txt && echo wd-ok
        echo shared > "$AZ_BATCH_NODE_SHARED_DIR/s.txt" && echo shared-ok
        touch /tmp/scratch && echo tmp-ok
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == [node_image.TASK_USER, str(node_image.TASK_UID), f"home={node.wd}"]
    assert sum("Permission denied" in line for line in lines) == 3, proc.stdout
    assert {"wd-ok", "shared-ok", "tmp-ok"} <= set(lines)
    result = node.wd / "result.txt"
    assert result.read_text() == "output\n"
    assert (result.stat().st_uid, result.stat().st_gid) == (image.task_uid, image.task_gid)
    assert not (image.rootfs / "tmp" / "scratch").exists()


def test_admin_tasks_run_as_root_and_change_only_their_own_nodes_disk(make_node, image):
    first, second = make_node("tvm-1"), make_node("tvm-2")
    install_tool = "echo '#!/bin/sh\necho installed-tool' > /usr/local/bin/tool; chmod 755 /usr/local/bin/tool"
    admin = first.run(f"id -u; {install_tool}", admin=True)
    assert admin.returncode == 0, admin.stderr
    assert admin.stdout.splitlines()[0] == "0"
    later = first.run("tool")  # a later non-admin task on the same node
    assert later.stdout.strip() == "installed-tool", later.stderr
    other = second.run("command -v tool || echo absent")
    assert other.stdout.strip() == "absent"
    assert not (image.rootfs / "usr" / "local" / "bin" / "tool").exists()
    assert node_image.content_digest(image.rootfs)[0] == image.content_digest  # the image itself is never written
    # Even root on a node cannot change the host's kernel settings or mount things.
    limits = first.run("{ echo 1 > /proc/sys/vm/drop_caches; } 2>&1; mount -t tmpfs x /mnt 2>&1; true", admin=True)
    assert "Read-only file system" in limits.stdout and "permission denied" in limits.stdout.lower()


def test_exit_codes_and_signals_come_back_as_on_a_plain_process(make_node):
    node = make_node()
    assert node.run("exit 7").returncode == 7
    assert node.run("kill -9 $$").returncode == 137


def test_non_admin_tasks_have_a_world_writable_dev_shm_as_on_a_linux_node(make_node):
    """Python's multiprocessing locks are POSIX semaphores in /dev/shm (the example workflow's align step uses them)."""
    node = make_node()
    proc = node.run("python3 -c 'import multiprocessing; multiprocessing.Lock(); print(\"locked\")'")
    assert proc.returncode == 0 and proc.stdout == "locked\n", proc.stderr


def test_a_stopped_sandbox_launches_nothing(make_node):
    node = make_node()
    node.sandbox.stop()
    with pytest.raises(isolation.IsolationError, match="not started"):
        node.sandbox.launch(["true"], cwd=node.wd, env=node.env(), admin=False)


@pytest.fixture
def loopback_servers():
    hello = handler_for(b"hello from the local service")
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), hello) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [server.server_address[1] for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


FETCH = """python3 - <<'EOF'
import socket, sys, urllib.request
for url in sys.argv[1:] or {urls!r}:
    try:
        print(url, urllib.request.urlopen(url, timeout=5).read().decode())
    except Exception as exc:
        print(url, "FAILED", type(exc).__name__, getattr(exc, "reason", exc))
EOF"""


def test_a_local_only_node_reaches_the_forwarded_service_ports_and_nothing_else(make_node, loopback_servers):
    forwarded, other = loopback_servers
    node = make_node(network=isolation.NETWORK_LOCAL_ONLY, forward_ports=[forwarded])
    urls = [f"http://127.0.0.1:{forwarded}/", f"http://127.0.0.1:{other}/", "http://192.0.2.1/", DEBIAN_RELEASE_URL]
    proc = node.run(FETCH.format(urls=urls))
    assert proc.returncode == 0, proc.stderr
    results = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert results[urls[0]] == "hello from the local service"
    assert results[urls[1]].startswith("FAILED") and "refused" in results[urls[1]]
    assert results[urls[2]].startswith("FAILED") and "unreachable" in results[urls[2]]
    assert results[urls[3]].startswith("FAILED")  # no resolver, no route: the node reaches nothing outside
    # The same node keeps working for later tasks (one forwarder per node, many connections).
    again = node.run(FETCH.format(urls=urls[:1]))
    assert again.stdout.strip() == f"{urls[0]} hello from the local service"


def test_a_host_network_node_reaches_the_hosts_loopback(make_node, loopback_servers):
    node = make_node()
    url = f"http://127.0.0.1:{loopback_servers[1]}/"
    proc = node.run(FETCH.format(urls=[url]))
    assert proc.stdout.strip() == f"{url} hello from the local service", proc.stderr


def _debian_mirror_reachable() -> bool:
    try:
        with urllib.request.urlopen(DEBIAN_RELEASE_URL, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def test_an_admin_start_task_installs_debian_packages_for_later_tasks(make_node):
    """As on a stock Batch node: no venv until an admin start task installs python3-venv from Debian."""
    node = make_node()
    assert node.run("python3 -m venv /tmp/v").returncode != 0
    if not _debian_mirror_reachable():
        pytest.skip(f"needs {node_image.DEFAULT_MIRROR} (nodes reach package registries)")
    denied = node.run("apt-get install -y python3-venv")
    assert denied.returncode != 0 and "are you root" in denied.stderr.lower()
    install = node.run(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "python3-venv >/dev/null",
        admin=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    venv = node.run("python3 -m venv venv && venv/bin/python -c 'import sys; print(sys.prefix)'")
    assert venv.returncode == 0, venv.stderr
    assert venv.stdout.strip() == str(node.wd / "venv")
