"""What each task measures on its node around the rule's command, and how the plugin reads it back (pure).

The job-wide prefix defines two shell functions around Snakemake (`SNAKEMAKE_FUNCTION`'s body): before the
command, `azbatch_usage_begin` writes bash's `times` (CPU of the shell's children so far: the link and input-check
steps) and starts `node_helper.py watch` in the background, which samples the peak memory of the task's process
tree; after it, `azbatch_usage_end` writes `times` again and stops the watcher, which names its measurement with
the values (CPU = the difference, so only the command's own processes count). The measurement is an empty blob
`usage/<task id>/<values>` in the run's container, so ONE blob listing of `usage/` (5,000 names per request)
reads every task's: no request per task. The node writes it itself (Put Blob, `v1-<kind>-running` when the
command starts, the values when it ends) with the run container's write link from the job's common environment
(`URL_VARIABLE`: once per Batch job, not a byte more per task definition); with a managed identity the node has
no link, and one more output file spec per task uploads a file of that name instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

URL_VARIABLE = "AZBATCH_USAGE_URL"  # the run container's URL and write SAS, in the job's common environment
USAGE_DIR = ".azbatch-usage"  # in the task's working directory; its .begin/.end are never uploaded
_DIR_ON_NODE = f'"$AZ_BATCH_TASK_WORKING_DIR/{USAGE_DIR}"'  # absolute: a precommand may change directory
LISTING_PREFIX = "usage/"  # in the run's container
_NAME = re.compile(r"^v1-(?P<kind>[dsx])-u(?P<u>\d+)-k(?P<k>\d+)-r(?P<r>\d+)-t(?P<t>\d+)-w(?P<w>\d+)$")
_RUNNING = re.compile(r"^v1-(?P<kind>[dsx])-running$")
NODE_KINDS = {"d": "dedicated", "s": "low-priority", "x": ""}


def usage_blob_dir(task_id: str) -> str:
    """The virtual directory of one task's usage file in the run's container (no trailing '/')."""
    return f"{LISTING_PREFIX}{task_id}"


def job_environment(container_url: str, identity: dict | None) -> dict[str, str]:
    """What the job's common environment carries for the nodes' measurements (nothing with a managed identity)."""
    return {} if identity else {URL_VARIABLE: container_url}


def shell_functions(helper: str) -> str:
    """Shell defining azbatch_usage_begin / azbatch_usage_end (`helper`: how a task runs node_helper.py)."""
    return (
        f'azbatch_usage_begin() {{ mkdir -p {_DIR_ON_NODE} && times > {_DIR_ON_NODE}/.begin && '
        # The watcher starts with SIGTERM ignored (the shell's own trap put back at once), so a command quicker
        # than python's start cannot kill it before its handler is in place; it also stops when it sees .end.
        # '&&': the prefix is one and-list.
        f'{{ local t; t=$(trap -p TERM); trap "" TERM; {helper} watch {_DIR_ON_NODE} & AZBATCH_USAGE_WATCH=$!; '
        f'eval "${{t:-trap - TERM}}"; }}; }} && '
        f'azbatch_usage_end() {{ local rc=$1; times > {_DIR_ON_NODE}/.end; '
        f'kill -TERM "$AZBATCH_USAGE_WATCH" 2>/dev/null && wait "$AZBATCH_USAGE_WATCH" 2>/dev/null; return $rc; }}'
    )


def measured(command: str) -> str:
    """`command` between the two functions, its exit status kept."""
    return f"azbatch_usage_begin; {command}; azbatch_usage_end $?"


def output_spec(task_id: str, container_url: str, identity: dict | None) -> dict[str, Any]:
    """The task's usage file, uploaded whatever the outcome (`taskcompletion`); no file is no error (wildcard)."""
    container: dict[str, Any] = {"containerUrl": container_url, "path": usage_blob_dir(task_id)}
    if identity:
        container["identityReference"] = identity
    return {"filePattern": f"{USAGE_DIR}/v1-*", "destination": {"container": container},
            "uploadOptions": {"uploadCondition": "taskcompletion"}}


@dataclass(frozen=True)
class NodeUsage:
    """One task's measurement on its node (`complete` False: its command never finished measuring)."""

    node_kind: str  # "dedicated" | "low-priority" | "" (unknown)
    complete: bool = False
    user_seconds: float = 0.0
    kernel_seconds: float = 0.0
    rule_peak_mib: float = 0.0  # the rule's processes (below the node's Snakemake)
    tree_peak_mib: float = 0.0  # the node's Snakemake too
    wall_seconds: float = 0.0


def parse_blob(name: str) -> tuple[str, NodeUsage] | None:
    """(task id, usage) of a blob listed under LISTING_PREFIX; None for a name of another shape."""
    if not name.startswith(LISTING_PREFIX):
        return None
    task_id, _, leaf = name[len(LISTING_PREFIX):].partition("/")
    if m := _NAME.match(leaf):
        return task_id, NodeUsage(
            NODE_KINDS[m["kind"]], True, int(m["u"]) / 1000, int(m["k"]) / 1000, int(m["r"]) / 1024,
            int(m["t"]) / 1024, int(m["w"]) / 1000)
    if m := _RUNNING.match(leaf):
        return task_id, NodeUsage(NODE_KINDS[m["kind"]])
    return None
