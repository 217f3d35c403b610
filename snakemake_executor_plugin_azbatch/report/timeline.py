"""timeline.png / timeline.svg with matplotlib: on top, how many tasks were queued and running over time (queue
waits are the grey band); below, one lane per node with a bar per task, coloured by rule, failures outlined red
and hatched, requeued tasks marked. Uses matplotlib's object API (no pyplot), so no GUI backend and no global
figure state are involved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .records import TaskAttempt
from .summary import span

QUEUED_COLOUR = "#b8b8b8"
RUNNING_COLOUR = "#4c9a5b"
FAILED_COLOUR = "#c62828"
LANE_HEIGHT_IN = 0.28
MAX_HEIGHT_IN = 24.0
MAX_STEPS = 2000  # steps of the top panel (thin_steps); the figure is 1,100 pixels wide


def _time_unit(total_seconds: float) -> tuple[float, str]:
    if total_seconds <= 300:
        return 1.0, "seconds"
    if total_seconds <= 300 * 60:
        return 60.0, "minutes"
    return 3600.0, "hours"


def pack_rows(intervals: list[tuple[float, float]]) -> list[int]:
    """Greedy interval packing: the first row free at each start, so overlapping tasks on a node (several slots)
    get their own row and the lane stays as tall as the node's busiest moment."""
    order = sorted(range(len(intervals)), key=lambda i: intervals[i])
    row_ends: list[float] = []
    rows = [0] * len(intervals)
    for i in order:
        start, end = intervals[i]
        for r, row_end in enumerate(row_ends):
            if row_end <= start:
                rows[i], row_ends[r] = r, end
                break
        else:
            rows[i] = len(row_ends)
            row_ends.append(end)
    return rows


def occupancy(attempts: list[TaskAttempt], origin: datetime, end: datetime) -> tuple[list[float], list[int], list[int]]:
    """Step series (seconds since origin, queued count, running count) over the run."""
    events: list[tuple[float, int, int]] = []

    def at(t: datetime) -> float:
        return (t - origin).total_seconds()

    for a in attempts:
        if a.submitted is None:
            continue
        queued_until = a.started or a.ended or end
        events += [(at(a.submitted), 1, 0), (at(queued_until), -1, 0)]
        if a.started is not None:
            events += [(at(a.started), 0, 1), (at(a.ended or end), 0, -1)]
    events.sort()
    times, queued, running = [0.0], [0], [0]
    for t, dq, dr in events:
        if t != times[-1]:
            times.append(t)
            queued.append(queued[-1])
            running.append(running[-1])
        queued[-1] += dq
        running[-1] += dr
    return times, queued, running


def thin_steps(
    times: list[float], queued: list[int], running: list[int], points: int = MAX_STEPS
) -> tuple[list[float], list[int], list[int]]:
    """At most about `points` steps: the run's span cut into `points` equal bins, each drawn as the step in it with
    the most tasks (queued + running), from the bin's start, so peaks survive. 20,000 tasks make 40,000 steps: far
    more than the figure has pixels, and drawn as such they were 12 MB of the SVG."""
    if len(times) <= points:
        return times, queued, running
    first = times[0]
    width = (times[-1] - first) / points or 1.0
    out_t: list[float] = []
    out_q: list[int] = []
    out_r: list[int] = []
    for t, q, r in zip(times, queued, running):
        start = first + int((t - first) / width) * width
        if out_t and out_t[-1] == start:
            if q + r > out_q[-1] + out_r[-1]:
                out_q[-1], out_r[-1] = q, r
        else:
            out_t.append(start)
            out_q.append(q)
            out_r.append(r)
    return out_t, out_q, out_r


def rule_colours(rules: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(rules) <= 10 else "tab20"]
    return {rule: cmap(i % cmap.N) for i, rule in enumerate(sorted(rules))}


def _lanes(attempts: list[TaskAttempt], at, end: datetime) -> tuple[list[tuple[str, int, int]], dict[int, float]]:
    """Lanes (label, first row, row count) per node and the y position (row) of each drawn attempt by index."""
    by_node: dict[tuple[str, str], list[int]] = {}
    for i, a in enumerate(attempts):
        if a.node and a.started is not None:
            by_node.setdefault((a.pool, a.node), []).append(i)
    several_pools = len({pool for pool, _ in by_node}) > 1
    lanes, y_of, next_row = [], {}, 0
    for (pool, node), indices in sorted(by_node.items()):
        rows = pack_rows([(at(attempts[i].started), at(attempts[i].ended or end)) for i in indices])
        for i, r in zip(indices, rows):
            y_of[i] = next_row + r
        count = max(rows) + 1
        lanes.append((f"{pool}/{node}" if several_pools else node, next_row, count))
        next_row += count
    return lanes, y_of


def lane_ticks(lanes: list[tuple[str, int, int]]) -> list[tuple[float, str]]:
    """(row, label) of the lanes that get a label: all of them while the figure has room for a lane's height each,
    else only as many as fit (a pool of 1,000 nodes would print 1,000 overlapping labels, and laying them out costs
    seconds of CPU)."""
    rows = sum(count for _, _, count in lanes)
    spacing = max(1.0, rows * LANE_HEIGHT_IN / MAX_HEIGHT_IN)  # rows per label height at the figure's scale
    ticks: list[tuple[float, str]] = []
    for label, first, count in lanes:
        centre = first + (count - 1) / 2
        if not ticks or centre - ticks[-1][0] >= spacing:
            ticks.append((centre, label))
    return ticks


@dataclass
class _Frame:
    """The time axis shared by both panels."""

    attempts: list[TaskAttempt]
    origin: datetime
    end: datetime
    scale: float
    unit: str

    def at(self, t: datetime) -> float:
        return (t - self.origin).total_seconds() / self.scale


