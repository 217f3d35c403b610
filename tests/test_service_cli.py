"""LocalService and the `azbatch-local` CLI: exported settings, clean start/stop, signals, exit codes, bad options."""

from __future__ import annotations

import base64
import json
import os
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from support.waiting import wait_for

from support.processes import descendant_pids
from support.services import ServiceHandle

CLI = [sys.executable, "-m", "snakemake_executor_plugin_azbatch.local.cli"]
EXPECTED_ENV = {
    "SNAKEMAKE_AZBATCH_ACCOUNT_URL",
    "SNAKEMAKE_AZBATCH_ACCOUNT_NAME",
    "SNAKEMAKE_AZBATCH_ACCOUNT_KEY",
    "SNAKEMAKE_AZBATCH_POOL_ID",
    "SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING",
    "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL",
    "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_KEY",
    "AZURE_BATCH_ENDPOINT",
    "AZURE_BATCH_ACCOUNT",
    "AZURE_BATCH_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZBATCH_LOCAL_ROOT",
    "AZBATCH_LOCAL_METRICS_URL",
}
STARTUP_TIMEOUT_S = 90


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_open(url: str) -> bool:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0


# -- LocalService in-process ---------------------------------------------------------------------------------


def test_exported_settings_reach_batch_and_storage(local_service: ServiceHandle) -> None:
    env = local_service.env
    assert set(env) == EXPECTED_ENV
    assert env["SNAKEMAKE_AZBATCH_ACCOUNT_URL"] == env["AZURE_BATCH_ENDPOINT"] == local_service.account_url
    assert env["SNAKEMAKE_AZBATCH_POOL_ID"] == local_service.config.pools[0].id
    assert env["SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL"] == local_service.endpoints.storage.blob_url
    assert env["AZURE_STORAGE_CONNECTION_STRING"] == env["SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING"]
    assert all(v.startswith("http://127.0.0.1:") for k, v in env.items() if k.endswith("_URL") or k.endswith("ENDPOINT"))

    # env.sh: owner-only, and a shell that sources it sees exactly the same values.
    env_file = local_service.root / "env.sh"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    shown = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(env_file))} && env -0"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    sourced = dict(item.decode().split("=", 1) for item in shown if item)
    assert {k: sourced[k] for k in EXPECTED_ENV} == env

    # The exported Batch settings authenticate; the exported storage goes through the counting proxy.
    lists_before = local_service.metrics()["operations"].get("Pools_ListPools", {"count": 0})["count"]
    pools = [p.id for p in local_service.batch_client().list_pools()]
    assert env["SNAKEMAKE_AZBATCH_POOL_ID"] in pools
    from azure.storage.blob import BlobServiceClient

    before = local_service.metrics()["storage"].get("PutBlob", {"count": 0, "requestBytes": 0})
    storage = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
    container = storage.get_container_client("exported-settings")
    if not container.exists():
        container.create_container()
    container.upload_blob("hello.txt", b"12345", overwrite=True)
    after = local_service.metrics()["storage"]["PutBlob"]
    assert after["count"] == before["count"] + 1
    assert after["requestBytes"] == before["requestBytes"] + 5
    assert local_service.metrics()["operations"]["Pools_ListPools"]["count"] == lists_before + 1


def test_stop_writes_metrics_and_releases_everything(make_service, tmp_path: Path) -> None:
    # A root with a space and a quote: env.sh must still source to the exact path.
    service = make_service(pools=["solo:1:1"], root=tmp_path / "it's a root")
    sourced = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(service.root / 'env.sh'))} && printf %s \"$AZBATCH_LOCAL_ROOT\""],
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert sourced == str(service.root) == str((tmp_path / "it's a root").resolve())
    azurite_pid = service.service.azurite.process.pid
    blob_url = service.endpoints.storage.blob_url
    container = service.blob_service_client().create_container("stopping")
    container.upload_blob("a.txt", b"abc")
    service.stop()

    assert not alive(azurite_pid)
    assert not port_open(service.account_url)
    assert not port_open(blob_url)
    metrics = json.loads((service.root / "metrics.json").read_text())
    assert metrics["storage"]["PutBlob"]["requestBytes"] == 3
    assert metrics["storage"]["CreateContainer"]["count"] == 1
    service.stop()  # idempotent


