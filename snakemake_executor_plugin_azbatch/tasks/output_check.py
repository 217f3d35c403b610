"""After a task's files are downloaded: every required output is there and of the declared kind (file or
directory). Sizes were checked blob by blob as they were downloaded (staging: temp file, size check, rename).
A mismatch fails the Snakemake job with one line, so a wrong or missing result never passes as exit 0."""

from __future__ import annotations

import json
import os
import posixpath
from typing import Iterable

from .task_spec import EMPTY_DIRS_FILE, OutputPath


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


def recreate_empty_dirs(record: bytes, outputs: Iterable[OutputPath], workdir: str) -> str | None:
    """Make the empty directories the node listed (task_spec.EMPTY_DIRS_FILE) below the task's directory outputs,
    so a directory() output comes back as it was, empty subdirectories included. One line when the list is not
    what a task writes (unreadable, or naming a path outside those outputs), else None."""
    roots = [posixpath.normpath(o.path.replace(os.sep, "/")) for o in outputs if o.directory]
    try:
        listed = json.loads(record)["dirs"]
        assert isinstance(listed, list) and all(isinstance(d, str) for d in listed)
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"the node's {EMPTY_DIRS_FILE} is not a list of directories"
    for rel in listed:
        path = posixpath.normpath(rel)
        if path.startswith("/") or ".." in path.split("/") or not any(
                path == root or path.startswith(root + "/") for root in roots):
            return f"the node's {EMPTY_DIRS_FILE} names {rel!r}, which is not inside a directory output"
        try:
            os.makedirs(os.path.join(workdir, *path.split("/")), exist_ok=True)
        except OSError as e:
            return f"empty directory {rel!r} of a directory output could not be made: {e.strerror}"
    return None
