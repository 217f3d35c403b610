"""The usage report's parts: the node's probe (real bash and processes, no service; so not `quick`), and in
process usage blob names, node kinds as the nodes told them, billed node-hours from node counts, per-rule
efficiency and its suggestions, summary.json, the timeline's colours, pool panel and SVG tooltips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.batch.models import BatchTask

from snakemake_executor_plugin_azbatch.config import Prices
from snakemake_executor_plugin_azbatch.run.progress import NodeCounts
from snakemake_executor_plugin_azbatch.report import RunInfo, RunRecorder, TaskAttempt, write_report
from snakemake_executor_plugin_azbatch.report.efficiency import rule_efficiency
from snakemake_executor_plugin_azbatch.report.node_hours import NodeHours
from snakemake_executor_plugin_azbatch.report.records import update_from_task
from snakemake_executor_plugin_azbatch.report.timeline import FAILED_COLOUR, rule_colours
from snakemake_executor_plugin_azbatch.staging import node_helper, usage_probe

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
HELPER = Path(node_helper.__file__)


def attempt(task_id="t1", rule="work", start=10.0, run=20.0, **kw) -> TaskAttempt:
    values = dict(task_id=task_id, batch_job="job", rule=rule, jobid=task_id, attempt=1, pool="pool1", slots=1,
                  submitted=T0, node="n0", node_type="dedicated", started=T0 + timedelta(seconds=start),
                  ended=T0 + timedelta(seconds=start + run), exit_code=0, result="success")
    values.update(kw)
    return TaskAttempt(**values)


# ---- on the node ------------------------------------------------------------------------------------------------

def run_probed(tmp_path: Path, command: str, dedicated: str = "false") -> tuple[int, list[str]]:
    """A task's shell as the job-wide prefix makes it: the probe's functions around `command`."""
    script = (usage_probe.shell_functions(f"{sys.executable} {HELPER}") + " && snakemake_task() { "
              + usage_probe.measured(command) + "; } && snakemake_task")
    env = {**os.environ, "AZ_BATCH_TASK_WORKING_DIR": str(tmp_path), "AZ_BATCH_NODE_IS_DEDICATED": dedicated}
    done = subprocess.run(["/bin/bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stderr == "", done.stderr  # the probe never writes to the task's logs
    return done.returncode, sorted(os.listdir(tmp_path / usage_probe.USAGE_DIR))


def test_the_node_measures_the_rules_processes_and_keeps_the_exit_status(tmp_path: Path) -> None:
    # Like the node's Snakemake: a process whose child (the rule) holds 150 MB and uses about a second of CPU.
    (tmp_path / "rule.py").write_text("import time\nx = 'x' * (150 * 2**20)\nt = time.process_time()\n"
                                      "while time.process_time() - t < 1:\n    sum(range(10000))\n")
    (tmp_path / "snakemake.py").write_text("import subprocess, sys\n"
                                           "sys.exit(subprocess.run([sys.executable, 'rule.py']).returncode + 4)\n")
    code, names = run_probed(tmp_path, f"{sys.executable} snakemake.py")
    assert code == 4  # the command's status, not the probe's
    (name,) = [n for n in names if n.startswith("v1-")]
    task, usage = usage_probe.parse_blob(f"usage/t1/{name}")
    assert task == "t1" and usage.complete and usage.node_kind == "low-priority"
    assert 1.0 <= usage.user_seconds + usage.kernel_seconds <= 3.0, usage
    assert 150 <= usage.rule_peak_mib <= 200 and usage.tree_peak_mib > usage.rule_peak_mib, usage
    assert usage.wall_seconds >= 1.0


def test_the_watcher_ends_whenever_its_sigterm_lands(tmp_path: Path) -> None:
    """SIGTERM at any moment ends the watcher (a handler that took a lock once left a stock-node task hanging
    forever when the signal landed while that lock was held): bursts of SIGTERM, each watcher stopped at another
    point of its 0.2 s sampling cycle, every one ends and names its measurement."""
    env = {**os.environ, "AZ_BATCH_NODE_IS_DEDICATED": "true"}
    for i in range(8):
        directory = tmp_path / f"w{i}"
        directory.mkdir()
        watcher = subprocess.Popen([sys.executable, str(HELPER), "watch", str(directory)], env=env)
        try:
            deadline = time.monotonic() + 10
            while not any(n.startswith("v1-") for n in os.listdir(directory)) and time.monotonic() < deadline:
                time.sleep(0.005)  # its handler is in place once it names the running file
            time.sleep(0.025 * i)
            for _ in range(300):
                watcher.send_signal(signal.SIGTERM)
            assert watcher.wait(timeout=5) == 0
        finally:
            watcher.kill()
        assert [n for n in os.listdir(directory) if n.startswith("v1-d-u")], os.listdir(directory)


def test_the_cpu_before_the_command_is_not_counted(tmp_path: Path) -> None:
    (tmp_path / "burn.py").write_text("import time\nt = time.process_time()\n"
                                      "while time.process_time() - t < 1:\n    pass\n")
    code, names = run_probed(tmp_path, f"{sys.executable} burn.py", dedicated="true")
    (name,) = [n for n in names if n.startswith("v1-")]
    usage = usage_probe.parse_blob(f"usage/t2/{name}")[1]
    assert code == 0 and usage.node_kind == "dedicated"
    assert usage.user_seconds + usage.kernel_seconds >= 0.9  # inside the measured command here
    # The same burn before the probe starts (the link and input-check steps' place): not the command's.
    other = tmp_path / "other"
    other.mkdir()
    script = (usage_probe.shell_functions(f"{sys.executable} {HELPER}") + " && snakemake_task() { "
              + usage_probe.measured("true") + f"; }} && {sys.executable} {tmp_path / 'burn.py'} && snakemake_task")
    subprocess.run(["/bin/bash", "-c", script], cwd=other, env={**os.environ, "AZ_BATCH_TASK_WORKING_DIR": str(other)},
                   check=True, timeout=120)
    (name,) = [n for n in os.listdir(other / usage_probe.USAGE_DIR) if n.startswith("v1-")]
    usage = usage_probe.parse_blob(f"usage/t3/{name}")[1]
    assert usage.node_kind == ""  # no AZ_BATCH_NODE_IS_DEDICATED: unknown, not guessed
    assert usage.user_seconds + usage.kernel_seconds < 0.5 and usage.rule_peak_mib == 0


@pytest.mark.quick
def test_usage_blob_names() -> None:
    assert usage_probe.parse_blob("usage/t9/v1-s-running")[1] == usage_probe.NodeUsage("low-priority")
    task, usage = usage_probe.parse_blob("usage/t9/v1-d-u1500-k250-r204800-t307200-w6000")
    assert (task, usage.user_seconds, usage.kernel_seconds, usage.rule_peak_mib, usage.tree_peak_mib,
            usage.wall_seconds) == ("t9", 1.5, 0.25, 200.0, 300.0, 6.0)
    assert usage_probe.parse_blob("usage/t9/v2-d-whatever") is None
    assert usage_probe.parse_blob("t9/files/usage/v1-d-running") is None
    spec = usage_probe.output_spec("t9", "https://acct/c?sig", None)
    assert spec["destination"]["container"]["path"] == "usage/t9"
    assert spec["uploadOptions"]["uploadCondition"] == "taskcompletion"


# ---- records ------------------------------------------------------------------------------------------------------

@pytest.mark.quick
def test_batch_statistics_win_over_the_node_and_the_nodes_kind_over_the_end_listing() -> None:
    recorder = RunRecorder()
    recorder.submitted("a", "job", "pool1", "work", 1, 1, 2)
    recorder.submitted("b", "job", "pool1", "work", 2, 1, 1)
    recorder.observe([BatchTask({
        "id": "a", "state": "completed", "executionInfo": {"retryCount": 0, "requeueCount": 0},
        "nodeInfo": {"nodeId": "n1", "poolId": "pool1"},
        "stats": {"url": "u", "startTime": "2025-06-01T12:00:00Z", "lastUpdateTime": "2025-06-01T12:00:09Z",
                  "userCPUTime": "PT3.5S", "kernelCPUTime": "PT0.5S", "wallClockTime": "PT9S", "readIOps": "0",
                  "writeIOps": "0", "readIOGiB": 0, "writeIOGiB": 0, "waitTime": "PT1S"}})])
    recorder.measured([("a", usage_probe.parse_blob("usage/a/v1-s-u1000-k0-r1024-t2048-w5000")[1]),
                       ("b", usage_probe.NodeUsage("low-priority"))])
    recorder.set_node_types("pool1", {})  # the nodes are gone at the end: what they told stays
    a, b = recorder.attempts()
    assert (a.user_cpu, a.kernel_cpu, a.cpu_from, a.peak_rss_mib, a.node_type) == (3.5, 0.5, "batch", 1.0,
                                                                                    "low-priority")
    assert b.node_type == "low-priority" and b.user_cpu is None and b.peak_rss_mib is None


# ---- billed node-hours ---------------------------------------------------------------------------------------

@pytest.mark.quick
def test_node_hours_take_the_larger_count_between_samples_from_the_pools_creation() -> None:
    now = [T0]
    hours = NodeHours(clock=lambda: now[0])
    hours.pool_created("p")
    for minutes, spot_total, running, preempted in ((6, 2, 1, 0), (12, 4, 4, 1), (18, 0, 0, 0)):
        now[0] = T0 + timedelta(minutes=minutes)
        hours.observe({"p": (NodeCounts(), NodeCounts(total=spot_total, running=running, preempted=preempted))})
    (pool,) = hours.hours(T0 + timedelta(minutes=30))
    # 0-6 min: 2 (the first sample back to creation); 6-12: max(2, 3); 12-18: max(3, 0); 18-30: 0.
    assert pool.created and pool.start == T0 and pool.billed["low-priority"] == pytest.approx((12 + 18 + 18) / 60)
    assert pool.busy["low-priority"] == pytest.approx((6 + 24 + 24) / 60) and pool.billed["dedicated"] == 0
    assert pool.billed_total >= pool.busy_total - 0.2  # busy counts the running, billed the allocated
    # A pool the run did not create: from the run's first submission, the first count taken back to it.
    hours = NodeHours(clock=lambda: now[0])
    now[0] = T0
    hours.run_started()
    now[0] = T0 + timedelta(minutes=3)
    hours.observe({"q": (NodeCounts(total=1, running=1), NodeCounts())})
    (pool,) = hours.hours(T0 + timedelta(minutes=6))
    assert not pool.created and pool.start == T0 and pool.billed["dedicated"] == pytest.approx(0.1)


# ---- efficiency and summary.json -------------------------------------------------------------------------------

@pytest.mark.quick
def test_efficiency_and_plain_suggestions() -> None:
    rules = {r.rule: r for r in rule_efficiency([
        attempt("a", "lazy", threads=4, user_cpu=18.0, kernel_cpu=2.0, run=20.0, mem_mb=8000, peak_rss_mib=500.0),
        attempt("b", "tight", threads=1, user_cpu=19.0, kernel_cpu=0.5, run=20.0, mem_mb=1000, peak_rss_mib=950.0,
                runtime_limit=22.0),
        attempt("c", "lazy", threads=4, started=None, ended=None, result="not started"),
    ])}
    lazy, tight = rules["lazy"], rules["tight"]
    assert lazy.tasks == 1 and lazy.cpu_efficiency == pytest.approx(0.25) and tight.cpu_efficiency == 0.975
    assert "threads=1" in lazy.suggestions[0] and "mem_mb=" in lazy.suggestions[1]
    assert [s.split(" ")[0] for s in tight.suggestions] == ["peaked", "ran"]  # memory and runtime near the limit
    assert "raise mem_mb" in tight.suggestions[0] and "raise runtime" in tight.suggestions[1]


@pytest.mark.quick
def test_summary_json_timeline_colours_pool_panel_and_tooltips(tmp_path: Path) -> None:
    hours = NodeHours(clock=lambda: T0)
    hours.observe({"pool1": (NodeCounts(total=2, running=1), NodeCounts())})
    attempts = [attempt(f"t{i}", f"rule{i}", node=f"n{i % 2}", user_cpu=5.0, kernel_cpu=0.0) for i in range(12)]
    attempts.append(attempt("bad", "rule3", exit_code=1, result="failure", failure="FailureExitCode", requeues=1))
    end = T0 + timedelta(hours=1)
    run = RunInfo("r1", str(tmp_path), "failed", {"pool1": "j"}, {"pool1": 2}, price_node_hour=Prices(0.5, 0.1),
                  price_core_hour=Prices(0.1, 0.02), generated=end, pool_hours=hours.hours(end),
                  cores_per_node={"pool1": 4}, pool_samples={"pool1": hours.samples("pool1")})
    write_report(attempts, run, tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    (line,) = summary["billed"]
    assert (line["pool"], line["kind"], line["node_hours"], line["busy_node_hours"], line["core_hours"]) == (
        "pool1", "dedicated", 2.0, 1.0, 8.0)
    assert line["cost"] == pytest.approx(2 * 0.5 + 8 * 0.1) == summary["cost_estimate"]
    assert {r["rule"] for r in summary["rules"]} == {f"rule{i}" for i in range(12)}
    svg_text = (tmp_path / "r" / "timeline.svg").read_text()
    svg = ET.fromstring(svg_text)
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert "bad on n0: failure, exit code 1, FailureExitCode, requeued 1×" in titles  # the task id names the rule
    assert sum(t.startswith("t") for t in titles) == 12
    assert "Pools: nodes allocated" in svg_text and "pool1: nodes allocated" in svg_text
    failed = tuple(int(FAILED_COLOUR[i:i + 2], 16) / 255 for i in (1, 3, 5))
    for colour in rule_colours([f"rule{i}" for i in range(12)]).values():
        assert sum(abs(a - b) for a, b in zip(colour[:3], failed)) > 0.35, colour  # never the failure's red
