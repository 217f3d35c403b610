"""The timeline's middle panel: each pool over time, its nodes allocated (from the node counts the run fetched,
node_hours.py) against its busy slots in node units (the tasks' slots ÷ slots per node), so idle nodes show as
the gap between the line and the area."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from .node_hours import Sample
from .records import TaskAttempt

POOL_COLOURS = ("#1f4e79", "#7a5195", "#2f6f4f", "#8c564b")  # none red: red means failure


MAX_STEPS = 2000  # as the top panel: 20,000 tasks make 40,000 steps, far more than the figure's pixels


def thinned(xs: list[float], ys: list[float], points: int = MAX_STEPS) -> tuple[list[float], list[float]]:
    """At most about `points` steps: the span cut into equal bins, each the highest step in it, so peaks stay."""
    if len(xs) <= points:
        return xs, ys
    first, width = xs[0], ((xs[-1] - xs[0]) / points) or 1.0
    out_x: list[float] = []
    out_y: list[float] = []
    for x, y in zip(xs, ys):
        start = first + int((x - first) / width) * width
        if out_x and out_x[-1] == start:
            out_y[-1] = max(out_y[-1], y)
        else:
            out_x.append(start)
            out_y.append(y)
    return out_x, out_y


def busy_nodes(attempts: list[TaskAttempt], pool: str, slots_per_node: int, at: Callable[[datetime], float],
               end: datetime) -> tuple[list[float], list[float]]:
    """Step series (x, busy slots ÷ slots per node) of one pool's tasks, thinned to the figure."""
    events: list[tuple[float, int]] = []
    for a in attempts:
        if a.started is not None and a.pool.lower() == pool.lower():
            events += [(at(a.started), a.slots), (at(a.ended or end), -a.slots)]
    events.sort()
    xs, ys, busy = [0.0], [0.0], 0
    for x, change in events:
        busy += change
        if x != xs[-1]:
            xs.append(x)
            ys.append(ys[-1])
        ys[-1] = busy / max(1, slots_per_node)
    return thinned(xs, ys)


def draw_utilisation(ax: Any, attempts: list[TaskAttempt], pools: dict[str, list[Sample]],
                     slots_per_node: dict[str, int], at: Callable[[datetime], float], end: datetime) -> None:
    from matplotlib.ticker import MaxNLocator

    top = 1.0
    for i, (pool, samples) in enumerate(sorted(pools.items())):
        colour = POOL_COLOURS[i % len(POOL_COLOURS)]
        slots = slots_per_node.get(pool, slots_per_node.get(pool.lower(), 1))
        xs, ys = busy_nodes(attempts, pool, slots, at, end)
        ax.fill_between(xs, 0, ys, step="post", color=colour, alpha=0.35, linewidth=0,
                        label=f"{pool}: busy slots (in nodes)")
        if samples:
            sx = [at(s.at) for s in samples] + [at(end)]
            sy = [sum(s.billed) for s in samples]
            if sx[0] > 0:  # the first count taken back to the first submission, as node_hours counts it
                sx, sy = [0.0, *sx[1:]], sy
            ax.step(sx, sy + sy[-1:], where="post", color=colour, linewidth=1.4, label=f"{pool}: nodes allocated")
            top = max(top, *sy)
        top = max(top, *ys)
    ax.set_ylabel("nodes")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, top * 1.2)
    if pools:
        ax.legend(loc="upper right", fontsize=8, frameon=False, ncols=2)
    else:
        ax.text(0.5, 0.5, "no pool node counts fetched", transform=ax.transAxes, ha="center", va="center")
    ax.set_title("Pools: nodes allocated (line) and slots busy (area)", loc="left", fontsize=10)
