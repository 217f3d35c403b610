"""Benchmarks: this plugin on the local Batch service, side by side with the anchors' request patterns.

Run with `make bench` (or `.venv/bin/python benchmarks/run.py [--quick | --full] [--json PATH] [--sections ...]`).
Every figure comes from one run on this machine: times are wall-clock, CPU and peak RSS come from `os.wait4` on the
measured process, request and byte counts from the local service's metrics (/_local/metrics). The table is printed
and written as JSON (default .azbatch-local/bench/results.json; a run of some --sections keeps the others there,
each section with its own machine and date). Speed is measured here, never asserted in tests.

Sections (issues 10 and 11), in the order they run:
  rehearsal  N tasks (60; --quick 10) through this plugin, then the same tasks replayed with the request patterns
             of snakemake-executor-plugin-azure-batch and of Nextflow's Azure Batch executor (reference_clients.py);
             the same DAG under `--executor local` and `--executor touch`
  example    example_workflow/ through the plugin: Blob requests and bytes per task against the minimum
  service    N `/bin/true` tasks (500; --quick 100) in collections of 100 straight to the service
  chaos      a fan-out + gather (200 + 1 tasks, 5 runs; --quick 20, 1 run) while the service fails 10 % of Batch
             requests (429, 500, 503) and preempts 20 % of running tasks (chaos.py)
  shared-pool two concurrent runs (20 tasks each; --quick 6) on one pool and container, same directory
             (shared_pool.py): outputs exact, no run ended by the other; the node-side input check's cost
  crash-rerun a run killed with SIGKILL mid-run (4 long + 2 short tasks; --quick 2 + 2), then rerun: compute lost
             with adoption and with --azbatch-no-adopt (crash_rerun.py)
  big-file   one file of 1 GiB (--full 4 GiB, --quick 256 MiB) through the plugin's staging and a node (big_files.py)
  first-task time from `snakemake` start to the first task running on `--timing azure` (time scale 0.1, stated
             in the table) for a pre-created idle pool, a pool created from zero with the run's initial demand and a
             pool created with a formula only (first_task.py)
  scale      20,000 tasks (--quick 1,000; fan-out + gather) on the service's simulated backend
             (`--scale-service-options`), and the same DAG under `--executor touch`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from azure.batch import models as batch_models

import big_files
import blob_minimum
import chaos
import crash_rerun
import first_task
import reference_clients
import report_cost
import shared_pool
import workloads
from service_process import ServiceProcess, Traffic, supports

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / ".azbatch-local" / "bench" / "results.json"
# The longest last.
SECTIONS = ("rehearsal", "example", "service", "chaos", "shared-pool", "crash-rerun", "big-file", "first-task",
            "scale")
# The rehearsal's pool: two nodes of four slots (as a small pool of 4-core VMs); tasks there run real processes.
REHEARSAL_POOL = "local:2:4"
# The big file: 1 GiB by default (the plugin's peak RSS does not grow with the file, and 4 GiB take Azurite about
# 8 minutes here); --full moves the 4 GiB of the target.
BIG_FILE_MIB, FULL_BIG_FILE_MIB = 1024, 4096
DEFAULT_SCALE_OPTIONS = "--simulate 1 --pool local:1000:4"
# Snakemake hands a remote executor at most 100 jobs a second by default (--max-jobs-per-timespan 100/1s), and each
# scheduling round costs it time in proportion to every ready job: 20,000 jobs 2,000 at a time took 196 s from the
# first task to the last, in one round a small share of that. The README advises a limit of about the number of
# jobs ready at once; both scale runs get it (touch ignores it: it has no limit and always uses Snakemake's greedy
# scheduler, whose cost grows with the square of the ready jobs).
DEFAULT_SCALE_SNAKEMAKE_ARGS = "--max-jobs-per-timespan 20000/1s"
STATUS_INTERVAL_S = 1.0
EXAMPLE_SOURCES = ["Snakefile", "config.yaml", "scripts"]

Row = tuple[str, str, str]


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    import snakemake

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "snakemake": snakemake.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_s() -> float:
    """CPU time of this benchmark and every process it started and reaped (Snakemake, services, nodes, Azurite)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def per(value: float, n: int, digits: int = 1) -> str:
    return f"{value / n:.{digits}f}" if n else "n/a"


