"""Chaos figures (issue 10, point 5): a fan-out workflow while the service fails and preempts (a benchmark, no test).

The local service is started with `--fail-fraction 0.1 --fail-status 429,500,503` (one Batch API request in ten is
answered with one of the three, drawn uniformly, and not executed) and `--preempt-fraction 0.2` (one running task
in five is killed and requeued once, `requeueCount` + 1, as on a preempted node). `snakemake --executor azbatch`
runs a fan-out + gather workflow on it, `runs` times, each in a fresh working directory; per run:

* completed: Snakemake exited 0;
* outputs exact: every output is a file (not a directory, no stray files beside it) with the expected content:
  on real host processes (`backend="host"`) what the command wrote (`i` per part, the count for the gather); on
  simulated nodes (`--simulate`: no command runs) the placeholder blob the service uploaded for that very path by
  the very task that owns it (so a mixed-up, truncated or misnamed download shows);
* tasks requeued: the sum of the tasks' `executionInfo.requeueCount` (Batch API, on the job the run kept);
* retries made: faulted requests answered during the run (`injectedFaults` of /_local/metrics), each one retried
  by the client, since the run completed only if every call eventually succeeded;
* wall time of the Snakemake process.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import workloads
from service_process import ServiceProcess, Traffic

FAULT_OPTIONS = ["--fail-fraction", "0.1", "--fail-status", "429,500,503", "--preempt-fraction", "0.2"]
# Simulated tasks run 1 s: long enough to be preempted (the service preempts 0.3 s after a start), short enough
# for a quick run. 200 slots: every fan-out task can run at once, as on a pool sized for the workflow.
SIMULATED = (["--simulate", "1"], "local:50:4")
HOST = ([], "local:2:4")  # real processes: 8 slots on this machine
STATUS_INTERVAL_S = 1.0


@dataclass
class ChaosRun:
    completed: bool
    outputs_exact: bool
    wall_s: float
    tasks: int
    requeued: int
    injected: dict[str, int]
    batch_requests: int
    problems: list[str] = field(default_factory=list)


def _placeholder(path: str, job_id: str, task_id: str) -> str:
    """What azbatch-local --simulate uploads for an output `path` of a task (simulated_backend.py)."""
    return f"placeholder written by azbatch-local --simulate for {path} (job {job_id}, task {task_id})\n"


def _kept_tasks(service: ServiceProcess, jobs_before: set[str]) -> tuple[list[str], list[Any]]:
    """The Batch jobs the run kept (new since `jobs_before`) and their tasks."""
    client = service.batch_client(retry_status=10, retry_backoff_factor=0.2)
    jobs = sorted({job.id for job in client.list_jobs(select=["id"])} - jobs_before)
    tasks = [(job_id, task) for job_id in jobs
             for task in client.list_tasks(job_id, select=["id", "executionInfo", "outputFiles"])]
    return jobs, tasks


def _delete_jobs(service: ServiceProcess, jobs: list[str]) -> None:
    client = service.batch_client(retry_status=10, retry_backoff_factor=0.2)
    for job_id in jobs:
        client.begin_delete_job(job_id).result()


def output_problems(workdir: Path, n: int, simulated: bool, owners: dict[str, tuple[str, str]]) -> list[str]:
    """What is wrong with the run's outputs (empty when exact). `owners` maps an output path to (job, task)."""
    expected = {f"parts/{i}.txt": f"{i}\n" for i in range(n)}
    expected["gathered.txt"] = f"{n}\n"
    problems = []
    for rel, content in expected.items():
        path = workdir / rel
        if simulated:
            if rel not in owners:
                problems.append(f"{rel}: no Batch task lists it as an output")
                continue
            content = _placeholder(rel, *owners[rel])
        if not path.is_file():
            problems.append(f"{rel}: {'a directory' if path.is_dir() else 'missing'}")
        elif path.read_text(errors="replace") != content:
            problems.append(f"{rel}: content {path.read_text(errors='replace')[:80]!r}, expected {content[:80]!r}")
    stray = sorted(str(p.relative_to(workdir)) for p in (workdir / "parts").rglob("*")
                   if str(p.relative_to(workdir)) not in expected) if (workdir / "parts").is_dir() else []
    problems += [f"{rel}: not an output of the workflow" for rel in stray]
    return problems


