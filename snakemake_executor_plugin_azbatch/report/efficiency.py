"""How well each rule used what it asked for (pure): requested threads vs CPU used, `mem_mb` vs the peak the
nodes measured, run time vs the `runtime` limit; a plain suggestion where a rule asks for far more than it uses
or runs close to its limit (as the SLURM executor plugin's efficiency report does)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from .records import TaskAttempt

LOW_CPU = 0.5  # below this share of its threads: the rule asks for more threads than it uses
LOW_MEMORY = 0.5  # peak below this share of mem_mb (and mem_mb above MIN_MEMORY_MB): asks for too much memory
HIGH_MEMORY = 0.9  # peak above this share of mem_mb: close to what it declared (Batch enforces none of it)
MIN_MEMORY_MB = 1024  # below this, asking for less saves nothing worth a line
LONG_RUN = 0.8  # longest run above this share of runtime: close to the wall clock that ends the task
SHORT_RUN = 0.1  # longest run below this share of runtime: the limit could be lower (a hung task costs less)


@dataclass
class RuleEfficiency:
    rule: str
    tasks: int = 0  # attempts that ran to an end
    threads: int = 1  # the most any of its tasks asked for
    cpu_seconds: float = 0.0
    thread_seconds: float = 0.0  # threads × run time of the tasks with a CPU figure
    mem_mb: float | None = None  # the most any of its tasks asked for
    peak_mib: float | None = None  # the highest peak the nodes measured
    runtime_limit: float | None = None  # seconds
    max_run_time: float | None = None
    suggestions: list[str] = field(default_factory=list)

    @property
    def cpu_efficiency(self) -> float | None:
        return self.cpu_seconds / self.thread_seconds if self.thread_seconds > 0 else None

    @property
    def memory_use(self) -> float | None:
        if self.peak_mib is None or not self.mem_mb:
            return None
        return self.peak_mib * 1.048576 / self.mem_mb  # MiB against Snakemake's MB

    @property
    def runtime_use(self) -> float | None:
        if self.max_run_time is None or not self.runtime_limit:
            return None
        return self.max_run_time / self.runtime_limit

    def as_dict(self) -> dict:
        return {
            "rule": self.rule, "tasks": self.tasks, "threads": self.threads,
            "cpu_seconds": round(self.cpu_seconds, 3), "cpu_efficiency": _rounded(self.cpu_efficiency),
            "mem_mb": self.mem_mb, "peak_rss_mib": _rounded(self.peak_mib, 1),
            "memory_use": _rounded(self.memory_use), "runtime_s": self.runtime_limit,
            "max_run_time_s": _rounded(self.max_run_time, 3), "runtime_use": _rounded(self.runtime_use),
            "suggestions": self.suggestions,
        }


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def rule_efficiency(attempts: Iterable[TaskAttempt]) -> list[RuleEfficiency]:
    rules: dict[str, RuleEfficiency] = {}
    for a in attempts:
        if a.run_time is None:
            continue
        r = rules.setdefault(a.rule, RuleEfficiency(a.rule))
        r.tasks += 1
        r.threads = max(r.threads, a.threads)
        if a.cpu_seconds is not None and a.run_time > 0:
            r.cpu_seconds += a.cpu_seconds
            r.thread_seconds += a.threads * a.run_time
        if a.mem_mb:
            r.mem_mb = max(r.mem_mb or 0.0, a.mem_mb)
        if a.peak_rss_mib is not None:
            r.peak_mib = max(r.peak_mib or 0.0, a.peak_rss_mib)
        if a.runtime_limit:
            r.runtime_limit = max(r.runtime_limit or 0.0, a.runtime_limit)
        r.max_run_time = max(r.max_run_time or 0.0, a.run_time)
    for r in rules.values():
        r.suggestions = suggestions(r)
    return sorted(rules.values(), key=lambda r: r.rule)


def suggestions(r: RuleEfficiency) -> list[str]:
    said = []
    cpu = r.cpu_efficiency
    if cpu is not None and r.threads > 1 and cpu < LOW_CPU:
        used = max(1, math.ceil(cpu * r.threads))
        said.append(f"uses about {cpu * r.threads:.1f} of its {r.threads} threads ({cpu:.0%}): threads={used} would "
                    "leave the rest of the node to other tasks")
    if cpu is not None and cpu > 1.25:
        said.append(f"uses more CPU than its {r.threads} thread(s) ({cpu:.0%}): ask for threads="
                    f"{math.ceil(cpu * r.threads)}, or it slows the tasks beside it")
    use = r.memory_use
    if use is not None and r.mem_mb and use > HIGH_MEMORY:
        said.append(f"peaked at {r.peak_mib:.0f} MiB, {use:.0%} of its mem_mb={r.mem_mb:.0f}: raise mem_mb (nothing "
                    "on the node stops a task that outgrows it)")
    elif use is not None and r.mem_mb and r.mem_mb > MIN_MEMORY_MB and use < LOW_MEMORY:
        said.append(f"peaked at {r.peak_mib:.0f} MiB of its mem_mb={r.mem_mb:.0f} ({use:.0%}): about "
                    f"mem_mb={math.ceil(max(r.peak_mib * 1.25, 100) * 1.048576)} would do")
    run = r.runtime_use
    if run is not None and r.runtime_limit and run > LONG_RUN:
        said.append(f"ran up to {run:.0%} of its runtime={r.runtime_limit / 60:g} min: raise runtime before Batch's "
                    "wall clock ends a task")
    elif run is not None and r.runtime_limit and run < SHORT_RUN:
        said.append(f"ran at most {run:.0%} of its runtime={r.runtime_limit / 60:g} min: a lower runtime ends a hung "
                    "task sooner")
    return said