# ---------------------------------------------------------------------------------------------------- rehearsal

def _new_job(client: Any, before: set[str]) -> str:
    jobs = {job.id for job in client.list_jobs(select=["id"])} - before
    if len(jobs) != 1:
        sys.exit(f"benchmarks: expected one Batch job kept by the plugin run, found {sorted(jobs)}")
    return jobs.pop()


def _client_row(name: str, traffic: Traffic, tasks: int, wall_s: float) -> dict[str, Any]:
    return {
        "client": name,
        "tasks": tasks,
        "batch_requests": traffic.total("operations"),
        "batch_bytes": traffic.bytes("operations"),
        "blob_requests": traffic.total("storage"),
        "blob_bytes": traffic.bytes("storage"),
        "wall_s": round(wall_s, 2),
        "batch_operations": traffic.by_operation("operations"),
    }


def bench_rehearsal(work: Path, n: int, cores: int) -> tuple[list[Row], list[dict[str, Any]], dict[str, Any]]:
    """The N-task rehearsal: plugin vs --executor local vs touch, and the plugin vs the anchors' request patterns."""
    plugin_dir = workloads.make_fan_out(work / "plugin", n, input_bytes=64 * 1024)
    local_dir = workloads.fresh_copy(plugin_dir, "local")
    touch_dir = workloads.fresh_copy(plugin_dir, "touch")
    side_by_side = []
    with ServiceProcess(work / "service", [REHEARSAL_POOL]) as service:
        client = service.batch_client()
        jobs_before = {job.id for job in client.list_jobs(select=["id"])}
        env = workloads.plugin_env(service.env, "bench", STATUS_INTERVAL_S, SNAKEMAKE_AZBATCH_KEEP_JOB="true")
        before = service.metrics()
        plugin = workloads.snakemake(plugin_dir, "azbatch", n, env, work / "plugin.log", timeout_s=1800)
        workloads.require_success(plugin, "the rehearsal workflow on the azbatch executor")
        side_by_side.append(_client_row("this plugin (snakemake --executor azbatch)",
                                        Traffic(before, service.metrics()), n, plugin.wall_s))
        # The same tasks, as the plugin defined them, submitted and watched with the anchors' request patterns.
        job_id = _new_job(client, jobs_before)
        job = reference_clients.captured_job(client, job_id)
        tasks = reference_clients.captured_tasks(client, job_id)
        client.begin_delete_job(job_id).result()
        for replay in (reference_clients.replay_upstream_snakemake, reference_clients.replay_nextflow):
            before = service.metrics()
            result = replay(client, service.pool_id, job, tasks, f"replay-{replay.__name__[7:]}-{os.getpid()}",
                            STATUS_INTERVAL_S)
            traffic = Traffic(before, service.metrics())
            if result.failed:
                sys.exit(f"benchmarks: {result.failed} task(s) failed in {result.client}; first: {result.first_failure}")
            side_by_side.append({**_client_row(result.client, traffic, result.tasks, result.wall_s),
                                 "status_rounds": result.rounds})
            if replay is reference_clients.replay_nextflow:  # Nextflow leaves its job (terminated) behind
                client.begin_delete_job(result.job_id).result()
    local = workloads.snakemake(local_dir, "local", cores, dict(os.environ), work / "local.log", timeout_s=1800)
    workloads.require_success(local, "the rehearsal workflow on --executor local")
    touch = workloads.snakemake(touch_dir, "touch", n, dict(os.environ), work / "touch.log", timeout_s=600)
    workloads.require_success(touch, "the rehearsal workflow on --executor touch")
    rows = [
        (f"{n}-task rehearsal: wall time on the local service (azbatch)", f"{plugin.wall_s:.1f}", "s"),
        (f"{n}-task rehearsal: wall time with --executor local ({cores} cores)", f"{local.wall_s:.1f}", "s"),
        (f"{n}-task rehearsal: local service / --executor local", f"{plugin.wall_s / local.wall_s:.1f}", "x"),
        (f"{n}-task rehearsal: plugin process CPU per task", per(plugin.cpu_s * 1000, n, 0), "ms"),
        (f"{n}-task rehearsal: --executor touch CPU per task (same DAG)", per(touch.cpu_s * 1000, n, 0), "ms"),
        (f"{n}-task rehearsal: plugin CPU / touch CPU", f"{plugin.cpu_s / touch.cpu_s:.2f}", "x"),
        (f"{n}-task rehearsal: plugin process peak RSS", f"{plugin.peak_rss_mib:.0f}", "MiB"),
    ]
    figures = {"tasks": n, "pool": REHEARSAL_POOL, "status_interval_s": STATUS_INTERVAL_S,
               "azbatch": plugin.as_dict(), "local": local.as_dict(), "touch": touch.as_dict()}
    return rows, side_by_side, figures


