"""The run report's pure parts, in process: Batch task models -> attempt records -> tasks.tsv, timeline figure and
HTML page; the progress line and when it is printed; the price settings."""

from __future__ import annotations

import csv
import re
import struct
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from azure.batch.models import BatchPoolNodeCounts, BatchTask, BatchTaskCountsResult

from snakemake_executor_plugin_azbatch.run.progress import NodeCounts, ProgressGate, TaskCounts, progress_line
from snakemake_executor_plugin_azbatch.report import RunInfo, RunRecorder, TaskAttempt, write_report
from snakemake_executor_plugin_azbatch.report import summary
from snakemake_executor_plugin_azbatch.report.records import NOT_STARTED, UNFINISHED
from snakemake_executor_plugin_azbatch.report import timeline
from snakemake_executor_plugin_azbatch.report.timeline import (
    LANE_HEIGHT_IN, MAX_HEIGHT_IN, MAX_STEPS, lane_ticks, occupancy, pack_rows, thin_steps,
)
from snakemake_executor_plugin_azbatch.report.tsv import COLUMNS
from snakemake_executor_plugin_azbatch.config import Prices, resolve
from snakemake_executor_plugin_azbatch.settings.executor_settings import ExecutorSettings, SettingsError

pytestmark = pytest.mark.quick

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def batch_task(task_id: str, state: str = "completed", created=0.0, start=None, end=None, node=None, **info) -> BatchTask:
    body = {"id": task_id, "state": state, "creationTime": iso(created), "requiredSlots": info.pop("slots", 1)}
    execution = {"retryCount": info.pop("retries", 0), "requeueCount": info.pop("requeues", 0)}
    if start is not None:
        execution["startTime"] = iso(start)
    if end is not None:
        execution["endTime"] = iso(end)
    execution.update(info)
    body["executionInfo"] = execution
    if node:
        body["nodeInfo"] = {"nodeId": node, "poolId": "pool1"}
    return BatchTask(body)


def attempt(task_id="t1", rule="work", node="n0", start=10.0, run=20.0, submitted=0.0, **kw) -> TaskAttempt:
    values = dict(
        task_id=task_id, batch_job="job", rule=rule, jobid=task_id, attempt=1, pool="pool1", slots=1,
        submitted=T0 + timedelta(seconds=submitted), node=node, node_type="dedicated",
        started=None if start is None else T0 + timedelta(seconds=start),
        ended=None if start is None else T0 + timedelta(seconds=start + run),
        exit_code=0 if start is not None else None, result="success" if start is not None else NOT_STARTED,
    )
    values.update(kw)
    return TaskAttempt(**values)


# ---- records --------------------------------------------------------------------------------------------------


def test_recorder_takes_times_node_and_result_from_the_listed_task():
    recorder = RunRecorder()
    recorder.submitted("t1", "job", "pool1", "align", 7, 2, 1)
    recorder.submitted("t2", "job", "pool1", "align", 8, 1, 1)
    recorder.observe([
        batch_task("t1", created=1.5, start=4, end=9.25, node="n1", exitCode=3, result="failure",
                   failureInfo={"category": "usererror", "code": "FailureExitCode"}, slots=4, requeues=1),
        batch_task("someone-elses", start=1, end=2, node="n1", exitCode=0, result="success"),
    ])
    by_id = {a.task_id: a for a in recorder.attempts()}
    assert set(by_id) == {"t1", "t2"}
    a = by_id["t1"]
    assert (a.rule, a.jobid, a.attempt, a.node, a.slots, a.requeues) == ("align", "7", 2, "n1", 4, 1)
    assert a.submitted == T0 + timedelta(seconds=1.5)  # Batch's creation time replaces the local clock's
    assert (a.queue_wait, a.run_time) == (2.5, 5.25)
    assert a.failed and not a.succeeded and a.exit_code == 3 and a.failure == "FailureExitCode"
    assert a.core_hours == pytest.approx(4 * 5.25 / 3600)
    assert by_id["t2"].result == NOT_STARTED and by_id["t2"].queue_wait is None
    assert recorder.unfinished_jobs() == {"job"}


