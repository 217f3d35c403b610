"""The plugin while its pools take Azure's time and meet Azure's limits (`azbatch-local --timing azure` at a scaled
time): three full runs that share their facts.

- a created fixed pool whose resize is slow and stops at the VM family's core quota part-way: progress says what it
  waits for, the quota stop is one warning naming the `az` command, the run finishes on the nodes it got;
- a pool whose family has a quota of 0: one line within a minute, the run's Batch jobs ended, nothing left active;
- an autoscaling Spot pool created from zero during a Spot shortage: the AllocationFailed stop said once, progress
  waits for the next autoscale evaluation, and the run finishes once capacity is back.
Pure parts (the lines themselves) are checked without a service at the end."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from support.executor_runs import output_of, run_snakemake, write_files

from snakemake_executor_plugin_azbatch.azure_api.azure_sdk import enum_text
from snakemake_executor_plugin_azbatch.run.resize_watch import PoolAllocation, ResizeWatch, quota_family

pytestmark = pytest.mark.no_report  # no test here reads a run report

SCALE = 0.02  # allocation 1.2-3.6 s, start-up 1.2-3 s, PT5M → 6 s
SNAKEFILE = """
    rule all:
        input: expand("out/{i}.txt", i=range(4))

    rule work:
        output: "out/{i}.txt"
        shell: "sleep 1; echo $AZ_BATCH_NODE_ID > {output}"
