"""The plugin creates its pool when asked: an autoscaling Spot pool whose first evaluation already asks for the
ready tasks' nodes, nodes that leave when idle, the pool deleted at the end (or kept), the preflight line with
prices; a pool whose image cannot run the bootstrap stops the run in one line before anything is created."""

from __future__ import annotations

import subprocess
import threading

import pytest
from azure.core.exceptions import ResourceNotFoundError
from support.executor_runs import count, output_of, run_snakemake, snakemake_command, snakemake_env, write_files

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text

from support.waiting import wait_for

pytestmark = pytest.mark.no_report  # no test here reads a run report

SNAKEFILE = """
    rule all:
        input: expand("out/{i}.txt", i=range(4))

    rule work:
        output: "out/{i}.txt"
        shell: "sleep 2; echo $AZ_BATCH_NODE_ID > {output}"
"""

LONG_SNAKEFILE = """
    rule all:
        input: expand("out/{i}.txt", i=range(2))

    rule work:
        output: "out/{i}.txt"
        shell: "sleep 417.25; echo done > {output}"
"""


@pytest.fixture
def service(make_service):
    return make_service(pools=["local:1:1"], autoscale_min_interval=1.0, autoscale_sample_seconds=0.2)


class PoolWatcher:
    """Polls the pool while snakemake runs: the Spot/dedicated node counts and autoscale runs seen."""

    def __init__(self, client, pool_id: str) -> None:
        self.client, self.pool_id = client, pool_id
        self.spot_counts: list[int] = []
        self.dedicated_counts: list[int] = []
        self.evaluations: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                pool = self.client.get_pool(self.pool_id)
            except ResourceNotFoundError:
                continue
            self.spot_counts.append(pool.current_low_priority_nodes)
            self.dedicated_counts.append(pool.current_dedicated_nodes)
            run = pool.auto_scale_run
            self.evaluations.add(f"{run.timestamp} {run.results or run.error.code}")

    def __enter__(self) -> "PoolWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def pool_settings(service, pool_id: str, **extra: str) -> dict[str, str]:
    return {
        "SNAKEMAKE_AZBATCH_POOL_ID": pool_id,
        "SNAKEMAKE_AZBATCH_POOL_VM_SIZE": "standard_d2s_v3",
        **service.pool_image_env(),  # the image the service's nodes really are (it refuses others)
        "SNAKEMAKE_AZBATCH_POOL_AUTOSCALE": "0-3",
        "SNAKEMAKE_AZBATCH_POOL_SPOT": "true",
        "SNAKEMAKE_AZBATCH_POOL_SLOTS": "1",
        "SNAKEMAKE_AZBATCH_POOL_AUTOSCALE_INTERVAL": "0.02",  # 1.2 s; the service allows 1 s
        **extra,
    }


def test_autoscaling_spot_pool_is_created_used_and_deleted(service, tmp_path) -> None:
    """The evaluation interval (10 min) outlasts the run: its nodes can only come from the evaluation at creation,
    which sees no sample yet and so targets the 4 ready tasks (capped at 3 nodes)."""
    workdir = write_files(tmp_path / "spot", {"Snakefile": SNAKEFILE})
    client = service.batch_client()
    settings = pool_settings(service, "spot-run", SNAKEMAKE_AZBATCH_PRICE_NODE_HOUR="0.19,0.04",
                             SNAKEMAKE_AZBATCH_POOL_AUTOSCALE_INTERVAL="10")
    with PoolWatcher(client, "spot-run") as watcher:
        result = run_snakemake(service, workdir, container="spot", **settings)
    assert result.returncode == 0, output_of(result)
    text = result.stdout + result.stderr
    image = settings["SNAKEMAKE_AZBATCH_POOL_IMAGE"]
    assert (f"azbatch: creating pool spot-run: standard_d2s_v3, 1 task slot(s) per node, {image}, autoscale 0-3 "
            "Spot nodes on pending tasks (every 10 min); deleted at the end of the run; 0.19 per dedicated "
            "node-hour, 0.04 per Spot node-hour") in text, output_of(result)
    assert "azbatch: deleted pool spot-run (created by this run)" in text
    assert len(watcher.evaluations) == 1, watcher.evaluations  # only the one at creation
    assert "$TargetLowPriorityNodes=3;" in next(iter(watcher.evaluations)), watcher.evaluations
    assert max(watcher.spot_counts) >= 2 and set(watcher.dedicated_counts) == {0}, watcher.spot_counts
    assert sorted(p.name for p in (workdir / "out").iterdir()) == [f"{i}.txt" for i in range(4)]
    with pytest.raises(ResourceNotFoundError):
        client.get_pool("spot-run")
    assert [p.id for p in client.list_pools()] == ["local"]  # the service's own pool is never touched