def test_a_requeued_or_still_running_task_is_not_taken_for_finished():
    recorder = RunRecorder()
    recorder.submitted("t1", "job", "pool1", "r", 1, 1, 1)
    recorder.observe([batch_task("t1", state="running", start=3, node="n0")])
    (a,) = recorder.attempts()
    assert a.result == UNFINISHED and a.node == "n0" and a.run_time is None
    recorder.observe([batch_task("t1", state="active", requeues=1)])
    (a,) = recorder.attempts()
    assert a.result == NOT_STARTED and a.started is None and a.node is None and a.requeues == 1


def test_node_types_are_set_per_pool():
    recorder = RunRecorder()
    for tid, node in (("a", "n0"), ("b", "n1"), ("c", "gone")):
        recorder.submitted(tid, "job", "pool1", "r", tid, 1, 1)
        recorder.observe([batch_task(tid, start=1, end=2, node=node, result="success", exitCode=0)])
    recorder.set_node_types("POOL1", {"n0": True, "n1": False})
    assert [a.node_type for a in recorder.attempts()] == ["dedicated", "low-priority", "unknown"]


# ---- summary and cost -----------------------------------------------------------------------------------------


def test_per_rule_numbers_and_cost_for_dedicated_and_low_priority_separately():
    attempts = [
        attempt("a", "align", start=10, run=3600, slots=2),
        attempt("b", "align", start=30, run=1800, slots=2, node_type="low-priority"),
        attempt("c", "qc", start=5, run=60, exit_code=1, result="failure"),
        attempt("d", "qc", start=None, node=None),
    ]
    align, qc = summary.by_rule(attempts)
    assert (align.name, align.count, align.succeeded, align.failed) == ("align", 2, 2, 0)
    assert (align.mean_queue_wait, align.max_queue_wait, align.max_run_time) == (20, 30, 3600)
    assert align.core_hours == pytest.approx(3.0)
    assert (qc.count, qc.failed, qc.not_run, qc.mean_queue_wait) == (2, 1, 1, 5)
    hours = summary.usage_hours(attempts, {"POOL1": 4})
    assert hours["core-hour"] == pytest.approx({"dedicated": 2 + 60 / 3600, "low-priority": 1.0})
    assert hours["node-hour"]["low-priority"] == pytest.approx(0.25)  # 2 of 4 slots for half an hour
    lines = summary.cost_lines(attempts, {"pool1": 4}, Prices(0.5, 0.1), None)
    assert [(c.unit, c.node_type) for c in lines] == [("core-hour", "dedicated"), ("core-hour", "low-priority")]
    assert lines[1].cost == pytest.approx(0.1)
    assert summary.cost_lines(attempts, {}, None, None) == []


def test_packing_and_occupancy():
    assert pack_rows([(0, 10), (5, 15), (10, 20), (12, 13)]) == [0, 1, 0, 2]
    attempts = [attempt("a", start=2, run=4), attempt("b", start=6, run=4, submitted=1), attempt("c", start=None)]
    times, queued, running = occupancy(attempts, T0, T0 + timedelta(seconds=12))
    at = dict(zip(times, zip(queued, running)))
    assert at[0.0] == (2, 0) and at[1.0] == (3, 0) and at[2.0] == (2, 1) and at[6.0] == (1, 1) and at[10.0] == (1, 0)


def test_occupancy_is_thinned_to_the_figure_keeping_its_peaks():
    times = [i * 0.5 for i in range(40_000)]
    queued = [(i * 7) % 13 for i in range(40_000)]
    running = [0] * 40_000
    running[23_456] = 500  # one short spike
    t, q, r = thin_steps(times, queued, running)
    assert len(t) <= MAX_STEPS + 1 and t == sorted(t) and t[0] == 0.0
    assert max(a + b for a, b in zip(q, r)) == queued[23_456] + 500  # the spike, with its queue, survives
    assert thin_steps(times[:50], queued[:50], running[:50]) == (times[:50], queued[:50], running[:50])


