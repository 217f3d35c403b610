"""report.html: one self-contained page (inline CSS, the timeline as an inline PNG, no script, no external
resource) rendered with Jinja2, which Snakemake already depends on; autoescaping keeps rule names, paths and log
lines inert."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2

from ..config import Prices
from ..staging.log_tails import file_tail
from . import summary
from .records import TaskAttempt
from .tsv import timestamp

STDERR_TAIL_LINES = 15
LOG_FILES = ("stderr.txt", "stdout.txt")


@dataclass
class RunInfo:
    """What the page says about the run besides its attempts."""

    run_token: str
    workdir: str
    outcome: str  # succeeded | failed | cancelled
    batch_jobs: dict[str, str]  # pool id -> Batch job id
    slots_per_node: dict[str, int]  # pool id -> taskSlotsPerNode
    price_core_hour: Prices | None = None
    price_node_hour: Prices | None = None
    log_root: Path | None = None  # .snakemake/azbatch/logs (absolute)
    generated: datetime | None = None
    notes: list[str] = field(default_factory=list)


def duration(value: float | None) -> str:
    """Seconds as '850 ms', '12.3 s', '4 min 05 s' or '2 h 03 min'."""
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60):02d} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"


def hours(value: float) -> str:
    return f"{value:.4f}" if value < 10 else f"{value:.1f}"


def money(value: float) -> str:
    return f"{value:.4f}" if value < 1 else f"{value:,.2f}"


def _href(path: Path, base: Path) -> str:
    """A link from the report directory to a local file (relative when possible, so the tree can move)."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return path.resolve().as_uri()
    return "/".join(rel.split(os.sep))


def failed_tasks(attempts: list[TaskAttempt], log_root: Path | None, report_dir: Path) -> list[dict]:
    """Failed attempts with links to the Batch logs the executor saved and the end of their stderr."""
    rows = []
    for a in attempts:
        if not a.failed:
            continue
        logs, tail = [], ""
        directory = log_root / a.task_id if log_root else None
        if directory is not None and directory.is_dir():
            logs = [(name, _href(directory / name, report_dir)) for name in LOG_FILES if (directory / name).is_file()]
            tail = file_tail(directory / "stderr.txt", STDERR_TAIL_LINES)
        rows.append({"a": a, "logs": logs, "log_dir": _href(directory, report_dir) if logs else None, "tail": tail})
    return rows


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("snakemake_executor_plugin_azbatch.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=duration, hours=hours, money=money, timestamp=timestamp)
    return env


def render_page(attempts: list[TaskAttempt], run: RunInfo, report_dir: Path, png: bytes | None) -> str:
    total = summary.Group("all tasks", list(attempts))
    first, last = summary.span(attempts)
    usage = summary.usage_hours(attempts, run.slots_per_node)
    costs = summary.cost_lines(attempts, run.slots_per_node, run.price_core_hour, run.price_node_hour)
    return _environment().get_template("report.html.j2").render(
        run=run,
        total=total,
        rules=summary.by_rule(attempts),
        nodes=summary.by_node(attempts),
        first=first,
        last=last,
        wall=(last - first).total_seconds() if first and last else None,
        usage=usage,
        costs=costs,
        failed=failed_tasks(attempts, run.log_root, report_dir),
        png=base64.b64encode(png).decode("ascii") if png else None,
    )