def test_created_pool_is_kept_and_shrinks_when_idle(service, tmp_path) -> None:
    workdir = write_files(tmp_path / "kept", {"Snakefile": SNAKEFILE})
    client = service.batch_client()
    result = run_snakemake(service, workdir, container="kept",
                           **pool_settings(service, "kept-run", SNAKEMAKE_AZBATCH_KEEP_POOL="true"))
    assert result.returncode == 0, output_of(result)
    assert "azbatch: kept pool kept-run (created by this run)" in result.stdout + result.stderr
    pool = client.get_pool("kept-run")
    assert pool.enable_auto_scale and "$NodeDeallocationOption=taskcompletion" in pool.auto_scale_run.results
    wait_for(lambda: client.get_pool("kept-run").current_low_priority_nodes == 0, 60,
             lambda: f"idle Spot nodes never left: {client.get_pool('kept-run').as_dict()}")
    # A second run finds the pool: it uses it and never deletes a pool it did not create.
    (workdir / "out").rename(workdir / "first")
    again = run_snakemake(service, workdir, container="kept", **pool_settings(service, "kept-run"))
    assert again.returncode == 0, output_of(again)
    assert "azbatch: pool kept-run exists; it is used as it is" in again.stdout + again.stderr
    assert client.get_pool("kept-run").state == "active"


def test_pool_settings_without_a_vm_size_are_one_clear_line(service, tmp_path) -> None:
    workdir = write_files(tmp_path / "bad", {"Snakefile": SNAKEFILE})
    result = run_snakemake(service, workdir, container="bad", SNAKEMAKE_AZBATCH_POOL_AUTOSCALE="0-3")
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error: azbatch:")]
    assert lines == ["Error: azbatch: --azbatch-pool-autoscale only applies to a pool the run creates; set "
                     "--azbatch-pool-vm-size too (e.g. standard_d4s_v3)"], output_of(result)
    assert "Traceback" not in result.stderr