def test_the_figure_of_thousands_of_tasks_draws_at_most_max_steps_for_the_top_panel_and_one_collection_of_bars():
    """5,000 tasks make 10,000 occupancy steps; drawn as such they were most of a large run's SVG."""
    from matplotlib.figure import Figure

    attempts = [attempt(f"t{i}", node=f"n{i % 50}", start=i * 0.25, run=3.0 + i % 7, submitted=i * 0.2) for i in range(5000)]
    attempts[7] = attempt("t7", node="n7", start=1.75, run=2.0, result="failure", exit_code=1)
    origin, last = timeline.span(attempts)
    frame = timeline._Frame(attempts, origin, last, *timeline._time_unit((last - origin).total_seconds()))
    lanes, y_of = timeline._lanes(attempts, frame.at, last)
    top, bottom = Figure().subplots(2, 1)
    timeline._draw_occupancy(top, frame)
    assert 0 < max(len(c.get_paths()[0].vertices) for c in top.collections) <= 4 * MAX_STEPS + 8
    timeline._draw_nodes(bottom, frame, lanes, y_of)
    from matplotlib.collections import PolyCollection

    bars = [len(c.get_paths()) for c in bottom.collections if isinstance(c, PolyCollection)]
    assert bars == [4999, 1]  # one collection of the succeeded bars, one of the failed


def test_every_lane_is_labelled_while_the_figure_has_room_and_as_many_as_fit_beyond():
    few = [(f"n{i}", 2 * i, 2) for i in range(10)]  # 20 rows: 5.6 in, every node named
    assert lane_ticks(few) == [(2 * i + 0.5, f"n{i}") for i in range(10)]
    many = [(f"n{i}", i, 1) for i in range(1000)]  # a pool of 1,000 nodes: the figure is capped at MAX_HEIGHT_IN
    ticks = lane_ticks(many)
    fit = MAX_HEIGHT_IN / LANE_HEIGHT_IN
    assert fit * 0.9 <= len(ticks) <= fit + 1 and ticks[0] == (0.0, "n0")
    gaps = [b[0] - a[0] for a, b in zip(ticks, ticks[1:])]
    assert min(gaps) >= 1000 * LANE_HEIGHT_IN / MAX_HEIGHT_IN  # labels never closer than one label height at the figure's scale


# ---- files ----------------------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids[attrs["id"]] = attrs