# ---------------------------------------------------------------------------------------------------- example

def bench_example(work: Path) -> tuple[list[Row], dict[str, Any]]:
    workdir = work / "example_workflow"
    shutil.copytree(REPO / "example_workflow", workdir,
                    ignore=shutil.ignore_patterns("results", "logs", "benchmarks", ".snakemake", "__pycache__"))
    with ServiceProcess(work / "service", [REHEARSAL_POOL]) as service:
        env = workloads.plugin_env(service.env, "example", STATUS_INTERVAL_S)
        before = service.metrics()
        run = workloads.snakemake(workdir, "azbatch", 10, env, work / "example.log", timeout_s=1800)
        workloads.require_success(run, "example_workflow on the azbatch executor")
        traffic = Traffic(before, service.metrics())
    nodes = int(REHEARSAL_POOL.split(":")[1])
    minimum = blob_minimum.minimum_traffic(workdir, Path(run.log).read_text(), EXAMPLE_SOURCES, nodes)
    n = minimum.tasks
    blob_requests, blob_bytes = traffic.total("storage"), traffic.bytes("storage")
    rows = [
        ("example workflow: Batch tasks", str(n), "tasks"),
        ("example workflow: wall time", f"{run.wall_s:.1f}", "s"),
        ("example workflow: Batch API requests per task", per(traffic.total("operations"), n), "requests"),
        ("example workflow: Blob requests per task (minimum)",
         f"{per(blob_requests, n)} ({per(minimum.requests, n)})", "requests"),
        ("example workflow: Blob requests per task, plugin side (minimum)",
         f"{per(traffic.total('storagePlugin'), n)} ({per(minimum.plugin_requests, n)})", "requests"),
        ("example workflow: Blob bytes per task (minimum)",
         f"{per(blob_bytes / 1024, n)} ({per(minimum.bytes / 1024, n)})", "KiB"),
        ("example workflow: task definitions sent per task",
         per(traffic.total("operations", "requestBytes") / 1024, n), "KiB"),
    ]
    figures = {"tasks": n, "wall_s": run.wall_s, "blob_requests": blob_requests, "blob_bytes": blob_bytes,
               "minimum_blob_requests": minimum.requests, "minimum_blob_bytes": minimum.bytes,
               "plugin_blob_requests": traffic.total("storagePlugin"),
               "minimum_plugin_blob_requests": minimum.plugin_requests,
               "batch_operations": traffic.by_operation("operations"),
               "blob_operations": traffic.by_operation("storage")}
    return rows, figures


# ---------------------------------------------------------------------------------------------------- service

