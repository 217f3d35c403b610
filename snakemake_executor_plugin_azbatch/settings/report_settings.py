"""Settings of the run report and live progress (report/, run/progress.py)."""

from dataclasses import dataclass, field
from typing import Optional

from .setting_help import setting

DEFAULT_REPORT_DIR = ".snakemake/azbatch/reports"


# Runtime typing objects only (no `from __future__ import annotations`): Snakemake builds the flags from them.
@dataclass
class ReportFields:
    """Where reports go, prices, progress interval."""

    report_dir: str = field(
        default=DEFAULT_REPORT_DIR,
        metadata=setting(
            "Directory for run reports: every run writes tasks.tsv, timeline.png, timeline.svg and report.html "
            "into DIR/<run id>/.",
            metavar="DIR",
        ),
    )
    no_report: bool = field(
        default=False,
        metadata=setting(
            "Write no run report at the end (no tasks.tsv, summary.json, figures or page) and make none of the "
            "requests only the report needs; progress lines stay. For runs nobody reads the report of, such as "
            "a test suite's."
        ),
    )
    price_core_hour: Optional[str] = field(
        default=None,
        metadata=setting(
            "Price of one core-hour (a task's slots x its run time) for the report's cost estimate, as "
            "DEDICATED[,LOW_PRIORITY]; one value prices both.",
            unset="none (no cost estimate)",
            metavar="PRICE[,LOW_PRIORITY_PRICE]",
        ),
    )
    price_node_hour: Optional[str] = field(
        default=None,
        metadata=setting(
            "Price of one node-hour (the VM's hourly price; a task uses slots / slots-per-node of a node) for the "
            "report's cost estimate, as DEDICATED[,LOW_PRIORITY]; one value prices both.",
            unset="none (no cost estimate)",
            metavar="PRICE[,LOW_PRIORITY_PRICE]",
        ),
    )
    progress_interval: float = field(
        default=10.0,
        metadata=setting(
            "Seconds between live progress queries (one task-count request per Batch job and one pool "
            "node-count request); a line is printed when the counts change and at least every 30 s while tasks "
            "wait or run. 0 turns progress off; so does --quiet.",
            metavar="SECONDS",
        ),
    )