def test_report_files_from_records(tmp_path: Path):
    logs = tmp_path / "wf" / ".snakemake" / "azbatch" / "logs"
    (logs / "c").mkdir(parents=True)
    (logs / "c" / "stderr.txt").write_text("line\n<boom> & fail\n")
    attempts = [
        attempt("a", "align", node="n0", start=1, run=20),
        attempt("b", "<odd rule>", node="n1", start=2, run=10, slots=2),
        attempt("c", "align", node="n0", start=21, run=5, exit_code=2, result="failure", failure="FailureExitCode"),
        attempt("d", "align", start=None, node=None),
    ]
    run = RunInfo("20250601T120000-abc123", str(tmp_path / "wf"), "failed", {"pool1": "sm-job"}, {"pool1": 2},
                  price_core_hour=Prices(0.4, 0.1), log_root=logs, generated=T0 + timedelta(minutes=1))
    out = tmp_path / "wf" / ".snakemake" / "azbatch" / "reports" / run.run_token
    html_path = write_report(attempts, run, out)
    assert html_path == out / "report.html"

    rows = list(csv.DictReader((out / "tasks.tsv").open(), delimiter="\t"))
    assert list(rows[0]) == COLUMNS and [r["task_id"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[2]["result"] == "failure" and rows[2]["exit_code"] == "2" and rows[2]["queue_wait_s"] == "21.000"
    assert rows[3]["started"] == "" and rows[3]["result"] == NOT_STARTED

    png = (out / "timeline.png").read_bytes()
    width, height = png_size(png)
    assert 800 <= width <= 2000 and 250 <= height <= 4000 and len(png) > 10_000
    svg = ET.parse(out / "timeline.svg").getroot()
    assert svg.tag.endswith("svg") and "&lt;odd rule&gt;" in (out / "timeline.svg").read_text()

    text = html_path.read_text()
    page = Elements()
    page.feed(text)
    assert {"totals", "timeline", "timeline-image", "per-rule", "per-node", "cost", "failed-tasks", "outcome"} <= set(page.ids)
    assert page.ids["timeline-image"]["src"].startswith("data:image/png;base64,")
    # Self-contained: no script, stylesheet link or remote resource.
    assert not [t for t, a in page.tags if t in ("script", "link", "iframe")]
    assert not [a for _, a in page.tags if str(a.get("src", "")).startswith(("http:", "https:", "//"))]
    assert "&lt;odd rule&gt;" in text and "<odd rule>" not in text and "&lt;boom&gt; &amp; fail" in text
    hrefs = {a["href"] for t, a in page.tags if t == "a"}
    assert "../../logs/c/stderr.txt" in hrefs and (out / "../../logs/c/stderr.txt").resolve().is_file()
    assert {"tasks.tsv", "timeline.svg"} <= hrefs
    cost = text.split('id="cost"', 1)[1].split("</div>", 1)[0]
    assert "core-hour" in cost and "node-hour" not in cost.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    # Both prices: two alternative totals, never their sum.
    run.price_node_hour = Prices(1.0, 0.5)
    text = write_report(attempts, run, out).read_text()
    totals = re.findall(r"total, priced per ([a-z-]+)</td><td class=\"n\">([\d.]+)<", text)
    core_hours = (20 + 2 * 10 + 5) / 3600
    assert totals == [("core-hour", f"{core_hours * 0.4:.4f}"), ("node-hour", f"{core_hours / 2 * 1.0:.4f}")]


def test_report_without_any_started_task(tmp_path: Path):
    run = RunInfo("r1", str(tmp_path), "cancelled", {"p": "j"}, {"p": 1})
    html = write_report([attempt("x", start=None, node=None)], run, tmp_path / "r").read_text()
    assert "No task started on a node." in html and "cancelled" in html
    assert png_size((tmp_path / "r" / "timeline.png").read_bytes())[0] > 0


# ---- progress -------------------------------------------------------------------------------------------------


def test_progress_line_from_batch_counts():
    tasks = TaskCounts.from_sdk(BatchTaskCountsResult({
        "taskCounts": {"active": 4, "running": 2, "completed": 3, "succeeded": 2, "failed": 1},
        "taskSlotCounts": {"active": 4, "running": 2, "completed": 3, "succeeded": 2, "failed": 1},
    }))
    counts = BatchPoolNodeCounts({
        "poolId": "big",
        "dedicated": {"idle": 1, "running": 2, "starting": 1, "waitingForStartTask": 1, "startTaskFailed": 1,
                      "unusable": 1, "total": 7},
        "lowPriority": {"running": 1, "preempted": 2, "total": 3},
    })
    nodes = {"big": (NodeCounts.from_sdk(counts.dedicated), NodeCounts.from_sdk(counts.low_priority))}
    line = progress_line(["big", "small"], {"big": tasks}, nodes)
    assert line == (
        "azbatch: progress: pool big: tasks 4 active, 2 running, 3 completed (2 succeeded, 1 failed); nodes "
        "7 dedicated (1 idle, 2 running, 2 starting, 2 unusable), 3 low-priority (0 idle, 1 running, 0 starting, "
        "0 unusable, 2 preempted) | pool small: tasks ?; nodes ?"
    )
    # The node counts were listed and the pool is not among them: said, not just '?'.
    assert progress_line(["small"], {}, {}, listed=True).endswith("nodes ? (Batch lists no such pool)")


def test_progress_prints_on_change_and_every_30_s_while_busy():
    gate = ProgressGate(heartbeat=30)
    assert gate.should_print("a", True, 0)
    assert not gate.should_print("a", True, 29)
    assert gate.should_print("a", True, 30)  # heartbeat while tasks wait or run
    assert gate.should_print("b", False, 31)  # a change
    assert not gate.should_print("b", False, 100)  # idle: no repetition


def test_progress_leaves_an_unreachable_batch_to_the_outage_line_and_warns_once_of_other_failures():
    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    from snakemake_executor_plugin_azbatch.run.progress import WARN_AFTER_FAILURES, ProgressMonitor

    class Failing:  # the two calls a progress poll makes, both failing with `error`
        def __init__(self, error):
            self.error = error

        def get_job_task_counts(self, job):
            raise self.error

        def list_pool_node_counts(self, **kwargs):
            raise self.error

    def warnings_after(error, polls):
        warned: list[str] = []
        monitor = ProgressMonitor(Failing(error), lambda: {"pool1": "job1"}, 1.0, emit=lambda line: None,
                                  warn=warned.append)
        for _ in range(polls):
            monitor.tick()
        return warned

    assert warnings_after(ServiceRequestError("connection dropped"), 3 * WARN_AFTER_FAILURES) == []
    forbidden = HttpResponseError("This request is not authorized to perform this operation.")
    forbidden.status_code = 403
    warned = warnings_after(forbidden, 3 * WARN_AFTER_FAILURES)
    assert len(warned) == 1 and warned[0].startswith("azbatch: progress counts unavailable (")


def test_progress_counts_every_batch_job_of_a_pool_still_to_end():
    """Earlier generations and followed dead runs' jobs count with their pool (matched without case), also on a
    pool where the run has no job of its own (it only follows adopted tasks there)."""
    from snakemake_executor_plugin_azbatch.run.progress import ProgressMonitor, TaskCounts

    monitor = ProgressMonitor(None, lambda: {"Pool1": "g2"}, 1.0, emit=print, warn=print,
                              older=lambda: {"pool1": ["g1", "g2", "dead"], "pool2": ["dead2"]})
    assert monitor.pool_jobs() == {"Pool1": ["g2", "g1", "dead"], "pool2": ["dead2"]}
    assert TaskCounts(1, 2, 3, 2, 1) + TaskCounts(1, 0, 1, 1, 0) == TaskCounts(2, 2, 4, 3, 1)


# ---- settings -------------------------------------------------------------------------------------------------

BASE_ENV = {
    "SNAKEMAKE_AZBATCH_ACCOUNT_URL": "https://mybatch.westeurope.batch.azure.com",
    "SNAKEMAKE_AZBATCH_POOL_ID": "pool1",
    "SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=a2V5",
}


def test_report_settings_resolve():
    config = resolve(ExecutorSettings(), {**BASE_ENV, "SNAKEMAKE_AZBATCH_PRICE_NODE_HOUR": "0.19, 0.04",
                                          "SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL": "0"})
    assert config.report.price_node_hour == Prices(0.19, 0.04) and config.report.price_core_hour is None
    assert config.report.progress_interval == 0 and config.report.directory == ".snakemake/azbatch/reports"
    config = resolve(ExecutorSettings(price_core_hour="0.05", report_dir="/tmp/r"), BASE_ENV)
    assert config.report.price_core_hour == Prices(0.05, 0.05) and config.report.directory == "/tmp/r"


@pytest.mark.parametrize("value", ["cheap", "-1", "1,2,3", "nan", "inf"])
def test_a_bad_price_is_one_line_naming_the_setting(value):
    with pytest.raises(SettingsError) as info:
        resolve(ExecutorSettings(price_core_hour=value), BASE_ENV)
    message = str(info.value)
    assert "--azbatch-price-core-hour" in message and "DEDICATED[,LOW_PRIORITY]" in message and "\n" not in message
