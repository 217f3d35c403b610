"""The inputs of every job Snakemake hands over at once, staged together: one parallel hash/upload pass and one
staging-record save per submission round, not one per job."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ..staging import NodePaths, Staging
from ..tasks import task_spec
from .outage import OutageExpired
from .run_files import RunFiles


def raise_error(_job: Any, error: Exception) -> None:
    """A `report_error` for a caller that handles the error itself."""
    raise error


def stage_inputs(jobs: Iterable[Any], node_paths: NodePaths, run_files: RunFiles, staging: Staging,
                 storage_call: Callable, report_error: Callable[[Any, Exception], None],
                 ) -> tuple[dict, dict[str, str] | None]:
    """Returns id(job) -> (its files, its (local, node) input pairs), and the blobs (None: staged job by job later,
    so a problem is reported for the job it belongs to). A job whose files cannot be read is reported through
    `report_error` and left out; `storage_call` waits out a storage outage (outage.py)."""
    staged_inputs: dict[int, tuple[task_spec.JobFiles, list[tuple[str, str]]]] = {}
    for job in list(jobs):
        try:
            files = task_spec.job_files(job)
            staged_inputs[id(job)] = (files, node_paths.pairs(files.inputs, "input file"))
        except Exception as e:
            report_error(job, e)
    paths = [p for _, pairs in staged_inputs.values() for p, _ in pairs]

    def stage_all() -> dict[str, str]:
        run_files.sources()
        staging.create_run_container()  # where the tasks write (run_container.py)
        return staging.stage_files(paths)

    try:
        return staged_inputs, storage_call(stage_all)
    except OutageExpired:
        raise
    except Exception:
        return staged_inputs, None
