"""Resource checks: mem_mb, disk_mb and GPUs against the pool's VM size before anything is submitted (Batch
enforces none of them); a rule that cannot fit stops the run with one line naming rule, ask and offer."""

from __future__ import annotations

import pytest
from support.executor_runs import delta, output_of, run_snakemake, write_files

from snakemake_executor_plugin_azbatch.tasks import resource_check
from snakemake_executor_plugin_azbatch.pools import vm_sizes
from snakemake_executor_plugin_azbatch.config import resolve
from snakemake_executor_plugin_azbatch.settings.executor_settings import ExecutorSettings, SettingsError

pytestmark = pytest.mark.no_report  # no test here reads a run report


@pytest.mark.parametrize(
    "resources, expected",
    [
        ('mem_mb=100000', "asks for mem_mb=100000 but a node of pool 'local' ({size}) has {mem} MB"),
        ('disk_mb=10**6', "asks for disk_mb=1000000 but a node of pool 'local' ({size}) has a {disk} MB"),
        ('gpu=1', "asks for 1 GPU(s) but a node of pool 'local' ({size}) has 0"),
    ],
    ids=["mem", "disk", "gpu"],
)
def test_a_rule_that_does_not_fit_stops_the_run_before_any_task(local_service, tmp_path, resources, expected):
    workdir = write_files(
        tmp_path / "fit",
        {
            "Snakefile": f"""
                rule all:
                    input: "small.txt", "big.txt"

                rule small:
                    output: "small.txt"
                    shell: "echo small > {{output}}"

                rule big:
                    output: "big.txt"
                    resources: {resources}
                    shell: "echo big > {{output}}"
            """
        },
    )
    size = vm_sizes.BUILT_IN[local_service.batch_client().get_pool("local").vm_size]  # a core per slot
    expected = expected.format(size=size.name, mem=size.mem_mb, disk=size.disk_mb)
    before = local_service.metrics()
    result = run_snakemake(local_service, workdir, container="fit")
    after = local_service.metrics()
    text = output_of(result)
    assert result.returncode != 0
    lines = [line for line in text.splitlines() if "azbatch: rule big asks for" in line]
    assert len(lines) == 1 and expected in lines[0], text
    assert "Traceback" not in text
    assert delta(before, after, "operations", "Jobs_CreateJob") == 0
    assert delta(before, after, "operations", "Tasks_CreateTaskCollection") == 0
    assert not (workdir / "small.txt").exists()


@pytest.mark.quick
def test_vm_size_overrides_extend_the_table_and_bad_entries_are_one_line():
    config = resolve(ExecutorSettings(pool_id="p", account_url="https://a.westeurope.batch.azure.com",
                                      account_key="a2V5", storage_account_url="https://s.blob.core.windows.net",
                                      storage_account_key="a2V5", vm_sizes=["Custom_X=4:1000:2000:1"]),
                     environ={})
    sizes = {s.name: s for s in config.pools.vm_sizes}
    size = vm_sizes.lookup("custom_x", sizes)
    assert size == vm_sizes.VmSize("custom_x", 4, 1000, 2000, 1)
    assert resource_check.fit_problem("r", "p", size, {"mem_mb": 1000, "gpu": 1}) is None
    assert "mem_mb=1001" in resource_check.fit_problem("r", "p", size, {"mem_mb": 1001})
    assert vm_sizes.lookup("Standard_D2s_v3", sizes).mem_mb == 8192
    assert resource_check.threads_warning("r", "p", size, 8).endswith("has 4 cores; it runs with 4")
    with pytest.raises(SettingsError, match="is not NAME=CORES:MEM_MB:DISK_MB"):
        resolve(ExecutorSettings(pool_id="p", account_url="https://a.westeurope.batch.azure.com", account_key="a2V5",
                                 storage_account_url="https://s.blob.core.windows.net", storage_account_key="a2V5",
                                 vm_sizes=["bad=1:2"]), environ={})