def bench_service(work: Path, n: int) -> tuple[list[Row], dict[str, Any]]:
    """Submit n trivial tasks in collections of 100, wait until all completed, then time paged listing."""
    with ServiceProcess(work / "service", [REHEARSAL_POOL]) as service:
        client = service.batch_client()
        job_id = f"bench-{os.getpid()}"
        client.create_job(batch_models.BatchJobCreateOptions(
            id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id=service.pool_id)))
        tasks = [batch_models.BatchTaskCreateOptions(id=f"t{i:05d}", command_line="/bin/true") for i in range(n)]
        start = time.perf_counter()
        for i in range(0, n, 100):
            client.create_task_collection(job_id, batch_models.BatchTaskGroup(task_values=tasks[i: i + 100]))
        submitted = time.perf_counter() - start
        while client.get_job_task_counts(job_id).task_counts.completed < n:
            time.sleep(0.2)
        finished = time.perf_counter() - start
        list_start = time.perf_counter()
        rounds = 5
        for _ in range(rounds):
            listed = sum(1 for _ in client.list_tasks(job_id, filter="state eq 'completed'", select=["id", "state"]))
        list_s = (time.perf_counter() - list_start) / rounds
        client.begin_delete_job(job_id).result()
    rows = [
        (f"service: submit {n} tasks (add-task-collection of 100)", f"{submitted:.2f}", "s"),
        (f"service: {n} /bin/true tasks run to completion", f"{finished:.1f}", "s"),
        ("service: task throughput (real processes)", f"{n / finished:.0f}", "tasks/s"),
        (f"service: list {listed} completed tasks ($filter, $select, paged)", f"{list_s * 1000:.0f}", "ms"),
    ]
    return rows, {"tasks": n, "submit_s": submitted, "complete_s": finished, "list_s": list_s}


# ---------------------------------------------------------------------------------------------------- scale

def _submission_span(service: ServiceProcess, started: datetime) -> dict[str, float]:
    """From the kept job's tasks' creationTime (Batch's clock, this machine): seconds from Snakemake's start to the
    first and to the last task created, and the number of tasks."""
    client = service.batch_client()
    (job_id,) = [job.id for job in client.list_jobs(select=["id"])]
    created = sorted(task.creation_time for task in client.list_tasks(job_id, select=["id", "creationTime"]))
    client.begin_delete_job(job_id).result()
    return {"tasks": len(created), "first_task_s": (created[0] - started).total_seconds(),
            "last_fan_out_task_s": (created[-2] - started).total_seconds(),
            "fan_out_submission_s": (created[-2] - created[0]).total_seconds()}


