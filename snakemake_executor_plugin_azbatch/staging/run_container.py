"""Each run's own storage container: what its tasks write (outputs, logs, Batch's stdout/stderr) goes there, never
into the shared staging container, whose content-addressed blobs nodes may only read. Nodes get a write+create
link on their run's container only, so a task reader can change nothing another run (or a later run) reads.

The name is derived from the staging container and the run token alone, so whoever knows a run's token (its Batch
job metadata) can find and delete the container: `<staging container[:40]>-run-<12 hex of sha256(run token)>`,
within Azure's rules (3-63 characters, lowercase letters, digits and single hyphens, starting and ending with a
letter or digit)."""

from __future__ import annotations

import hashlib

RUN_CONTAINER_INFIX = "-run-"
# Batch's node agent needs write permission on an output container (its docs); no read, list or delete.
OUTPUT_PERMISSION = "cw"
READ_PERMISSION = "r"


def run_container_name(staging_container: str, run_token: str) -> str:
    digest = hashlib.sha256(run_token.encode("utf-8")).hexdigest()[:12]
    # A staging name cut at 40 may end in '-', and Azure refuses two hyphens in a row.
    return f"{staging_container[:40].rstrip('-')}{RUN_CONTAINER_INFIX}{digest}"
