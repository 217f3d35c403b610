"""Batch and storage outages mid-run. The local service's outage switch (`/_local/outage`) drops requests as an
unreachable endpoint would; the plugin keeps waiting while the tasks run on, says so once and again when the
endpoint is back, and past `--azbatch-outage-tolerance` ends the run with one line and its Batch job terminated."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from datetime import datetime

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceResponseError
from support.executor_runs import snakemake_command, snakemake_env, write_files
from support.processes import processes_with
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text, short_reason, unreachable
from snakemake_executor_plugin_azbatch.local.service_config import NODE_USER_AGENT, ConfigError
from snakemake_executor_plugin_azbatch.local.http.outage_switch import OutageSwitch, ScheduledOutage, change_outage
from snakemake_executor_plugin_azbatch.run.outage import (
    OutageExpired,
    Outages,
    OutageState,
    terminate_job_retrying,
)

pytestmark = pytest.mark.no_report  # no test here reads a run report


# ---- pure parts ---------------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Lines:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []
        self.errors: list[str] = []

    def warning(self, line: str) -> None:
        self.warnings.append(line)

    def info(self, line: str) -> None:
        self.infos.append(line)

    def error(self, line: str) -> None:
        self.errors.append(line)

    def debug(self, line: str) -> None:
        pass


def dropped() -> ServiceResponseError:
    return ServiceResponseError("('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))")


def outages(clock: FakeClock, lines: Lines, given_up: list[str], minutes: float = 1.0) -> Outages:
    wall = lambda: datetime(2026, 1, 2, 3, 4, 5) + (datetime.fromtimestamp(clock.now) - datetime.fromtimestamp(1000))  # noqa: E731
    return Outages("https://acct.westeurope.batch.azure.com", "https://st.blob.core.windows.net", minutes, lines,
                   given_up.append, clock=clock, wall=wall, sleep=clock.sleep)


@pytest.mark.quick
def test_the_outage_lines_say_since_when_why_and_how_long_it_lasted():
    state = OutageState("Batch account https://a.batch.azure.com", tolerance=600)
    assert state.up(5.0) is None  # nothing to say when nothing was down
    line = state.down("connection dropped", started=100.0, wall_now=datetime(2026, 1, 2, 10, 0, 30), now=110.0)
    assert line == ("azbatch: Batch account https://a.batch.azure.com unreachable since 10:00:20 (connection "
                    "dropped); tasks keep running on Batch; still waiting (giving up after 10 min)")
    assert state.down("503 ServerBusy", started=120.0, wall_now=datetime(2026, 1, 2, 10, 0, 50), now=130.0) is None
    assert not state.expired(699.0) and state.expired(700.0)
    assert "unreachable for 10 min (since 10:00:20: connection dropped)" in state.give_up_line(700.0)
    assert "--azbatch-outage-tolerance (10 min)" in state.give_up_line(700.0)
    assert state.up(145.0) == "azbatch: Batch account https://a.batch.azure.com reachable again after 45 s"
    assert state.up(146.0) is None


@pytest.mark.quick
def test_a_call_waits_out_an_outage_saying_so_once_and_again_when_it_is_back():
    clock, lines, given_up = FakeClock(), Lines(), []
    watch = outages(clock, lines, given_up).storage
    answers = [dropped(), dropped(), HttpResponseError(message="busy", response=None), "outputs"]

    def download():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            if isinstance(answer, HttpResponseError):
                answer.status_code = 503
            raise answer
        return answer

    assert watch.call(download) == "outputs"
    assert answers == [] and given_up == []
    assert len(lines.warnings) == 1 and lines.warnings[0].startswith(
        "azbatch: storage account https://st.blob.core.windows.net unreachable since 03:04:05 (connection dropped)")
    assert lines.infos == ["azbatch: storage account https://st.blob.core.windows.net reachable again after 14 s"]  # slept 2, 4, 8 s


@pytest.mark.quick
def test_past_the_tolerance_the_run_is_given_up_once_and_nothing_waits_any_more():
    clock, lines, given_up = FakeClock(), Lines(), []
    run = outages(clock, lines, given_up, minutes=0.5)

    def never():
        raise dropped()

    with pytest.raises(OutageExpired) as ended:
        run.batch.call(never)
    assert clock.now - 1000 == pytest.approx(30, abs=0.01)  # back-off 2, 4, 8, then what is left of the 30 s
    assert len(given_up) == 1 and given_up[0] == str(ended.value)
    assert "Batch account https://acct.westeurope.batch.azure.com unreachable for 30 s" in given_up[0]
    assert "ending the run and terminating its Batch jobs" in given_up[0]
    assert run.ended.is_set()
    # The other endpoint does not wait either, and the run is not given up twice.
    with pytest.raises(OutageExpired):
        run.storage.call(lambda: "never called")
    assert not run.batch.failed(dropped(), clock.now)
    assert not run.storage.failed(dropped(), clock.now)  # no "still waiting" once the run is ending
    assert len(given_up) == 1 and len(lines.warnings) == 1


@pytest.mark.quick
def test_only_unreachable_endpoints_are_waited_for():
    clock, lines, given_up = FakeClock(), Lines(), []
    watch = outages(clock, lines, given_up).batch
    refused = HttpResponseError(message="denied")
    refused.status_code = 403
    with pytest.raises(HttpResponseError):
        watch.call(lambda: (_ for _ in ()).throw(refused))
    assert clock.now == 1000 and lines.warnings == []
    assert not unreachable(refused) and not unreachable(ResourceNotFoundError("gone")) and not unreachable(ValueError())
    assert unreachable(dropped()) and short_reason(dropped()) == "connection dropped"


@pytest.mark.quick
def test_terminating_a_job_is_retried_while_batch_is_unreachable_then_explained():
    clock, lines = FakeClock(), Lines()
    calls = []

    class Batch:
        def __init__(self, failures: int) -> None:
            self.failures = failures

        def terminate_job(self, job_id, reason):
            calls.append(job_id)
            if len(calls) <= self.failures:
                raise dropped()

    kwargs = dict(account_url="https://acct.westeurope.batch.azure.com", account_name="acct", clock=clock,
                  sleep=clock.sleep, budget=60)
    assert terminate_job_retrying(Batch(3), "sm-job", "ended", lines, **kwargs)
    assert len(calls) == 4 and len(lines.warnings) == 1 and lines.errors == []
    calls.clear()
    assert not terminate_job_retrying(Batch(1000), "sm-job", "ended", lines, **kwargs)
    assert clock.now - 1000 >= 60
    assert len(lines.errors) == 1
    assert ("`az batch job stop --job-id sm-job --account-endpoint https://acct.westeurope.batch.azure.com "
            "--account-name acct`") in lines.errors[0]
    assert "could not terminate Batch job sm-job (connection dropped)" in lines.errors[0]


@pytest.mark.quick
def test_the_switch_keeps_windows_spares_the_nodes_and_counts_what_it_dropped():
    clock = FakeClock()
    switch = OutageSwitch((ScheduledOutage.parse("storage:10@5"),), clock=clock)
    assert not switch.drops("storage") and not switch.drops("batch")
    clock.now += 5
    assert switch.drops("storage", "azsdk-python-storage-blob/12 Python/3.11")
    assert not switch.drops("storage", f"{NODE_USER_AGENT} azsdk-python-storage-blob/12")
    switch.set("batch", 3)
    assert switch.drops("batch")
    state = switch.snapshot()
    assert state["batch"] == {"down": True, "startsIn": 0.0, "remaining": 3.0, "dropped": 1, "operations": {"Unknown": 1}}
    assert state["storage"]["dropped"] == 1 and state["storage"]["remaining"] == 10.0
    clock.now += 10
    assert not switch.drops("storage") and not switch.drops("batch")
    assert change_outage(switch, b'{"storage": 2, "after": 1}').status == 200
    assert switch.snapshot()["storage"]["startsIn"] == 1.0
    assert change_outage(switch, b'{"pool": 2}').status == 400
    assert change_outage(switch, b'{"batch": -1}').status == 400
    with pytest.raises(ConfigError, match="KIND:SECONDS"):
        ScheduledOutage.parse("pool:10")


# ---- on the local service -----------------------------------------------------------------------------------------
def set_outage(service, **kinds: float) -> dict:
    request = urllib.request.Request(f"{service.account_url}/_local/outage", data=json.dumps(kinds).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def outage_state(service) -> dict:
    with urllib.request.urlopen(f"{service.account_url}/_local/outage", timeout=10) as response:
        return json.loads(response.read())


def test_during_an_outage_clients_get_no_answer_but_nodes_still_reach_storage(local_service):
    service = local_service
    batch = service.batch_client(retry_total=0)
    blobs = service.blob_service_client(retry_total=0)
    nodes = service.blob_service_client(retry_total=0, user_agent=NODE_USER_AGENT)
    container = blobs.get_container_client("outage-switch")
    container.create_container()
    before = service.metrics()
    try:
        set_outage(service, batch=30, storage=30)
        with pytest.raises(ServiceResponseError) as batch_error:
            batch.get_pool(service.pool_id)
        with pytest.raises(ServiceResponseError):
            container.upload_blob("a.txt", b"a")
        nodes.get_container_client("outage-switch").upload_blob("b.txt", b"b")  # the node agent's transfers pass
        state = outage_state(service)
        assert state["batch"]["down"] and state["batch"]["operations"] == {"Pools_GetPool": 1}
        assert state["storage"]["operations"] == {"PutBlob": 1}
        assert unreachable(batch_error.value)
    finally:
        set_outage(service, batch=0, storage=0)
    assert batch.get_pool(service.pool_id).id == service.pool_id
    container.upload_blob("a.txt", b"a")
    after = service.metrics()
    # Dropped requests were answered by nobody, so nothing counted them: one PutBlob of the node, one after.
    assert after["storage"]["PutBlob"]["count"] - before["storage"].get("PutBlob", {}).get("count", 0) == 2
    assert after["operations"]["Pools_GetPool"]["count"] - before["operations"].get("Pools_GetPool", {}).get("count", 0) == 1
    container.delete_container()


# ---- runs through the plugin --------------------------------------------------------------------------------------
SNAKEFILE = """
    localrules: gate

    rule all:
        input: "gather.txt", "later.txt"

    rule gate:  # runs here, and ends when the test says so: `later` becomes ready while Batch is down
        output: "gate.txt"
        shell: "while [ ! -e go ]; do sleep 0.1; done; echo open > {output}"

    rule later:
        input: "gate.txt"
        output: "later.txt"
        shell: "cat {input} > {output}"

    rule slow:
        output: "out/{i}.txt"
        shell: "sleep 2 && echo value-{wildcards.i} > {output}"

    rule gather:
        input: expand("out/{i}.txt", i=range(2))
        output: "gather.txt"
        shell: "cat {input} > {output}"
