"""Settings for large runs (checked in config/scale.py): submission, input manifests, polling, retention, unusable
nodes, outages."""

from dataclasses import dataclass, field
from typing import Optional

from .setting_help import setting


# Runtime typing objects only (no `from __future__ import annotations`): Snakemake builds the flags from them.
@dataclass
class ScaleFields:
    """Submission, inputs, polling, retention, waits."""

    submit_concurrency: int = field(
        default=4,
        metadata=setting(
            "Task-collection requests (up to 100 tasks each) sent in parallel when many jobs are ready.",
            metavar="N",
        ),
    )
    input_manifest_threshold: int = field(
        default=50,
        metadata=setting(
            "A task with more inputs than this gets them through one content-addressed manifest blob that it "
            "fetches and checks (sha256) itself, instead of one resource file each (Batch refuses task "
            "definitions over 1 MB).",
            metavar="N",
        ),
    )
    status_interval_max: Optional[float] = field(
        default=None,
        metadata=setting(
            "Longest wait between status rounds: the interval starts at --azbatch-status-interval, grows while "
            "no task completes and drops back when one does.",
            unset="10 times the interval, at most 60",
            metavar="SECONDS",
        ),
    )
    unusable_wait: float = field(
        default=120.0,
        metadata=setting(
            "Seconds a run waits while no node of a pool can run tasks (all unusable, e.g. Batch lost contact "
            "with them or their disks are full) for Batch to recover one; then it ends with one line and "
            "terminates its Batch job.",
            metavar="SECONDS",
        ),
    )
    task_retention: int = field(
        default=60,
        metadata=setting(
            "Minutes Batch keeps a finished task's directory on its node (the task's retentionTime); outputs "
            "and logs are already in Blob storage by then. 0 keeps Batch's default (7 days).",
            metavar="MINUTES",
        ),
    )
    outage_tolerance: float = field(
        default=10.0,
        metadata=setting(
            "Minutes the run waits, saying so, while the Batch account or the staging storage account is "
            "unreachable mid-run (tasks keep running on Batch meanwhile); after that the run ends and terminates "
            "its Batch jobs.",
            metavar="MINUTES",
        ),
    )