def _draw_occupancy(ax, frame: _Frame) -> None:
    from matplotlib.ticker import MaxNLocator

    times, queued, running = thin_steps(*occupancy(frame.attempts, frame.origin, frame.end))
    x = [t / frame.scale for t in times]
    stacked = [q + r for q, r in zip(queued, running)]
    ax.fill_between(x, 0, running, step="post", color=RUNNING_COLOUR, label="running", linewidth=0)
    ax.fill_between(x, running, stacked, step="post", color=QUEUED_COLOUR, label="queued (waiting for a slot)", linewidth=0)
    ax.set_ylabel("tasks")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(stacked + [1]) * 1.15)
    ax.legend(loc="upper right", fontsize=8, frameon=False, ncols=2)
    ax.set_title("Batch tasks over time: queued and running (top), per node (below)", loc="left", fontsize=10)


def _bars(frame: _Frame, y_of: dict[int, float], min_width: float) -> dict[bool, tuple[Any, list[str]]]:
    """Bar outlines (an array of 4 corners per bar) and rules of the drawn attempts, split into succeeded-or-running
    and failed. One array per kind: as tuples of tuples, 20,000 bars cost about 10 MiB more at the end of the run."""
    import numpy as np

    bars: dict[bool, tuple[Any, list[str]]] = {}
    for failed in (False, True):
        drawn = [(i, a) for i, a in enumerate(frame.attempts) if i in y_of and a.failed == failed]
        left = np.fromiter((frame.at(a.started) for _, a in drawn), float, len(drawn))
        ended = np.fromiter((frame.at(a.ended or frame.end) for _, a in drawn), float, len(drawn))
        right = left + np.maximum(ended - left, min_width)
        y = np.fromiter((y_of[i] for i, _ in drawn), float, len(drawn))
        corners = [(left, y - 0.4), (left, y + 0.4), (right, y + 0.4), (right, y - 0.4)]
        outlines = np.stack([np.column_stack(corner) for corner in corners], axis=1)  # (bars, 4, 2)
        bars[failed] = (outlines, [a.rule for _, a in drawn])
    return bars


def _draw_nodes(ax, frame: _Frame, lanes: list[tuple[str, int, int]], y_of: dict[int, float]) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    attempts, end = frame.attempts, frame.at(frame.end)
    colours = rule_colours(sorted({a.rule for a in attempts}))
    # One collection per kind of outline, not an artist per task: at 20,000 tasks, a bar each cost hundreds of
    # MiB and minutes of CPU at the end of the run.
    for failed, (outlines, rules) in _bars(frame, y_of, 0.002 * max(end, 1e-9)).items():
        if len(outlines):
            ax.add_collection(PolyCollection(
                outlines, facecolors=[colours[r] for r in rules], edgecolors=FAILED_COLOUR if failed else "black",
                linewidths=1.4 if failed else 0.3, hatch="xx" if failed else None,
            ))
    requeued = [(frame.at(a.started), y_of[i]) for i, a in enumerate(attempts) if a.requeues and i in y_of]
    if requeued:
        ax.plot([x for x, _ in requeued], [y for _, y in requeued], marker="<", linestyle="", color="black",
                markersize=5)
    if lanes:  # lane separators across the whole width, one artist
        ax.hlines([first - 0.5 for _, first, _ in lanes], 0, 1, transform=ax.get_yaxis_transform(),
                  colors="#dddddd", linewidths=0.6)
    ticks = lane_ticks(lanes)
    ax.set_yticks([y for y, _ in ticks], [label for _, label in ticks])
    ax.set_ylim(max(1, sum(count for _, _, count in lanes)) - 0.5, -0.5)
    ax.set_xlim(0, max(end, 1e-9) * 1.01)
    ax.set_xlabel(f"{frame.unit} since the first task was submitted ({frame.origin.strftime('%Y-%m-%d %H:%M:%S')} UTC)")
    ax.set_ylabel("node" if len(ticks) == len(lanes) else f"node ({len(ticks)} of {len(lanes)} labelled)")
    handles = [Patch(facecolor=colours[r], edgecolor="black", linewidth=0.3, label=r) for r in sorted(colours)]
    if any(a.failed for a in attempts):
        handles.append(Patch(facecolor="white", edgecolor=FAILED_COLOUR, hatch="xx", label="failed"))
    if any(a.requeues for a in attempts):
        handles.append(Line2D([], [], marker="<", color="black", linestyle="", label="requeued by Batch"))
    if not lanes:
        ax.text(0.5, 0.5, "no task started on a node", transform=ax.transAxes, ha="center", va="center")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, title="rule")


def draw_timeline(attempts: list[TaskAttempt], png: Path, svg: Path, now: datetime | None = None) -> None:
    """Write the figure as PNG and SVG."""
    import matplotlib
    from matplotlib.figure import Figure

    now = now or datetime.now(timezone.utc)
    origin, last = span(attempts)
    origin = origin or now
    end = max(last or now, origin)
    frame = _Frame(attempts, origin, end, *_time_unit((end - origin).total_seconds()))
    lanes, y_of = _lanes(attempts, frame.at, end)
    height = min(MAX_HEIGHT_IN, 2.6 + LANE_HEIGHT_IN * max(1, sum(count for _, _, count in lanes)))
    # Text stays text in the SVG (smaller, searchable); a fixed hash salt keeps its ids stable between runs.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "azbatch-timeline", "font.size": 9}):
        fig = Figure(figsize=(11, height), dpi=100, layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.6, max(1.6, height - 2.2)]})
        _draw_occupancy(top, frame)
        _draw_nodes(bottom, frame, lanes, y_of)
        fig.savefig(png, format="png")
        fig.savefig(svg, format="svg", metadata={"Date": None})
