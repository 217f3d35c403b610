"""Live progress and the run report, end to end: `snakemake --executor azbatch` on the local service with two
one-slot nodes, so tasks queue. Checks the progress lines (counts that move, one count request each per
interval), tasks.tsv against what Batch itself reports, the timeline images, the HTML page (also rendered in
headless Chromium), and that failed and cancelled runs write their report too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.services import start_service
from support.executor_runs import delta, output_of, run_snakemake, snakemake_command, snakemake_env, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from support.workflow_copies import read_tsv

PROGRESS_RE = re.compile(
    r"azbatch: progress: pool (\S+): tasks (\d+) active, (\d+) running, (\d+) completed \((\d+) succeeded, "
    r"(\d+) failed\); nodes (\d+) dedicated"
)
REPORT_RE = re.compile(r"azbatch: run report: (\S+report\.html)")
FAST = {"SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL": "0.5"}
CHROMIUM = "/usr/bin/chromium"
WORKFLOW = """
    rule all:
        input: "gathered.txt"

    rule work:
        output: "out/{i}.txt"
        shell: "sleep 2 && echo {wildcards.i} > {output}"

    rule gather:
        input: expand("out/{i}.txt", i=range(6))
        output: "gathered.txt"
        shell: "cat {input} > {output}"
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """Two nodes with one slot each, whatever the machine: six tasks at once must queue."""
    handle = start_service(tmp_path_factory.mktemp("report-service"), {"pools": ["local:2:1"]})
    try:
        yield handle
    finally:
        handle.stop()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def same_ms(written: datetime, batch: datetime) -> bool:
    """tasks.tsv keeps milliseconds."""
    return timedelta(0) <= batch - written < timedelta(milliseconds=1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def report_path(output: str, workdir: Path) -> Path:
    found = REPORT_RE.findall(output)
    assert len(found) == 1, output
    path = Path(found[0])
    assert path.is_file() and path.parent.parent == workdir / ".snakemake" / "azbatch" / "reports", path
    assert {p.name for p in path.parent.iterdir()} >= {"tasks.tsv", "timeline.png", "timeline.svg", "report.html"}
    return path


class Page(HTMLParser):
    """Elements by id, and the text of each table's rows."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.body: dict = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self.hrefs: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = attrs
        if tag == "body":
            self.body = attrs
        if tag == "a":
            self.hrefs.append(attrs.get("href", ""))
        if tag == "table":
            self._table = attrs.get("id") or self._table
            self.tables.setdefault(self._table or "", [])
        if tag == "tr":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.tables.setdefault(self._table or "", []).append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._row:
            self._row[-1] += data.strip()


@pytest.fixture(scope="module")
def successful_run(service, tmp_path_factory):
    workdir = write_files(tmp_path_factory.mktemp("report-ok"), {"Snakefile": WORKFLOW})
    before = service.metrics()
    result = run_snakemake(service, workdir, container="report", SNAKEMAKE_AZBATCH_KEEP_JOB="true", **FAST)
    after = service.metrics()
    assert result.returncode == 0, output_of(result)
    return workdir, result, before, after


def test_progress_lines_move_and_cost_one_request_each_per_interval(service, successful_run):
    workdir, result, before, after = successful_run
    output = result.stdout + result.stderr
    lines = [PROGRESS_RE.search(line) for line in output.splitlines() if "azbatch: progress:" in line]
    assert all(lines) and len(lines) >= 3, output
    counts = [tuple(int(g) for g in m.groups()[1:]) for m in lines]
    assert {m.group(1) for m in lines} == {"local"} and all(m.group(7) == "2" for m in lines)
    completed = [c[2] for c in counts]
    assert completed == sorted(completed) and len(set(completed)) >= 3, counts  # counts that move
    assert any(active > 0 for active, *_ in counts), "six tasks on two one-slot nodes must show queued tasks"
    assert all(running <= 2 for _, running, *_ in counts)
    texts = [m.string for m in lines]
    # Printed when something changed (the run is far shorter than the 30 s heartbeat), not every round.
    assert all(a != b for a, b in zip(texts, texts[1:])), texts
    # One task-count and one node-count request per interval, never one per task.
    task_counts = delta(before, after, "operations", "Jobs_GetJobTaskCounts")
    node_counts = delta(before, after, "operations", "Pools_ListPoolNodeCounts")
    assert task_counts == node_counts >= len(lines)
    assert delta(before, after, "operations", "Tasks_GetTask") == 0


def test_tasks_tsv_has_one_row_per_task_as_batch_reports_it(service, successful_run):
    workdir, result, *_ = successful_run
    report = report_path(result.stdout + result.stderr, workdir)
    rows = read_tsv(report.parent / "tasks.tsv")
    client = service.batch_client()
    (job_id,) = {row["batch_job"] for row in rows}
    tasks = {t.id: t for t in client.list_tasks(job_id)}
    try:
        assert sorted(row["task_id"] for row in rows) == sorted(tasks), "one row per Batch task"
        assert sorted(row["rule"] for row in rows) == ["gather"] + ["work"] * 6
        node_ids = {n.id for n in client.list_nodes(service.pool_id)}
        by_node: dict[str, list[tuple[datetime, datetime]]] = {}
        for row in rows:
            task = tasks[row["task_id"]]
            submitted, started, ended = (parse_time(row[k]) for k in ("submitted", "started", "ended"))
            info = task.execution_info
            assert same_ms(submitted, task.creation_time) and same_ms(started, info.start_time)
            assert same_ms(ended, info.end_time) and row["node"] == task.node_info.node_id in node_ids
            assert submitted <= started <= ended
            assert float(row["queue_wait_s"]) == pytest.approx((started - submitted).total_seconds(), abs=0.002)
            assert float(row["run_time_s"]) == pytest.approx((ended - started).total_seconds(), abs=0.002)
            assert (row["result"], row["exit_code"], row["slots"], row["attempt"]) == ("success", "0", "1", "1")
            assert row["pool"] == "local" and row["node_type"] == "dedicated"
            by_node.setdefault(row["node"], []).append((started, ended))
        for intervals in by_node.values():  # one slot per node: a node runs one task at a time
            intervals.sort()
            assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:])), intervals
        assert max(float(row["queue_wait_s"]) for row in rows) > 1.0  # the queue is visible
        gather = next(row for row in rows if row["rule"] == "gather")
        assert parse_time(gather["started"]) >= max(parse_time(r["ended"]) for r in rows if r["rule"] == "work")
    finally:
        client.begin_delete_job(job_id, polling_interval=1).result()


def test_timeline_images_and_page(successful_run):
    workdir, result, *_ = successful_run
    report = report_path(result.stdout + result.stderr, workdir)
    png = (report.parent / "timeline.png").read_bytes()
    width, height = png_size(png)
    assert 800 <= width <= 2000 and 250 <= height <= 4000 and len(png) > 10_000
    svg = (report.parent / "timeline.svg").read_text()
    assert ET.fromstring(svg).tag.endswith("svg") and "gather" in svg and "work" in svg

    page = Page(report.read_text())
    assert page.ids["outcome"] and "succeeded" in report.read_text().split('id="outcome">', 1)[1][:20]
    assert page.ids["timeline-image"]["src"].startswith("data:image/png;base64,")
    rules = {row[0]: row for row in page.tables["per-rule"][1:]}
    assert set(rules) == {"gather", "work", "total"}
    assert rules["work"][1:4] == ["6", "6", "0"] and rules["total"][1] == "7"
    assert len(page.tables["per-node"]) == 3  # header + two nodes
    assert "No price given" in report.read_text()


def test_report_renders_in_headless_chromium(successful_run, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("headless Chromium not found; install the Debian package chromium")
    workdir, result, *_ = successful_run
    report = report_path(result.stdout + result.stderr, workdir)
    width, height = png_size((report.parent / "timeline.png").read_bytes())
    # A copy of the page with a probe that records, once loaded, what the browser made of it.
    probe = report.parent / "chromium-probe.html"
    probe.write_text(report.read_text().replace("</body>", """<script>
window.addEventListener('error', e => document.body.setAttribute('data-error', String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const img = document.getElementById('timeline-image'), box = img.getBoundingClientRect();
  const table = document.getElementById('per-rule').getBoundingClientRect();
  document.body.setAttribute('data-image', img.complete ? img.naturalWidth + 'x' + img.naturalHeight : 'pending');
  document.body.setAttribute('data-image-shown', box.width > 100 && box.height > 20 ? 'yes' : 'no');
  document.body.setAttribute('data-table-shown', table.height > 40 ? 'yes' : 'no');
});
</script></body>"""))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    dom = Page(done.stdout)
    assert "data-error" not in dom.body, dom.body
    assert dom.body.get("data-image") == f"{width}x{height}", dom.body  # the inline PNG decoded
    assert dom.body.get("data-image-shown") == "yes" and dom.body.get("data-table-shown") == "yes", dom.body
    assert {row[0] for row in dom.tables["per-rule"][1:]} == {"gather", "work", "total"}
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "net::ERR" in line]
    assert not console, console


def test_failed_run_with_retries_writes_its_report_and_quiet_hides_progress(service, tmp_path):
    workdir = write_files(
        tmp_path / "report-failed",
        {
            "Snakefile": """
                rule all:
                    input: "ok.txt", "bad.txt"

                rule ok:
                    output: "ok.txt"
                    shell: "sleep 1 && touch {output}"

                rule bad:
                    output: "bad.txt"
                    shell: "echo 'bad: cannot go on' >&2; exit 3"
            """
        },
    )
    result = run_snakemake(
        service, workdir, "--retries", "1", "--quiet", container="report",
        SNAKEMAKE_AZBATCH_PRICE_CORE_HOUR="0.4,0.1", **FAST,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "azbatch: progress:" not in output, "--quiet keeps the progress quiet"
    report = report_path(output, workdir)
    rows = read_tsv(report.parent / "tasks.tsv")
    bad = sorted((row for row in rows if row["rule"] == "bad"), key=lambda row: row["attempt"])
    assert [row["attempt"] for row in bad] == ["1", "2"], rows  # one row per attempt
    assert bad[0]["task_id"] != bad[1]["task_id"]
    # Snakemake on the node reports the failed shell command with its own exit status 1.
    assert all((row["result"], row["exit_code"], row["failure"]) == ("failure", "1", "FailureExitCode") for row in bad)
    assert [row["result"] for row in rows if row["rule"] == "ok"] == ["success"]

    text = report.read_text()
    page = Page(text)
    assert 'class="outcome failed"' in text
    failed_rows = [row for row in page.tables["failed-table"] if row and row[0] == "bad"]
    assert len(failed_rows) == 2 and "bad: cannot go on" in text
    for row in bad:
        link = f"../../logs/{row['task_id']}/stderr.txt"
        assert link in page.hrefs and (report.parent / link).resolve().is_file()
    core_hours = sum(float(row["run_time_s"]) * int(row["slots"]) for row in rows) / 3600
    cost = text.split('id="cost"', 1)[1].split("</div>", 1)[0]
    assert "dedicated" in cost and "low-priority" in cost
    assert f"{core_hours * 0.4:.4f}" in cost  # dedicated nodes at 0.4 per core-hour


def test_cancelled_run_writes_its_report(service, tmp_path):
    workdir = write_files(
        tmp_path / "report-cancelled",
        {
            "Snakefile": """
                rule all:
                    input: expand("slept/{i}.txt", i=range(3))

                rule slow:
                    output: "slept/{i}.txt"
                    shell: "sleep 611.5 && touch {output}"
            """
        },
    )
    proc = subprocess.Popen(
        snakemake_command(), cwd=workdir, env=snakemake_env(service, "report", **FAST),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        def two_running() -> bool:
            assert proc.poll() is None, "".join(lines)
            return any((m := PROGRESS_RE.search(line)) and m.group(3) == "2" for line in list(lines))

        wait_for(two_running, 120, lambda: "".join(lines), interval=0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    output = "".join(lines)
    assert proc.returncode != 0, output
    report = report_path(output, workdir)
    rows = read_tsv(report.parent / "tasks.tsv")
    assert len(rows) == 3, rows
    ran = [row for row in rows if row["node"]]
    assert len(ran) == 2 and all(row["result"] == "failure" and row["ended"] for row in ran), rows
    (queued,) = [row for row in rows if not row["node"]]
    assert queued["result"] == "not started" and not queued["started"]
    assert 'class="outcome cancelled"' in report.read_text()
