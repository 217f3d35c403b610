"""The run report: records of every task attempt (records.py), tasks.tsv (tsv.py), the timeline figure
(timeline.py), the HTML page (page.py), and the executor-facing lifecycle that gathers and writes them
(run_reporting.py). Everything except run_reporting.py is pure: attempts in, files out."""

from __future__ import annotations

from pathlib import Path

from .page import RunInfo, render_page
from .records import RunRecorder, TaskAttempt
from .tsv import write_tsv

TSV_NAME = "tasks.tsv"
PNG_NAME = "timeline.png"
SVG_NAME = "timeline.svg"
HTML_NAME = "report.html"

__all__ = ["RunInfo", "RunRecorder", "TaskAttempt", "write_report"]


def write_report(attempts: list[TaskAttempt], run: RunInfo, directory: Path) -> Path:
    """Write tasks.tsv, timeline.png, timeline.svg and report.html into `directory`; returns report.html."""
    directory.mkdir(parents=True, exist_ok=True)
    write_tsv(attempts, directory / TSV_NAME)
    png = None
    try:
        from .timeline import draw_timeline

        draw_timeline(attempts, directory / PNG_NAME, directory / SVG_NAME, now=run.generated)
        png = (directory / PNG_NAME).read_bytes()
    except ImportError as e:  # a broken matplotlib install must not cost the rest of the report
        run.notes.append(f"The timeline figure needs matplotlib, which could not be imported ({e}).")
    html = directory / HTML_NAME
    html.write_text(render_page(attempts, run, directory, png), encoding="utf-8")
    return html