def bench_scale(work: Path, n: int, options: list[str], snakemake_args: list[str]) -> tuple[list[Row], dict[str, Any]]:
    """n fan-out tasks and a gather over all their outputs, on the service started with `options`; both
    Snakemake runs (plugin, touch) get `snakemake_args`."""
    label = f"{n} tasks (fan-out + gather) on {' '.join(options) or 'the default backend'}"
    missing = [opt for opt in options if opt.startswith("--") and not supports(opt)]
    if missing:
        reason = f"n/a (no simulated backend: azbatch-local serve has no {' '.join(missing)})"
        return [(f"scale: {label}", reason, "")], {"tasks": n, "options": options, "skipped": reason}
    plugin_dir = workloads.make_fan_out_gather(work / "plugin", n)
    touch_dir = workloads.fresh_copy(plugin_dir, "touch")
    with ServiceProcess(work / "service", [], options) as service:
        env = workloads.plugin_env(service.env, "scale", STATUS_INTERVAL_S, SNAKEMAKE_AZBATCH_KEEP_JOB="true")
        before = service.metrics()
        started = datetime.now(timezone.utc)
        plugin = workloads.snakemake(plugin_dir, "azbatch", n, env, work / "plugin.log", timeout_s=3600,
                                     extra=snakemake_args)
        traffic = Traffic(before, service.metrics())
        if plugin.returncode != 0:
            reason = f"failed (exit {plugin.returncode}; log {plugin.log})"
            return [(f"scale: {label}", reason, "")], {"tasks": n, "options": options, "failed": plugin.as_dict()}
        submission = _submission_span(service, started)
    report, report_figures = report_cost.report_rows(plugin_dir, traffic, n + 1)
    touch = workloads.snakemake(touch_dir, "touch", n, dict(os.environ), work / "touch.log", timeout_s=3600,
                                extra=snakemake_args)
    workloads.require_success(touch, "the scale workflow on --executor touch")
    tasks = n + 1
    requests = traffic.total("operations") + traffic.total("storage")
    rows = [
        (f"scale: {label}: wall time", f"{plugin.wall_s:.1f}", "s"),
        (f"scale: {n} fan-out tasks submitted: first to last task created", f"{submission['fan_out_submission_s']:.1f}",
         "s"),
        ("scale: Snakemake start to first / last fan-out task created",
         f"{submission['first_task_s']:.1f} / {submission['last_fan_out_task_s']:.1f}", "s"),
        ("scale: plugin CPU per task", per(plugin.cpu_s * 1000, tasks, 2), "ms"),
        ("scale: --executor touch CPU per task (same DAG)", per(touch.cpu_s * 1000, tasks, 2), "ms"),
        ("scale: plugin CPU / touch CPU", f"{plugin.cpu_s / touch.cpu_s:.2f}", "x"),
        ("scale: Batch requests per task", per(traffic.total("operations"), tasks, 2), "requests"),
        ("scale: requests per task, Batch + Blob (plugin and nodes)", per(requests, tasks, 2), "requests"),
        ("scale: requests per task, Batch + Blob (plugin side)",
         per(traffic.total("operations") + traffic.total("storagePlugin"), tasks, 2), "requests"),
        ("scale: plugin process peak RSS", f"{plugin.peak_rss_mib:.0f}", "MiB"),
        *report,
    ]
    figures = {"tasks": tasks, "options": options, "snakemake_args": snakemake_args, "submission": submission,
               "azbatch": plugin.as_dict(), "touch": touch.as_dict(),
               "batch_operations": traffic.by_operation("operations"),
               "blob_operations": traffic.by_operation("storage"), "report": report_figures}
    return rows, figures


# ---------------------------------------------------------------------------------------------------- output

def print_rows(title: str, rows: list[Row]) -> None:
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"\n{title}")
    for name, value, unit in rows:
        print(f"  {name:<{width}}  {value:>{value_width}}  {unit}")