def _one_run(service: ServiceProcess, workdir: Path, n: int, simulated: bool, log: Path) -> ChaosRun:
    client = service.batch_client(retry_status=10, retry_backoff_factor=0.2)
    jobs_before = {job.id for job in client.list_jobs(select=["id"])}
    env = workloads.plugin_env(service.env, workdir.name, STATUS_INTERVAL_S, SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    before = service.metrics()
    run = workloads.snakemake(workdir, "azbatch", n, env, log, timeout_s=1800)
    traffic = Traffic(before, service.metrics())
    jobs, tasks = _kept_tasks(service, jobs_before)
    owners = {spec["filePattern"]: (job_id, task.id) for job_id, task in tasks
              for spec in (task.as_dict().get("outputFiles") or [])}
    requeued = sum(task.execution_info.requeue_count or 0 for _, task in tasks if task.execution_info)
    _delete_jobs(service, jobs)
    wrong = output_problems(workdir, n, simulated, owners)
    failed = [] if run.returncode == 0 else [f"snakemake exited {run.returncode}; log {run.log}"]
    injected = {status: after - traffic.before.get("injectedFaults", {}).get(status, 0)
                for status, after in traffic.after.get("injectedFaults", {}).items()}
    return ChaosRun(completed=run.returncode == 0, outputs_exact=not wrong, wall_s=run.wall_s, tasks=len(tasks),
                    requeued=requeued, injected={s: k for s, k in sorted(injected.items()) if k},
                    batch_requests=traffic.total("operations"), problems=failed + wrong)


def bench_chaos(work: Path, n: int, runs: int, backend: str) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """`runs` runs of an n-task fan-out + gather on a service failing and preempting; rows and figures."""
    extra, pool = SIMULATED if backend == "simulate" else HOST
    options = [*FAULT_OPTIONS, "--seed", "1", *extra]
    results = []
    with ServiceProcess(work / "service", [pool], options) as service:
        for r in range(runs):
            workdir = workloads.make_fan_out_gather(work / f"chaos{r + 1}", n)
            results.append(_one_run(service, workdir, n, backend == "simulate", work / f"chaos{r + 1}.log"))
            print(f"benchmarks: chaos run {r + 1}/{runs}: {'completed' if results[-1].completed else 'FAILED'}, "
                  f"{len(results[-1].problems)} problem(s)", file=sys.stderr, flush=True)
    injected: dict[str, int] = {}
    for result in results:
        for status, k in result.injected.items():
            injected[status] = injected.get(status, 0) + k
    faults = sum(injected.values())
    requests = sum(result.batch_requests for result in results)
    tasks = sum(result.tasks for result in results)
    walls = ", ".join(f"{result.wall_s:.0f}" for result in results)
    label = f"{n} + 1 tasks, {'--simulate 1' if backend == 'simulate' else 'host processes'}, pool {pool}"
    rows = [
        (f"chaos ({label}): runs completed", f"{sum(r.completed for r in results)} / {runs}", "runs"),
        ("chaos: runs with every output exact (present, a file, right content)",
         f"{sum(r.outputs_exact for r in results)} / {runs}", "runs"),
        ("chaos: tasks requeued (sum of requeueCount)", f"{sum(r.requeued for r in results)} of {tasks}", "tasks"),
        ("chaos: retries made (faulted Batch requests answered: "
         + ", ".join(f"{k}x{s}" for s, k in sorted(injected.items())) + ")",
         f"{faults} of {requests}", "requests"),
        ("chaos: wall time per run", walls, "s"),
    ]
    figures = {"tasks_per_run": n + 1, "runs": runs, "backend": backend, "pool": pool, "service_options": options,
               "injected_faults": injected, "batch_requests": requests, "per_run": [asdict(r) for r in results]}
    return rows, figures
