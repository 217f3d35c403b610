"""The "crash and rerun" section: compute lost when the submitting machine dies mid-run, with adoption and without.

The same workflow twice, each in its own directory on one service: long tasks and short ones all running when the
run is killed with SIGKILL (the short ones finish after the kill), then `snakemake --unlock` and a rerun with
`--rerun-incomplete` — once as it comes (the rerun adopts the dead run's tasks), once with `--azbatch-no-adopt`
(the rerun ends them and submits everything again). Both runs keep their Batch jobs (`--azbatch-keep-job`) so
their tasks can be read afterwards.

Compute is what Batch reports, each task's time on a node (execution start to end: the rule's command and the
node's Snakemake around it). Lost compute is that of every task whose work the final outputs do not come from:
tasks terminated, and tasks that succeeded but whose output (their output files' pattern) a later successful task
wrote again. Counted from Batch's task list alone, so per-task start-up noise on a loaded machine cancels out.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import workloads
from service_process import ServiceProcess

POOL = "crash:1:8"
LONG_S, SHORT_S = 20, 3
KILL_AFTER_S = 8  # into the long tasks
SNAKEFILE = """
rule all:
    input: expand("out/long{{i}}.txt", i=range({long})), expand("out/short{{i}}.txt", i=range({short}))
rule long:
    output: "out/long{{i}}.txt"
    shell: "sleep {long_s} && echo long-{{wildcards.i}} > {{output}}"
rule short:
    output: "out/short{{i}}.txt"
    shell: "sleep {short_s} && echo short-{{wildcards.i}} > {{output}}"
"""

Row = tuple[str, str, str]


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    sys.exit(f"benchmarks: crash and rerun: timed out after {timeout_s:.0f} s waiting for {what}")


def _states(client: Any, job_id: str) -> list[str]:
    return [str(getattr(t.state, "value", t.state)) for t in client.list_tasks(job_id, select=["id", "state"])]


def _compute(client: Any, label: str) -> tuple[float, float, int]:
    """(seconds on nodes of every task of the workflow's Batch jobs, of those whose work was lost, tasks)."""
    total, count = 0.0, 0
    kept: dict[str, tuple[Any, float]] = {}  # output pattern -> (end, seconds) of the last task that wrote it
    for job in client.list_jobs(select=["id"]):
        if not job.id.startswith(f"sm-{label}-"):
            continue
        for task in client.list_tasks(job.id, select=["id", "executionInfo", "outputFiles"]):
            info = task.execution_info
            count += 1
            if info is None or info.start_time is None or info.end_time is None:
                continue
            seconds = (info.end_time - info.start_time).total_seconds()
            total += seconds
            output = next((f.file_pattern for f in task.output_files or () if "/out/" in f"/{f.file_pattern}"), "")
            if str(getattr(info.result, "value", info.result)) == "success" and output:
                if output not in kept or kept[output][0] < info.end_time:
                    kept[output] = (info.end_time, seconds)
    return total, total - sum(seconds for _, seconds in kept.values()), count


def crash_and_rerun(service: ServiceProcess, work: Path, label: str, n_long: int, n_short: int,
                    adopt: bool) -> dict[str, Any]:
    workdir = work / label
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(
        long=n_long, short=n_short, long_s=LONG_S, short_s=SHORT_S)))
    extra = {} if adopt else {"SNAKEMAKE_AZBATCH_NO_ADOPT": "true"}
    env = workloads.plugin_env(service.env, label, 0.5, SNAKEMAKE_AZBATCH_KEEP_JOB="true", **extra)
    client = service.batch_client()
    command = [sys.executable, "-m", "snakemake", "--executor", "azbatch", "--jobs", "20", "--latency-wait", "5"]
    with open(work / f"{label}-first.log", "w") as log:
        first = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            job = _wait(lambda: next((j.id for j in client.list_jobs(select=["id"])
                                      if j.id.startswith(f"sm-{label}-")), None), 120, "the first run's Batch job")
            _wait(lambda: _states(client, job).count("running") == n_long + n_short, 120, "every task running")
            time.sleep(KILL_AFTER_S)
            first.send_signal(signal.SIGKILL)
            first.wait(60)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    _wait(lambda: _states(client, job).count("completed") >= n_short, 60, "the short tasks to finish")
    unlock = workloads.snakemake(workdir, "azbatch", 1, env, work / f"{label}-unlock.log", 120, ["--unlock"])
    workloads.require_success(unlock, f"snakemake --unlock ({label})")
    rerun = workloads.snakemake(workdir, "azbatch", 20, env, work / f"{label}-rerun.log", 600,
                                ["--rerun-incomplete"])
    workloads.require_success(rerun, f"the rerun after a crash ({label})")
    compute, lost, tasks = _compute(client, label)
    return {"compute_s": round(compute, 1), "lost_s": round(lost, 1), "tasks": tasks,
            "rerun_wall_s": round(rerun.wall_s, 1), "log": rerun.log}


def bench_crash_rerun(work: Path, n_long: int, n_short: int) -> tuple[list[Row], dict[str, Any]]:
    with ServiceProcess(work / "service", [POOL]) as service:
        adopted = crash_and_rerun(service, work, "crash-adopt", n_long, n_short, adopt=True)
        fresh = crash_and_rerun(service, work, "crash-no-adopt", n_long, n_short, adopt=False)
    what = f"{n_long} x {LONG_S} s + {n_short} x {SHORT_S} s tasks, SIGKILL {KILL_AFTER_S} s into the long ones"
    rows: list[Row] = [
        (f"crash and rerun: compute lost, with adoption ({what})", f"{adopted['lost_s']:.1f}", "task-seconds"),
        ("crash and rerun: compute lost, --azbatch-no-adopt", f"{fresh['lost_s']:.1f}", "task-seconds"),
        ("crash and rerun: tasks on Batch, with / without adoption", f"{adopted['tasks']} / {fresh['tasks']}",
         f"(one run: {n_long + n_short})"),
        ("crash and rerun: rerun wall time, with / without adoption",
         f"{adopted['rerun_wall_s']:.1f} / {fresh['rerun_wall_s']:.1f}", "s"),
    ]
    return rows, {"pool": POOL, "long_s": LONG_S, "short_s": SHORT_S, "kill_after_s": KILL_AFTER_S,
                  "adopt": adopted, "no_adopt": fresh}