def print_side_by_side(entries: list[dict[str, Any]]) -> None:
    header = ("client", "Batch req", "req/task", "Batch KiB/task", "Blob req", "wall s")
    table = [header] + [
        (e["client"], str(e["batch_requests"]), per(e["batch_requests"], e["tasks"], 2),
         per(e["batch_bytes"] / 1024, e["tasks"]), str(e["blob_requests"]), f"{e['wall_s']:.1f}")
        for e in entries
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"\nSide by side: the same {entries[0]['tasks']} tasks on the same service, status rounds every "
          f"{STATUS_INTERVAL_S:g} s. The replays' wall time runs from job creation (no Snakemake, no staging); their "
          "Blob requests are the nodes' alone (inputs already staged, outputs not downloaded).")
    for row in table:
        print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run of a couple of minutes)")
    parser.add_argument("--full", action="store_true",
                        help=f"the issue's full sizes where the default is smaller: a {FULL_BIG_FILE_MIB} MiB big file")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results (default "
                        f"{DEFAULT_JSON.relative_to(REPO)}); with --sections, the other sections already there stay")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run")
    parser.add_argument("--scale-tasks", type=int, default=None, help="fan-out tasks of the scale row (20000)")
    parser.add_argument("--scale-service-options", default=DEFAULT_SCALE_OPTIONS,
                        help=f"azbatch-local serve options of the scale row (default {DEFAULT_SCALE_OPTIONS!r})")
    parser.add_argument("--scale-snakemake-args", default=DEFAULT_SCALE_SNAKEMAKE_ARGS,
                        help=f"Snakemake options of both scale runs (default {DEFAULT_SCALE_SNAKEMAKE_ARGS!r})")
    parser.add_argument("--big-file-mib", type=int, default=None,
                        help=f"size of the big file ({BIG_FILE_MIB}; --full {FULL_BIG_FILE_MIB}; --quick 256)")
    parser.add_argument("--chaos-tasks", type=int, default=None, help="fan-out tasks of a chaos run (200; --quick 20)")
    parser.add_argument("--chaos-runs", type=int, default=None, help="chaos runs (5; --quick 1)")
    parser.add_argument("--chaos-backend", choices=("simulate", "host"), default="simulate",
                        help="chaos runs on simulated nodes (default) or real host processes")
    parser.add_argument("--first-task-scale", type=float, default=first_task.TIME_SCALE,
                        help=f"--time-scale of the first-task section (default {first_task.TIME_SCALE:g})")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the working directory (logs, services' roots); it is always kept on failure")
    return parser.parse_args()


def run_section(section: str, work: Path, args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    quick = args.quick
    if section == "rehearsal":
        rows, side_by_side, figures = bench_rehearsal(work, 10 if quick else 60, len(os.sched_getaffinity(0)))
        figures["side_by_side"] = side_by_side
        return rows, figures
    if section == "example":
        return bench_example(work)
    if section == "service":
        return bench_service(work, 100 if quick else 500)
    if section == "scale":
        return bench_scale(work, args.scale_tasks or (1000 if quick else 20000),
                           shlex.split(args.scale_service_options), shlex.split(args.scale_snakemake_args))
    if section == "chaos":
        return chaos.bench_chaos(work, args.chaos_tasks or (20 if quick else 200), args.chaos_runs or
                                 (1 if quick else 5), args.chaos_backend)
    if section == "first-task":
        return first_task.bench_first_task(work, args.first_task_scale)
    if section == "shared-pool":
        return shared_pool.bench_shared_pool(work, 6 if quick else 20)
    if section == "crash-rerun":
        return crash_rerun.bench_crash_rerun(work, 2 if quick else 4, 2)
    mib = args.big_file_mib or (256 if quick else FULL_BIG_FILE_MIB if args.full else BIG_FILE_MIB)
    with ServiceProcess(work / "service", [REHEARSAL_POOL]) as service:
        return big_files.bench_big_file(service, work / "files", mib * 1024**2)


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "full": args.full, "sections": {}}
    if set(args.sections) != set(SECTIONS) and args.json.exists():
        # A partial run (e.g. one row again after a change) keeps the other sections, each with its own date.
        kept = json.loads(args.json.read_text()).get("sections", {})
        results["sections"] = {name: data for name, data in kept.items() if name not in args.sections}
    printed: list[tuple[str, list[Row]]] = []
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="azbatch-bench-"))
    for section in args.sections:
        section_start, section_cpu = time.perf_counter(), cpu_s()
        print(f"benchmarks: {section} ... (work directory {work})", file=sys.stderr, flush=True)
        rows, figures = run_section(section, work / section, args)
        figures["section_wall_s"] = round(time.perf_counter() - section_start, 1)
        figures["section_cpu_s"] = round(cpu_s() - section_cpu, 1)
        results["sections"][section] = {"rows": [list(r) for r in rows], "figures": figures,
                                        "machine": results["machine"]}
        printed.append((section, rows))
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)  # only after success: a failure leaves it for its logs
    results["total_wall_s"] = round(time.perf_counter() - started, 1)
    results["total_cpu_s"] = round(cpu_s(), 1)
    m = results["machine"]
    print(f"\nMachine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, load average at start "
          f"{m['load_average_at_start'][0]}; Python {m['python']}, Snakemake {m['snakemake']}; {m['date']}")
    for section, rows in printed:
        print_rows(section, rows)
        side_by_side = results["sections"][section]["figures"].get("side_by_side")
        if side_by_side:
            print_side_by_side(side_by_side)
    print(f"\nTotal {results['total_wall_s']:.0f} s wall, {results['total_cpu_s']:.0f} s CPU (the benchmark and all it "
          f"started); JSON: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
