"""Time to first task on Azure's timing (issue 22): from `snakemake` start to the first task running, on
`azbatch-local --timing azure --time-scale S`, for three pools:

- a pre-created idle pool (the service's own `--pool`, its nodes up before the run starts);
- a pool the run creates from zero with the plugin's generated formula, whose first evaluation (at creation)
  already asks for the ready tasks' nodes;
- a pool the run creates with a formula only (`--azbatch-pool-autoscale-formula`, the way Nextflow creates its
  pools): its evaluation at creation sees no sample, so nodes come only after the next evaluation.

Each time is also given as an estimate in Azure's time: the idle pool's time (Snakemake's and the plugin's own
start-up, which the scale does not touch) plus the rest divided by the scale."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import workloads
from service_process import ServiceProcess

TIME_SCALE = 0.1  # a 5-minute autoscale interval takes 30 s, an allocation 6-18 s
TASKS = 4
# Formula only: nodes for the pending tasks of the latest sample (none at creation: the evaluation there fails).
FORMULA_ONLY = ("$pending = max($PendingTasks.GetSample(1));\n"
                "$TargetDedicatedNodes = min(4, $pending);\n"
                "$NodeDeallocationOption = taskcompletion;")
SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))
rule work:
    output: "out/{{i}}.txt"
    shell: "sleep 1; echo $AZ_BATCH_NODE_ID > {{output}}"
"""


def _image_env(client: Any, pool_id: str) -> dict[str, str]:
    """The settings that make a created pool claim the image the service's nodes are (it refuses others)."""
    vm = client.get_pool(pool_id).virtual_machine_configuration
    ref = vm.image_reference
    return {"SNAKEMAKE_AZBATCH_POOL_IMAGE": f"{ref.publisher}:{ref.offer}:{ref.sku}",
            "SNAKEMAKE_AZBATCH_POOL_NODE_AGENT": vm.node_agent_sku_id}


def _first_task_s(client: Any, label: str, started: datetime) -> float:
    """Seconds from `started` to the earliest task start of the run's kept Batch job (then deleted)."""
    (job_id,) = [job.id for job in client.list_jobs(select=["id"]) if job.id.startswith(f"sm-{label}-")]
    starts = [t.execution_info.start_time for t in client.list_tasks(job_id, select=["id", "executionInfo"])
              if t.execution_info is not None and t.execution_info.start_time is not None]
    client.begin_delete_job(job_id).result()
    return (min(starts) - started).total_seconds()


def _run(service: ServiceProcess, work: Path, label: str, **settings: str) -> dict[str, Any]:
    workdir = work / label
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(SNAKEFILE.format(n=TASKS))
    env = workloads.plugin_env(service.env, label, 1.0, SNAKEMAKE_AZBATCH_KEEP_JOB="true",
                               SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL="5", **settings)
    started = datetime.now(timezone.utc)
    run = workloads.snakemake(workdir, "azbatch", TASKS, env, work / f"{label}.log", timeout_s=900)
    workloads.require_success(run, f"the time-to-first-task run '{label}'")
    return {"first_task_s": round(_first_task_s(service.batch_client(), label, started), 1),
            "wall_s": round(run.wall_s, 1)}


def bench_first_task(work: Path, scale: float = TIME_SCALE) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    options = ["--timing", "azure", "--time-scale", str(scale), "--seed", "22"]
    with ServiceProcess(work / "service", ["ready:1:1"], options) as service:
        created = {"SNAKEMAKE_AZBATCH_POOL_VM_SIZE": "standard_d2s_v3", "SNAKEMAKE_AZBATCH_POOL_SLOTS": "1",
                   **_image_env(service.batch_client(), "ready")}
        cases = {
            "pre-created idle pool": _run(service, work, "idle", SNAKEMAKE_AZBATCH_POOL_ID="ready"),
            "pool created from zero, initial demand": _run(
                service, work, "demand", SNAKEMAKE_AZBATCH_POOL_ID="demand", SNAKEMAKE_AZBATCH_POOL_AUTOSCALE="0-4",
                **created),
            "pool created with a formula only": _run(
                service, work, "formula", SNAKEMAKE_AZBATCH_POOL_ID="formula",
                SNAKEMAKE_AZBATCH_POOL_AUTOSCALE_FORMULA=FORMULA_ONLY, **created),
        }
    # Snakemake's and the plugin's own start-up are not scaled: the idle pool's time is that alone, so the Azure
    # estimate scales only what comes after it.
    idle = cases["pre-created idle pool"]["first_task_s"]
    rows = []
    for name, case in cases.items():
        azure = idle + (case["first_task_s"] - idle) / scale
        case["azure_estimate_s"] = round(azure, 1)
        rows.append((f"first task (--timing azure --time-scale {scale:g}): {name}",
                     f"{case['first_task_s']:.1f} (~{azure / 60:.1f})", "s (Azure min)"))
    return rows, {"time_scale": scale, "tasks": TASKS, "formula_only": FORMULA_ONLY, "cases": cases}