"""
WATCH = {"SNAKEMAKE_AZBATCH_PROGRESS_INTERVAL": "0.5", "SNAKEMAKE_AZBATCH_HEARTBEAT_INTERVAL": "1",
         "SNAKEMAKE_AZBATCH_HEARTBEAT_STALE": "60"}


@pytest.fixture(scope="module")
def quota_service(tmp_path_factory):
    from snakemake_executor_plugin_azbatch.local.service_config import parse_quotas
    from support.services import start_service

    handle = start_service(tmp_path_factory.mktemp("quota-runs"), {
        "timing": "azure", "time_scale": SCALE, "pools": ["local:0:1"],
        "quotas": parse_quotas("standardDSv3Family=4,standardESv3Family=0")})
    yield handle
    handle.stop()


def created_pool(service, pool_id: str, size: str, **extra: str) -> dict[str, str]:
    return {"SNAKEMAKE_AZBATCH_POOL_ID": pool_id, "SNAKEMAKE_AZBATCH_POOL_VM_SIZE": size,
            **service.pool_image_env(), "SNAKEMAKE_AZBATCH_POOL_SLOTS": "1", **WATCH, **extra}


def lines_with(text: str, *parts: str) -> list[str]:
    return [line for line in text.splitlines() if all(p in line for p in parts)]


def test_a_slow_resize_stopped_by_a_core_quota_runs_on_the_nodes_it_got(quota_service, tmp_path) -> None:
    workdir = write_files(tmp_path / "part", {"Snakefile": SNAKEFILE})
    result = run_snakemake(quota_service, workdir, container="part",
                           **created_pool(quota_service, "part", "standard_d2s_v3",
                                          SNAKEMAKE_AZBATCH_POOL_NODES="3"))
    text = result.stdout + result.stderr
    assert result.returncode == 0, output_of(result)
    assert lines_with(text, "azbatch: progress: pool part:", "; resizing: 0 of 3 nodes, requested"), text
    stops = lines_with(text, "azbatch: pool part: resize stopped:")
    assert stops == [
        "azbatch: pool part: resize stopped: core quota for family standardDSv3Family (or the account's dedicated "
        "cores) reached at 2 of 3 dedicated nodes (AccountCoreQuotaReached); the run goes on with the nodes it has. "
        "See `az batch pool show --pool-id part --query resizeErrors`; ask for a quota increase (Azure portal: the "
        "Batch account's Quotas), choose a VM size with fewer cores (--azbatch-pool-vm-size), or use the other "
        "kind of node (--azbatch-pool-spot)"], text
    assert "no node of pool" not in text and "Traceback" not in text
    nodes = {p.read_text().strip() for p in (workdir / "out").iterdir()}
    assert len(nodes) <= 2 and len(list((workdir / "out").iterdir())) == 4


def test_a_quota_of_zero_ends_the_run_in_one_line_within_a_minute(quota_service, tmp_path) -> None:
    workdir = write_files(tmp_path / "zero", {"Snakefile": SNAKEFILE})
    client = quota_service.batch_client()
    result = run_snakemake(quota_service, workdir, container="zero", timeout=120, SNAKEMAKE_AZBATCH_KEEP_JOB="true",
                           **created_pool(quota_service, "zero", "standard_e2s_v3", SNAKEMAKE_AZBATCH_POOL_NODES="2"))
    text = result.stdout + result.stderr
    assert result.returncode != 0, output_of(result)
    ends = lines_with(text, "azbatch: pool zero can get no node: resize stopped:")
    assert len(ends) == 1, text
    assert ("core quota for family standardESv3Family (or the account's dedicated cores) reached at 0 of 2 "
            "dedicated nodes (AccountCoreQuotaReached), so its tasks can never run") in ends[0]
    assert "az batch pool show --pool-id zero --query resizeErrors" in ends[0]
    assert not lines_with(text, "azbatch: pool zero: resize stopped:"), text  # said once, as the end
    assert "Traceback" not in text
    (job,) = [j for j in client.list_jobs() if j.id.startswith("sm-zero-")]  # kept, so its times can be read
    assert enum_text(job.state) == "completed", job.as_dict()
    # Batch's own clock: the job was ended within a minute of its creation (the pool check's interval is 1 s here).
    assert (job.state_transition_time - job.creation_time).total_seconds() < 60, job.as_dict()
    assert not [t for t in client.list_tasks(job.id) if enum_text(t.state) == "running"]
    assert all(p.id != "zero" for p in client.list_pools())  # the pool the run created is deleted


def test_an_autoscale_spot_pool_from_zero_waits_out_a_spot_shortage(make_service, tmp_path) -> None:
    from snakemake_executor_plugin_azbatch.local.service_config import SpotShortage

    service = make_service(timing="azure", time_scale=SCALE, pools=["local:0:1"], spot_shortage=SpotShortage(8, 0))
    workdir = write_files(tmp_path / "spot", {"Snakefile": SNAKEFILE})
    result = run_snakemake(service, workdir, container="spot",
                           **created_pool(service, "spot", "standard_d2s_v3", SNAKEMAKE_AZBATCH_POOL_AUTOSCALE="0-2",
                                          SNAKEMAKE_AZBATCH_POOL_SPOT="true"))
    text = result.stdout + result.stderr
    assert result.returncode == 0, output_of(result)
    stops = lines_with(text, "azbatch: pool spot: resize stopped:")
    assert len(stops) == 1 and "(AllocationFailed:" in stops[0], text
    assert "its tasks wait until nodes come. See `az batch pool show --pool-id spot --query resizeErrors`; Spot " \
           "capacity comes back by itself" in stops[0]
    assert lines_with(text, "pool spot:", "waiting for the next autoscale evaluation"), text
    assert "can get no node" not in text and "Traceback" not in text
    assert len(list((workdir / "out").iterdir())) == 4


# ---- the lines, without a service ---------------------------------------------------------------------------


def pool(**fields) -> PoolAllocation:
    base = dict(id="p", steady=True, since=None, vm_size="standard_e4s_v3", target=(3, 0), current=(0, 0),
                errors=(), autoscale=False, interval_seconds=None, evaluated=None)
    return PoolAllocation(**{**base, **fields})


class Lines:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, line: str) -> None:
        self.warnings.append(line)


@pytest.mark.quick
def test_resize_watch_says_each_stop_once_and_ends_only_when_no_node_can_come() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    log = Lines()
    watch = ResizeWatch(log, clock=lambda: now)
    resizing = pool(steady=False, since=now - timedelta(minutes=2))
    assert watch.observe(resizing) is None and not log.warnings
    assert watch.waiting_text("P", 0, True) == "resizing: 0 of 3 nodes, requested 2 min ago"
    quota = pool(current=(2, 0), errors=(("AccountCoreQuotaReached", "quota"),))
    assert watch.observe(quota) is None and watch.observe(quota) is None
    assert len(log.warnings) == 1 and "family standardESv3Family" in log.warnings[0]
    zero = pool(id="z", errors=(("AccountCoreQuotaReached", "quota"),))
    assert "azbatch: pool z can get no node" in watch.observe(zero)
    short = pool(id="s", target=(0, 2), errors=(("AllocationFailed", "no capacity"),), autoscale=True,
                 interval_seconds=300.0, evaluated=now - timedelta(minutes=1))
    assert watch.observe(short) is None and "Spot capacity comes back" in log.warnings[-1]
    assert watch.waiting_text("s", 0, True) == ("resize stopped at 0 of 2 nodes (AllocationFailed); waiting for "
                                                "the next autoscale evaluation in ~4 min (every 5 min)")
    assert [quota_family(s) for s in ("standard_d4s_v3", "Standard_E8ds_v5", "standard_nc6")] == [
        "standardDSv3Family", "standardEDSv5Family", "standardNCFamily"]


@pytest.mark.quick
def test_pool_allocation_reads_the_sdk_pool() -> None:
    sdk = SimpleNamespace(id="p", allocation_state="resizing", allocation_state_transition_time=None,
                          vm_size="standard_d2s_v3", target_dedicated_nodes=2, target_low_priority_nodes=1,
                          current_dedicated_nodes=1, current_low_priority_nodes=None, resize_errors=None,
                          enable_auto_scale=True, auto_scale_evaluation_interval=timedelta(minutes=5),
                          auto_scale_run=None)
    got = PoolAllocation.from_sdk(sdk)
    assert (got.steady, got.target, got.current, got.interval_seconds, got.errors) == (
        False, (2, 1), (1, 0), 300.0, ())
