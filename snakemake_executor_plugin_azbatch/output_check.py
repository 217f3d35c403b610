"""After a task's files are downloaded: every required output is there and of the declared kind (file or
directory). Sizes were checked blob by blob as they were downloaded (staging: temp file, size check, rename).
A mismatch fails the Snakemake job with one line, so a wrong or missing result never passes as exit 0."""

from __future__ import annotations

import os
from typing import Iterable

from .task_spec import OutputPath


def output_problem(outputs: Iterable[OutputPath], workdir: str) -> str | None:
    """One line naming the first required output that is missing or of the wrong kind, or None."""
    for out in outputs:
        if not out.required:
            continue
        path = os.path.join(workdir, out.path)
        if out.directory:
            if os.path.isfile(path):
                return f"output directory {out.path!r} came back as a file"
            continue  # an empty directory output has no blobs: the executor creates it
        if os.path.isdir(path):
            return f"output file {out.path!r} came back as a directory"
        if not os.path.isfile(path):
            return f"output file {out.path!r} did not come back from the node"
    return None
