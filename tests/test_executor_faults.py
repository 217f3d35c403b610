"""Throttling and transient faults: with the local service answering a fraction of Batch requests with 429 or 503
(Retry-After), a run still completes through azure-core's retry policy (POSTs included)."""

from __future__ import annotations

import pytest
from support.executor_runs import output_of, run_snakemake, write_files

pytestmark = pytest.mark.no_report  # no test here reads a run report


@pytest.mark.parametrize("status", [429, 503])
def test_run_survives_injected_faults(make_service, tmp_path, status):
    service = make_service(fail_fraction=0.25, fail_status=status, seed=7)
    workdir = write_files(
        tmp_path / f"faults{status}",
        {
            "Snakefile": """
                rule all:
                    input: expand("out/{i}.txt", i=range(3))

                rule one:
                    input: "in.txt"
                    output: "out/{i}.txt"
                    shell: "cat {input} > {output}; echo {wildcards.i} >> {output}"
            """,
            "in.txt": "x\n",
        },
    )
    result = run_snakemake(service, workdir, container="faults")
    assert result.returncode == 0, output_of(result)
    assert [(workdir / f"out/{i}.txt").read_text() for i in range(3)] == [f"x\n{i}\n" for i in range(3)]
    operations = service.metrics()["operations"]
    faults = sum(int(op.get("statuses", {}).get(str(status), 0)) for op in operations.values())
    assert faults > 0  # the faults did happen and were retried


def test_preempted_tasks_are_waited_for(make_service, tmp_path):
    service = make_service(preempt_fraction=1.0, seed=3)
    workdir = write_files(
        tmp_path / "preempted",
        {
            "Snakefile": """
                rule all:
                    input: expand("out/{i}.txt", i=range(2))

                rule one:
                    output: "out/{i}.txt"
                    shell: "sleep 1; echo {wildcards.i} > {output}"
            """
        },
    )
    result = run_snakemake(service, workdir, container="preempted", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    assert result.returncode == 0, output_of(result)
    assert [(workdir / f"out/{i}.txt").read_text() for i in range(2)] == ["0\n", "1\n"]
    client = service.batch_client()
    (job,) = client.list_jobs()
    tasks = list(client.list_tasks(job.id))
    assert len(tasks) == 2  # no duplicate submissions: Batch requeued the same tasks
    assert all(t.execution_info.requeue_count >= 1 for t in tasks)


def test_preempted_spot_nodes_are_reported_while_the_run_waits(make_service, tmp_path, monkeypatch):
    """Issue 10: preempted nodes are reported while waiting. The service is in this process: its preempted Spot node
    stays `preempted` for 4 s, so the 0.3 s progress counts see it however loaded the machine is."""
    from snakemake_executor_plugin_azbatch.local.model import pool_management

    monkeypatch.setattr(pool_management, "PREEMPTED_NODE_SECONDS", 4.0)
    service = make_service(preempt_fraction=1.0, seed=3, pools=[])
    client = service.batch_client()
    client.create_pool({
        "id": "spot", "vmSize": "standard_d2s_v3", "taskSlotsPerNode": 1, "targetLowPriorityNodes": 1,
        "virtualMachineConfiguration": service.node_vm,
    })
    workdir = write_files(
        tmp_path / "spot",
        {
            "Snakefile": """
                rule one:
                    output: "out.txt"
                    shell: "sleep 1; echo spot > {output}"
            """
        },
    )
    result = run_snakemake(service, workdir, container="spot", SNAKEMAKE_AZBATCH_POOL_ID="spot",
                           SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL="0.3")
    assert result.returncode == 0, output_of(result)
    assert (workdir / "out.txt").read_text() == "spot\n"
    assert ("azbatch: pool spot: 1 node(s) preempted (Spot); Batch requeues their tasks, which run again when nodes "
            "are available (dedicated nodes are never preempted)") in result.stderr, output_of(result)