def test_a_pool_other_runs_use_outlives_its_run_and_its_deletion_ends_a_run(service, tmp_path) -> None:
    """Run A creates a pool; another run's Batch job (made with the SDK) uses it when A ends, so A leaves the pool
    and says how to delete it. Run C then uses the pool; deleting it mid-run ends C within a minute with one line
    naming the pool, C's Batch jobs terminated. C's heartbeat (every second here) costs a Jobs_UpdateJob each."""
    client = service.batch_client()
    workdir = write_files(tmp_path / "creator", {"Snakefile": SNAKEFILE})
    creator = subprocess.Popen(snakemake_command(), cwd=workdir, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               env=snakemake_env(service, "creator", **pool_settings(service, "shared")))
    try:
        wait_for(lambda: any(p.id == "shared" for p in client.list_pools()), 60, "the pool run A creates")
        client.create_job({"id": "another-run", "poolInfo": {"poolId": "shared"}})
        text, _ = creator.communicate(timeout=180)
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.communicate()
    assert creator.returncode == 0, text
    assert ("azbatch: pool shared (created by this run) is left: 1 active Batch job(s) of other runs use it "
            "(another-run); delete it once they are done with `az batch pool delete --pool-id shared`") in text, text
    assert "deleted pool shared" not in text
    assert client.get_pool("shared").state == "active"

    before = service.metrics()
    later = write_files(tmp_path / "user", {"Snakefile": LONG_SNAKEFILE})
    env = snakemake_env(service, "user", **pool_settings(service, "shared"), SNAKEMAKE_AZBATCH_KEEP_JOB="true",
                        SNAKEMAKE_AZBATCH_HEARTBEAT_INTERVAL="1", SNAKEMAKE_AZBATCH_HEARTBEAT_STALE="5")
    user = subprocess.Popen(snakemake_command(), cwd=later, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        def running():
            jobs = [j for j in client.list_jobs() if j.id.startswith("sm-user-")]
            return jobs and any(enum_text(t.state) == "running" for t in client.list_tasks(jobs[0].id)) and jobs[0]

        job = wait_for(running, 120, "a running task of run C", interval=0.5)
        client.begin_delete_pool("shared", polling_interval=1)
        text, _ = user.communicate(timeout=60)  # the run ends within a minute of the deletion
    finally:
        if user.poll() is None:
            user.kill()
            user.communicate()
    assert user.returncode != 0, text
    lines = [line for line in text.splitlines() if "pool shared" in line and "deleted outside this run" in line]
    assert len(lines) == 1, text
    assert "its tasks cannot run, so the run ends and its Batch jobs are terminated" in lines[0], text
    assert "Traceback" not in text
    assert enum_text(client.get_job(job.id).state) == "completed", text
    assert count(service.metrics(), "operations", "Jobs_UpdateJob") > count(before, "operations", "Jobs_UpdateJob")


def test_a_pool_image_too_old_for_the_bootstrap_stops_the_run_before_anything_is_created(service, make_service,
                                                                                        tmp_path) -> None:
    """With the pip bootstrap, a pool whose image's python3 is 3.10 cannot run Snakemake 9: a pool to create is
    refused before Pools_AddPool, an existing one (a simulated service's, which stands in for any image) before
    any Batch job; one line each."""
    client = service.batch_client()
    workdir = write_files(tmp_path / "old", {"Snakefile": SNAKEFILE})
    settings = {k: v for k, v in pool_settings(service, "old-run").items() if k != "SNAKEMAKE_AZBATCH_POOL_NODE_AGENT"}
    before = service.metrics()
    result = run_snakemake(service, workdir, container="old", **{**settings,
                                                                 "SNAKEMAKE_AZBATCH_POOL_IMAGE": "ubuntu-22.04"})
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error: azbatch:")]
    assert lines == ["Error: azbatch: pool 'old-run' would be created with canonical/0001-com-ubuntu-server-jammy/"
                     "22_04-lts, whose python3 3.10 is older than --azbatch-bootstrap pip needs (Snakemake 9: >= "
                     "3.11); nothing was created. Use --azbatch-pool-image ubuntu-24.04 (the default), or "
                     "--azbatch-bootstrap container with an image"], output_of(result)
    assert "Traceback" not in result.stderr and "creating pool" not in result.stdout + result.stderr
    with pytest.raises(ResourceNotFoundError):
        client.get_pool("old-run")
    assert count(service.metrics(), "operations", "Pools_AddPool") == count(before, "operations", "Pools_AddPool")
    assert not [j.id for j in client.list_jobs() if j.id.startswith("sm-old-")]

    simulated = make_service(simulate=0.1, pools=[])
    sim_client = simulated.batch_client()
    sim_client.create_pool({"id": "jammy", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
                            "virtualMachineConfiguration": {
                                "imageReference": {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy",
                                                   "sku": "22_04-lts", "version": "latest"},
                                "nodeAgentSKUId": "batch.node.ubuntu 22.04"}})
    existing = run_snakemake(simulated, workdir, container="old", SNAKEMAKE_AZBATCH_POOL_ID="jammy")
    assert existing.returncode != 0
    lines = [line for line in (existing.stdout + existing.stderr).splitlines() if line.startswith("Error: azbatch:")]
    assert len(lines) == 1 and lines[0].startswith(
        "Error: azbatch: pool 'jammy' runs canonical/0001-com-ubuntu-server-jammy/22_04-lts, whose python3 3.10 is "
        "older than --azbatch-bootstrap pip needs"), output_of(existing)
    assert list(sim_client.list_jobs()) == []