def test_failed_start_stops_what_had_started(make_service, tmp_path: Path) -> None:
    from snakemake_executor_plugin_azbatch.local.service_config import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        before = set(descendant_pids(os.getpid()))
        with pytest.raises(ConfigError, match=f"--port {busy_port}: already in use"):
            make_service(port=busy_port, root=tmp_path / "busy")
    assert [pid for pid in descendant_pids(os.getpid()) if pid not in before] == []


def test_one_root_serves_one_service(local_service: ServiceHandle, make_service) -> None:
    from snakemake_executor_plugin_azbatch.local.service_config import ConfigError

    with pytest.raises(ConfigError, match="another azbatch-local is using this directory"):
        make_service(root=local_service.root)
    assert local_service.metrics()["operations"] is not None  # the first one is unharmed


# -- the CLI as a subprocess ---------------------------------------------------------------------------------


@pytest.fixture
def cli_processes() -> Iterator[list[subprocess.Popen]]:
    """CLI subprocesses; on teardown they and anything below them are killed even if the test failed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            below = descendant_pids(process.pid)
            process.kill()
            for pid in below:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _read_until(process: subprocess.Popen, marker: str) -> list[str]:
    """stdout lines up to and including the first one starting with `marker`."""
    lines: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    buffer = b""
    fd = process.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            if process.poll() is not None:
                break
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line.decode())
            if lines[-1].startswith(marker):
                return lines
    stderr = process.stderr.read().decode() if process.poll() is not None else ""
    raise AssertionError(f"no {marker!r} line from the CLI; stdout={lines} stderr={stderr}")


def _exports(lines: list[str]) -> dict[str, str]:
    exported = {}
    for line in lines:
        if line.startswith("export "):
            name, value = shlex.split(line[len("export ") :])[0].split("=", 1)
            exported[name] = value
    return exported


def test_serve_prints_settings_and_sigterm_leaves_no_process(tmp_path: Path, cli_processes) -> None:
    from azure.batch import BatchClient, models
    from azure.core.credentials import AzureNamedKeyCredential

    from support.spec_validation import SpecValidationPolicy

    root = tmp_path / "serve-root"
    process = subprocess.Popen(
        [*CLI, "serve", "--root", str(root), "--pool", "cli:1:2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    cli_processes.append(process)
    lines = _read_until(process, "# written to")
    exported = _exports(lines)
    assert set(exported) == EXPECTED_ENV
    assert exported["SNAKEMAKE_AZBATCH_POOL_ID"] == "cli"
    assert str(root / "env.sh") in lines[-1]
    assert _exports((root / "env.sh").read_text().splitlines()) == exported

    client = BatchClient(
        exported["AZURE_BATCH_ENDPOINT"],
        AzureNamedKeyCredential(exported["AZURE_BATCH_ACCOUNT"], exported["AZURE_BATCH_ACCESS_KEY"]),
        per_call_policies=[SpecValidationPolicy()],
    )
    client.create_job(models.BatchJobCreateOptions(id="sigterm", pool_info=models.BatchPoolInfo(pool_id="cli")))
    client.create_task("sigterm", models.BatchTaskCreateOptions(id="sleeper", command_line="sleep 300"))
    wait_for(lambda: client.get_task("sigterm", "sleeper").state == models.BatchTaskState.RUNNING, 60, "task running")

    def sleeper_pids() -> list[int]:
        # "running" is reported as the node starts the task; its process follows a moment later
        return [pid for pid in descendant_pids(process.pid) if b"sleep" in _cmdline(pid)]

    sleepers = wait_for(sleeper_pids, 10, "the running task should be a process below the service")
    below = descendant_pids(process.pid)
    assert any(b"azurite" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in below)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert [pid for pid in below if alive(pid)] == []
    assert not port_open(exported["AZURE_BATCH_ENDPOINT"])
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["operations"]["Tasks_CreateTask"]["count"] == 1


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
def test_killed_service_takes_azurite_with_it(tmp_path: Path, cli_processes) -> None:
    # SIGKILL gives the service no chance to stop Azurite: the kernel's parent-death signal must.
    root = tmp_path / "killed-root"
    process = subprocess.Popen(
        [*CLI, "serve", "--root", str(root), "--pool", "k:1:1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    cli_processes.append(process)
    _read_until(process, "# written to")
    azurite = [pid for pid in descendant_pids(process.pid) if b"azurite" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert azurite, "Azurite should run below the service"
    process.kill()
    process.wait(timeout=30)
    wait_for(lambda: not any(alive(pid) for pid in azurite), 30, "Azurite did not exit after its service was killed")


def test_run_passes_settings_and_returns_the_exit_status(tmp_path: Path, cli_processes) -> None:
    probe = (
        "import json, os, sys, urllib.request;"
        "m = json.load(urllib.request.urlopen(os.environ['AZBATCH_LOCAL_METRICS_URL']));"
        "print('pool=' + os.environ['SNAKEMAKE_AZBATCH_POOL_ID']);"
        "print('root=' + os.environ['AZBATCH_LOCAL_ROOT']);"
        "print('key=' + os.environ['SNAKEMAKE_AZBATCH_ACCOUNT_KEY']);"
        "print('keys=' + ','.join(sorted(m)));"
        "sys.exit(7)"
    )
    key = base64.b64encode(b"a key that stays off the command line").decode()
    process = subprocess.Popen(
        [*CLI, "run", "--root", str(tmp_path / "run-root"), "--pool", "runpool:1:1", "--", sys.executable, "-c", probe],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "AZBATCH_LOCAL_ACCOUNT_KEY": key},
    )
    cli_processes.append(process)
    stdout, stderr = process.communicate(timeout=STARTUP_TIMEOUT_S)
    assert process.returncode == 7, stderr.decode()
    assert stdout.decode().splitlines() == [
        "pool=runpool",
        f"root={(tmp_path / 'run-root').resolve()}",
        f"key={key}",
        "keys=injectedFaults,operations,storage,storageOther,storagePlugin",
    ]
    assert (tmp_path / "run-root" / "metrics.json").is_file()


def _run_python(tmp_path: Path, script: str, ready: Path, cli_processes) -> tuple[subprocess.Popen, list[int]]:
    """`azbatch-local run -- python -c SCRIPT`, once SCRIPT has written `ready`; with the pids below it."""
    process = subprocess.Popen(
        [*CLI, "run", "--root", str(tmp_path / "root"), "--pool", "p:1:1", "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    cli_processes.append(process)
    wait_for(ready.exists, STARTUP_TIMEOUT_S, "the command did not start")
    return process, descendant_pids(process.pid)


def test_run_forwards_sigterm_to_the_command_then_stops(tmp_path: Path, cli_processes) -> None:
    ready = tmp_path / "ready"
    got = tmp_path / "got-signal"
    script = (
        "import signal, sys, time, pathlib;"
        f"signal.signal(signal.SIGTERM, lambda s, f: (pathlib.Path({str(got)!r}).write_text(str(s)), sys.exit(5)));"
        f"pathlib.Path({str(ready)!r}).write_text('x');"
        "time.sleep(300)"
    )
    process, below = _run_python(tmp_path, script, ready, cli_processes)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 5
    assert got.read_text() == str(int(signal.SIGTERM))
    assert [pid for pid in below if alive(pid)] == []


def test_run_second_signal_kills_a_command_that_ignores_the_first(tmp_path: Path, cli_processes) -> None:
    ready = tmp_path / "ready"
    got = tmp_path / "got-sigint"
    script = (
        "import signal, time, pathlib;"
        f"signal.signal(signal.SIGINT, lambda s, f: pathlib.Path({str(got)!r}).write_text('x'));"
        f"pathlib.Path({str(ready)!r}).write_text('x');"
        "time.sleep(300)"
    )
    process, below = _run_python(tmp_path, script, ready, cli_processes)
    process.send_signal(signal.SIGINT)  # forwarded; the command notes it and carries on
    # Identical signals sent back to back can merge into one, so the second waits for the first to arrive.
    wait_for(got.exists, 60, "the forwarded SIGINT never arrived")
    process.send_signal(signal.SIGINT)  # escalates to SIGKILL
    assert process.wait(timeout=60) == 128 + signal.SIGKILL
    assert [pid for pid in below if alive(pid)] == []


def test_run_reports_a_missing_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "run", "--root", str(tmp_path / "r"), "--pool", "p:1:1", "--", "no-such-command-azbatch"],
        capture_output=True,
        timeout=STARTUP_TIMEOUT_S,
    )
    assert result.returncode == 127
    assert "cannot run 'no-such-command-azbatch'" in result.stderr.decode()


@pytest.mark.parametrize(
    "args,message",
    [
        (["serve", "--pool", "bad:x"], "--pool 'bad:x': NODES and SLOTS must be whole numbers"),
        (["serve", "--fail-status", "404"], "invalid choice: 404"),
        (["serve", "--fail-status", "429,500,418"], "invalid choice: 429,500,418"),
        (["serve", "--fail-fraction", "1.5"], "--fail-fraction and --preempt-fraction must be between 0 and 1"),
        (["serve", "--app-package", "tools:1.0=/nonexistent.zip"], "no such zip file"),
        (["serve", "--port", "70000"], "--port 70000"),
        (["serve", "--account-key", "not base64!"], "--account-key: not valid base64"),
        (["serve", "--simulate", "-1"], "--simulate -1.0: give the seconds each task takes, 0 or more"),
        (["serve", "--simulate", "1", "--simulate-fail", "2"], "--simulate-fail 2.0: give a fraction between 0 and 1"),
        (["serve", "--simulate-fail", "0.5"], "--simulate-fail needs --simulate SECONDS"),
        (["serve", "--node-image", "no-image-here"], "--node-image: no node image in"),
        (["serve", "--node-network", "local-only"], "--node-network local-only needs --node-image DIR"),
        (["serve", "--start-task", "nopool=true"], "--start-task 'nopool=true': no pool 'nopool'"),
        (["serve", "--start-task", "local"], "expected POOL=COMMAND_LINE"),
        (["serve", "--pool-file", "missing.yaml"], "--pool-file missing.yaml: cannot read it"),
        (["serve", "--container-pool", "c:x"], "--container-pool 'c:x': NODES and SLOTS must be whole numbers"),
        (["run"], "give the command to run after --"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run([*CLI, *args], capture_output=True, timeout=60, cwd=tmp_path)
    stderr = result.stderr.decode().strip()
    assert result.returncode == 2
    assert message in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert not (tmp_path / ".azbatch-local").exists()


def test_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "serve", "--root", str(tmp_path / "r"), "--port", str(port)], capture_output=True, timeout=120
        )
    stderr = result.stderr.decode().strip()
    assert result.returncode == 2
    assert f"--port {port}: already in use" in stderr and len(stderr.splitlines()) == 1, stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "azbatch-local"
    result = subprocess.run([str(script), "serve", "--help"], capture_output=True, timeout=60)
    assert result.returncode == 0
    assert b"./.azbatch-local" in result.stdout


def test_azurite_that_fails_to_start_is_reported_with_its_output(tmp_path: Path) -> None:
    broken = tmp_path / "azurite-blob"
    broken.write_text("#!/bin/sh\necho 'azurite: cannot listen (simulated)'\nexit 3\n")
    broken.chmod(0o755)
    result = subprocess.run(
        [*CLI, "serve", "--root", str(tmp_path / "r")],
        capture_output=True,
        timeout=120,
        env={**os.environ, "AZURITE_BIN": str(broken)},
    )
    stderr = result.stderr.decode().strip()
    assert result.returncode == 1
    assert "could not start the service: Azurite did not start" in stderr
    assert "cannot listen (simulated)" in stderr and len(stderr.splitlines()) == 1, stderr


def test_missing_azurite_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--root", str(tmp_path / "r")],
        capture_output=True,
        timeout=60,
        env={**os.environ, "AZURITE_BIN": str(tmp_path / "missing-azurite")},
    )
    stderr = result.stderr.decode().strip()
    assert result.returncode == 2
    assert "AZURITE_BIN" in stderr and len(stderr.splitlines()) == 1, stderr


def test_find_azurite_walks_up_to_node_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from snakemake_executor_plugin_azbatch.local.storage.azurite import find_azurite
    from snakemake_executor_plugin_azbatch.local.service_config import ConfigError

    monkeypatch.delenv("AZURITE_BIN", raising=False)
    binary = tmp_path / "project" / "node_modules" / ".bin" / "azurite-blob"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    nested = tmp_path / "project" / "a" / "b"
    nested.mkdir(parents=True)
    assert find_azurite([nested]) == binary

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ConfigError, match=r"run `make install` \(or `npm ci`\)"):
        find_azurite([tmp_path / "elsewhere"])


# -- pools from options and pool files (parsed in-process) ----------------------------------------------------


def _config(tmp_path: Path, *args: str):
    from snakemake_executor_plugin_azbatch.local import cli

    return cli.config_from_args(cli.build_parser().parse_args(["serve", "--root", str(tmp_path / "root"), *args]))


@pytest.mark.quick
def test_service_options_are_generated_from_the_config_fields_and_their_defaults(tmp_path: Path) -> None:
    from snakemake_executor_plugin_azbatch.local.cli_options import build_parser, config_options
    from snakemake_executor_plugin_azbatch.local.service_config import ServiceConfig

    generated = config_options()
    assert len(generated) >= 15 and len({spec.flag for _, spec, _ in generated}) == len(generated)
    defaults = ServiceConfig(root=tmp_path)
    parsed = _config(tmp_path)
    for name, _, default in generated:
        assert getattr(defaults, name) == default == getattr(parsed, name), name
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    assert all(spec.flag in help_text for _, spec, _ in generated)
    changed = _config(tmp_path, "--seed", "7", "--max-pool-nodes", "3", "--no-node-host-cas", "--simulate", "0.5")
    assert (changed.seed, changed.max_pool_nodes, changed.node_host_cas, changed.simulate) == (7, 3, False, 0.5)


@pytest.mark.quick
def test_pools_come_from_options_and_a_pool_file(tmp_path: Path) -> None:
    pool_file = tmp_path / "pools.yaml"
    pool_file.write_text(
        "pools:\n"
        "  - id: tools\n"
        "    nodes: 2\n"
        "    slots: 4\n"
        "    vmSize: standard_e8s_v5\n"
        "    containerConfiguration: {type: dockerCompatible, containerImageNames: [localhost/tools:1]}\n"
        "    startTask:\n"
        "      commandLine: /bin/sh -c 'apt-get install -y python3-venv'\n"
        "      userIdentity: {autoUser: {elevationLevel: admin}}\n"
        "      maxTaskRetryCount: 2\n"
    )
    config = _config(tmp_path, "--pool", "plain:1:1", "--container-pool", "boxes:1:2", "--pool-file", str(pool_file),
                     "--start-task", "plain=/bin/sh -c true")
    plain, boxes, tools = config.pools
    assert (plain.id, plain.nodes, plain.slots, plain.container_configuration) == ("plain", 1, 1, None)
    assert plain.start_task == {"commandLine": "/bin/sh -c true", "waitForSuccess": True, "maxTaskRetryCount": 0,
                                "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}}
    assert boxes.container_configuration == {"type": "dockerCompatible", "containerImageNames": []}
    assert (tools.nodes, tools.slots, tools.vm_size) == (2, 4, "standard_e8s_v5")
    assert tools.container_configuration["containerImageNames"] == ["localhost/tools:1"]
    assert tools.start_task["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}
    assert tools.start_task["maxTaskRetryCount"] == 2 and tools.start_task["waitForSuccess"] is True
    assert _config(tmp_path, "--start-task", "local=setup").pools[0].start_task["commandLine"] == "setup"


@pytest.mark.quick
@pytest.mark.parametrize(
    "text,message",
    [
        ("[{id: a, nodes: 1, size: 3}]", "pool 'a': unknown property 'size'"),
        ("[{id: a, slots: 0}]", "pool 'a': slots: must be a whole number ≥ 1"),
        ("[{id: 'a b'}]", "expected ID[:NODES[:SLOTS]]"),
        ("[{id: a, startTask: {waitForSuccess: true}}]", "pool 'a': startTask: commandLine is required"),
        ("[{id: a, startTask: {commandLine: x, userIdentity: {username: bob}}}]", "only autoUser identities"),
        ("[{id: a, containerConfiguration: {type: rkt}}]", "type 'rkt': choose dockerCompatible or criCompatible"),
        ("[{id: a, containerConfiguration: {containerRegistries: [{registryServer: r}]}}]", "never pull"),
        ("pools: [", "not valid JSON or YAML"),
        ("{}", "expected a list of pools"),
    ],
)
def test_pool_file_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    from snakemake_executor_plugin_azbatch.local.service_config import ConfigError

    path = tmp_path / "pools.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, "--pool-file", str(path))
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # the process ended meanwhile
        return b""
