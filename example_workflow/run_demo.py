"""Run this example through `snakemake --executor azbatch`, then show where the results are and what ran where.

Meant to run inside `azbatch-local run -- python run_demo.py` (what `make demo` does), which exports the
SNAKEMAKE_AZBATCH_* settings of the local Batch service. Against real Azure, export those settings yourself (see
README.md) and run `python run_demo.py` the same way (the summarize step needs matplotlib on the nodes). Extra
arguments go to snakemake unchanged.
Exits with snakemake's exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from snakemake_executor_plugin_azbatch.config import Config, SettingsError, resolve

HERE = Path(__file__).resolve().parent
RESULTS = [
    "results/summary/samples.tsv",
    "results/summary/variants.tsv",
    "results/summary/coverage.png",
    "results/random_md5/all.txt",
]


def batch_client(config: Config) -> BatchClient:
    """A Batch client with the plugin's own credentials: shared key when one is set, else Microsoft Entra ID."""
    if config.account.key:
        credential = AzureNamedKeyCredential(config.account.name, config.account.key)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BatchClient(config.account.url, credential)


def job_ids(client: BatchClient) -> set[str]:
    return {job.id for job in client.list_jobs(select=["id"])}


def exit_code_text(task) -> str:
    info = task.execution_info
    return "-" if info is None or info.exit_code is None else str(info.exit_code)


def print_task_table(client: BatchClient, new_jobs: list[str]) -> None:
    if not new_jobs:
        print("No Batch job of this run is left to list (was --azbatch-keep-job given?).")
        return
    for job_id in new_jobs:
        tasks = sorted(client.list_tasks(job_id), key=lambda t: (t.creation_time is None, str(t.creation_time), t.id))
        print(f"\nWhat ran where: Batch job {job_id}, {len(tasks)} tasks")
        # The Snakemake job (display name) goes last: it may contain spaces.
        header = ("task id", "node", "state", "exit", "snakemake job")
        rows = [
            (
                task.id,
                task.node_info.node_id if task.node_info else "-",
                str(getattr(task.state, "value", task.state) or "-"),
                exit_code_text(task),
                task.display_name or "",
            )
            for task in tasks
        ]
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
        print(
            f"  Task output on Batch: az batch task file download --job-id {job_id} --task-id TASK_ID "
            "--file-path stdout.txt --destination ./stdout.txt"
        )


def print_traffic() -> None:
    """The local service counts every Batch and Blob request; show the totals (real Azure bills per request)."""
    url = os.environ.get("AZBATCH_LOCAL_METRICS_URL")
    if not url or not url.startswith("http://127.0.0.1"):
        return
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            metrics = json.load(response)
    except OSError as exc:
        print(f"(could not read the local service's request counts: {exc})")
        return
    batch = metrics.get("operations", {})
    storage = metrics.get("storage", {})
    uploaded = sum(op.get("requestBytes", 0) for op in storage.values())
    downloaded = sum(op.get("responseBytes", 0) for op in storage.values())
    print(
        f"\nTraffic: {sum(op.get('count', 0) for op in batch.values())} Batch API requests, "
        f"{sum(op.get('count', 0) for op in storage.values())} Blob requests "
        f"({uploaded / 1e6:.2f} MB up, {downloaded / 1e6:.2f} MB down)"
    )


def run_report(started: float) -> Path | None:
    """The report.html the plugin wrote for this run (it also prints `azbatch: run report: PATH`)."""
    reports = HERE / ".snakemake" / "azbatch" / "reports"
    found = [p for p in reports.glob("*/report.html") if p.stat().st_mtime >= started]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="how many Batch tasks may be queued at once")
    args, snakemake_args = parser.parse_known_args()
    try:
        # The plugin's own reading of SNAKEMAKE_AZBATCH_* and the Azure CLI variables.
        config = resolve(None)
    except SettingsError as error:
        print(
            f"run_demo.py: {error}. Run `make demo` from the repository root, or "
            "`azbatch-local run -- python run_demo.py` from example_workflow/",
            file=sys.stderr,
        )
        return 2
    client = batch_client(config)
    jobs_before = job_ids(client)
    command = [
        sys.executable, "-m", "snakemake",
        "--executor", "azbatch",
        "--jobs", str(args.jobs),
        "--azbatch-keep-job",  # keep the Batch job so its tasks can be listed below
        "--forceall",  # a demo re-runs everything, so every run shows the whole pipeline on Batch
        "--printshellcmds",
        *snakemake_args,
    ]
    print("Running:", " ".join(command[1:]), flush=True)
    started = time.time()
    status = subprocess.run(command, cwd=HERE).returncode
    report = run_report(started)

    new_jobs = sorted(job_ids(client) - jobs_before)
    print_task_table(client, new_jobs)
    print_traffic()
    print("\nResults:")
    for name in RESULTS:
        path = HERE / name
        print(f"  {path}{'' if path.exists() else '  (missing)'}")
    print("Logs:")
    print(f"  per-rule logs:    {HERE / 'logs'}")
    print(f"  benchmarks:       {HERE / 'benchmarks'}")
    print(f"  snakemake's log:  {HERE / '.snakemake' / 'log'} (newest file)")
    print(f"  failed tasks' Batch stdout/stderr: {HERE / '.snakemake' / 'azbatch' / 'logs'}/TASK_ID/")
    if report is not None:
        print(f"  run report:       {report} (timeline, per-rule table; tasks.tsv next to it)")
    if os.environ.get("AZBATCH_LOCAL_ROOT"):
        print(f"  local service:    {os.environ['AZBATCH_LOCAL_ROOT']} (nodes' task directories, metrics.json)")
    summary = HERE / RESULTS[0]
    if status == 0 and summary.exists():
        print("\nSummary table (" + RESULTS[0] + "):")
        print("  " + summary.read_text().rstrip().replace("\n", "\n  "))
    hashes = HERE / RESULTS[3]
    if status == 0 and hashes.exists():
        print("\nThe az batch tutorial, as rules (" + RESULTS[3] + "):")
        print("  " + hashes.read_text().rstrip().replace("\n", "\n  "))
    if status != 0:
        print(f"\nsnakemake failed (exit status {status}); see the logs above.", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