"""


class Run:
    """`snakemake --executor azbatch` in the background, its output read line by line as it comes."""

    def __init__(self, service, workdir, label: str, **env: str) -> None:
        env.setdefault("SNAKEMAKE_AZBATCH_STATUS_INTERVAL_MAX", "1")  # outages noticed and recovered from sooner
        self.proc = subprocess.Popen(snakemake_command(), cwd=workdir, env=snakemake_env(service, label, **env),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, text: str, timeout: float = 120) -> str:
        """The first output line containing `text` (fails if the run ends first)."""
        def seen():
            found = [line for line in list(self.lines) if text in line]
            assert found or self.proc.poll() is None, f"the run ended without saying {text!r}:\n{self.output}"
            return found and found[0]
        return wait_for(seen, timeout, lambda: f"{text!r} in the output:\n{self.output}", interval=0.1)

    def finish(self, timeout: float = 120) -> str:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=10)
        return self.output


def _tasks(service, prefix: str) -> list[dict]:
    """The run's tasks whose id starts with `prefix`, from the service's own state (its API may be down)."""
    state = service.service.state
    return [t for job in state.list_jobs() for t in state.list_tasks(job["id"]) if t["id"].startswith(prefix)]


def _running(service, prefix: str) -> bool:
    return any(t["state"] == "running" for t in _tasks(service, prefix))


def test_a_batch_then_a_storage_outage_mid_run_are_survived_and_reported(make_service, tmp_path):
    service = make_service(pools=["local:1:2"])
    label = "outage-survived"
    workdir = write_files(tmp_path / label, {"Snakefile": SNAKEFILE})
    run = Run(service, workdir, label)
    batch, storage = f"Batch account {service.account_url}", f"storage account {service.endpoints.storage.blob_url}"
    try:
        wait_for(lambda: _running(service, "slow-") or run.proc.poll() is not None, 120, "a running task of rule slow")
        set_outage(service, batch=300)
        run.wait_line(f"azbatch: {batch} unreachable since")
        # The control plane was down, not the node: the tasks ran to their end meanwhile.
        wait_for(lambda: [t["state"] for t in _tasks(service, "slow-")] == ["completed"] * 2, 60, "the slow tasks to end")
        # A job that becomes ready now is submitted once Batch is back, not failed.
        (workdir / "go").touch()
        run.wait_line("rule later:")
        wait_for(lambda: outage_state(service)["batch"]["operations"].get("Tasks_CreateTaskCollection"), 60,
                 "the submission of rule later to meet the outage")
        set_outage(service, batch=0)
        wait_for(lambda: _running(service, "gather-") or run.proc.poll() is not None, 120, "the gather task to run")
        set_outage(service, storage=300)  # the gather task's outputs come back while storage is unreachable
        run.wait_line(f"azbatch: {storage} unreachable since")
        assert outage_state(service)["storage"]["operations"].get("GetBlob")  # the download of its outputs, by name
        set_outage(service, storage=0)
        output = run.finish()
    finally:
        set_outage(service, batch=0, storage=0)
    assert run.proc.returncode == 0, output
    assert (workdir / "gather.txt").read_text() == "value-0\nvalue-1\n"
    assert (workdir / "later.txt").read_text() == "open\n"
    lines = output.splitlines()
    for what in (batch, storage):
        down = [line for line in lines if f"azbatch: {what} unreachable since" in line]
        assert len(down) == 1 and "tasks keep running on Batch; still waiting (giving up after 10 min)" in down[0], output
        assert sum(f"azbatch: {what} reachable again after" in line for line in lines) == 1, output
    assert "Traceback" not in output and "Error" not in output
    assert "progress counts unavailable" not in output  # the outage lines say it, once each
    state = outage_state(service)
    assert state["batch"]["dropped"] > 0 and state["storage"]["dropped"] > 0


SLEEP_MARKER = "307.25"  # a sleep no other test uses, to find the task's process


def test_an_outage_longer_than_the_tolerance_ends_the_run_in_one_line_and_terminates_its_job(make_service, tmp_path):
    service = make_service(pools=["local:1:2"])
    label = "outage-too-long"
    workdir = write_files(tmp_path / label, {"Snakefile": f'rule a:\n    output: "a.txt"\n    shell: "sleep {SLEEP_MARKER} && touch {{output}}"\n'})
    run = Run(service, workdir, label, SNAKEMAKE_AZBATCH_OUTAGE_TOLERANCE="0.05", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    try:
        wait_for(lambda: _running(service, "a-") or run.proc.poll() is not None, 120, "a running task")
        set_outage(service, batch=300)
        run.wait_line("--azbatch-outage-tolerance (3 s); ending the run")
        run.wait_line("trying again for up to 60 s")  # terminating the job, while Batch is still down
        set_outage(service, batch=0)
        output = run.finish()
    finally:
        set_outage(service, batch=0)
    assert run.proc.returncode != 0, output
    errors = [line for line in output.splitlines() if "unreachable for" in line]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"Error: azbatch: Batch account {service.account_url} unreachable for "), output
    assert "Traceback" not in output and "could not terminate" not in output
    # Once Batch answered again the run's job was terminated, and with it its task: nothing is left running.
    client = service.batch_client()
    jobs = [j for j in client.list_jobs() if j.id.startswith(f"sm-{label}-")]
    assert len(jobs) == 1 and enum_text(jobs[0].state) == "completed", output
    assert [enum_text(t.state) for t in client.list_tasks(jobs[0].id)] == ["completed"], output
    wait_for(lambda: not processes_with(SLEEP_MARKER), 30, "the task's process to end")
    assert not (workdir / "a.txt").exists()
    client.begin_delete_job(jobs[0].id, polling_interval=1).result()
