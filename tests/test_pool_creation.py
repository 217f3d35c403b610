"""Pool creation settings and the pool the plugin asks Batch for (pure; the generated formula is checked with the
local service's evaluator, which follows Batch's formula language)."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_azbatch.config import SettingsError, resolve
from snakemake_executor_plugin_azbatch.local.model.autoscale import Inputs, evaluate
from snakemake_executor_plugin_azbatch.local.model.autoscale_parser import parse
from snakemake_executor_plugin_azbatch.pools.pool_creation import autoscale_formula, describe, pool_body
from snakemake_executor_plugin_azbatch.settings.executor_settings import ExecutorSettings

pytestmark = pytest.mark.quick

ENV = {"SNAKEMAKE_AZBATCH_ACCOUNT_URL": "https://acct.westeurope.batch.azure.com",
       "SNAKEMAKE_AZBATCH_ACCOUNT_KEY": "a2V5", "SNAKEMAKE_AZBATCH_POOL_ID": "p",
       "SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL": "https://st.blob.core.windows.net"}


def creation(**settings):
    return resolve(ExecutorSettings(**settings), ENV).pools.creation


def test_no_vm_size_means_no_pool_creation() -> None:
    assert creation() is None


def test_defaults_autoscale_from_zero_on_ubuntu_24_04_with_slots_from_the_vm_size() -> None:
    made = creation(pool_vm_size="Standard_D4s_v3")
    assert (made.slots, made.autoscale, made.autoscale_spot, made.keep) == (4, (0, 4), False, False)
    body = pool_body(made, "p")
    assert body["virtualMachineConfiguration"] == {
        "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                           "version": "latest"}, "nodeAgentSKUId": "batch.node.ubuntu 24.04"}
    assert (body["enableAutoScale"], body["autoScaleEvaluationInterval"], body["taskSlotsPerNode"]) == (True, "PT300S", 4)
    assert "targetDedicatedNodes" not in body


def test_fixed_spot_pool_with_custom_image_start_task_and_containers() -> None:
    made = creation(pool_vm_size="standard_x9", pool_image="pub:offer:sku:1.2", pool_node_agent="batch.node.x 1",
                    pool_nodes="1,3", pool_start_task="apt-get install -y zstd", pool_containers=True)
    body = pool_body(made, "p", ("repo/img:1",))
    assert (body["targetDedicatedNodes"], body["targetLowPriorityNodes"], body["taskSlotsPerNode"]) == (1, 3, 1)
    vm = body["virtualMachineConfiguration"]
    assert vm["imageReference"]["version"] == "1.2" and vm["nodeAgentSKUId"] == "batch.node.x 1"
    assert vm["containerConfiguration"] == {"type": "dockerCompatible", "containerImageNames": ["repo/img:1"]}
    assert body["startTask"]["userIdentity"]["autoUser"]["elevationLevel"] == "admin"
    assert describe(made, "p") == ("azbatch: creating pool p: standard_x9, 1 task slot(s) per node, pub:offer:sku:1.2 "
                                   "with containers, 1 dedicated + 3 Spot node(s); deleted at the end of the run")


def test_named_images_and_container_images() -> None:
    assert creation(pool_vm_size="s", pool_image="ubuntu-24.04").image[:3] == ("canonical", "ubuntu-24_04-lts", "server")
    assert creation(pool_vm_size="s", pool_containers=True).image[:3] == ("microsoft-dsvm", "ubuntu-hpc", "2404")
    old = creation(pool_vm_size="s", pool_image="ubuntu-22.04")
    assert (old.image[:3], old.node_agent) == (("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts"),
                                               "batch.node.ubuntu 22.04")


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"pool_nodes": "2"}, "--azbatch-pool-nodes only applies to a pool the run creates"),
        ({"pool_vm_size": "s", "pool_image": "debian"}, "use ubuntu-24.04, ubuntu-22.04 or PUBLISHER:OFFER:SKU"),
        ({"pool_vm_size": "s", "pool_image": "a:b:c"}, "needs --azbatch-pool-node-agent"),
        ({"pool_vm_size": "s", "pool_nodes": "0,0"}, "at least one node"),
        ({"pool_vm_size": "s", "pool_autoscale": "5-2"}, "MAX ≥ MIN"),
        ({"pool_vm_size": "s", "pool_autoscale": "0-2", "pool_nodes": "1"}, "not both"),
        ({"pool_vm_size": "s", "pool_slots": 0}, "from 1 to 256"),
        ({"pool_vm_size": "s", "pool_registry": "r.azurecr.io"}, "applies to a container pool"),
        ({"pool_vm_size": "s", "pool_containers": True, "pool_registry": "r.azurecr.io", "pool_registry_user": "u"},
         "--azbatch-pool-registry-password-var is missing"),
        ({"pool_vm_size": "s", "pool_containers": True, "pool_registry": "r.azurecr.io/team", "pool_registry_user": "u",
          "pool_registry_password_var": "REG_PW"}, "give the registry's host name"),
        ({"pool_vm_size": "s", "pool_containers": True, "pool_registry": "r.azurecr.io", "pool_registry_user": "u",
          "pool_registry_password_var": "hunter2!"}, "must name an environment variable"),
        ({"pool_vm_size": "s", "pool_containers": True, "pool_registry": "r.azurecr.io", "pool_registry_user": "u",
          "pool_registry_password_var": "UNSET_REGISTRY_PW"}, "UNSET_REGISTRY_PW .* is unset or empty"),
    ],
)
def test_bad_pool_settings_are_one_line(settings, fragment) -> None:
    with pytest.raises(SettingsError, match=fragment) as err:
        creation(**settings)
    assert "\n" not in str(err.value)


def test_private_registry_login_from_an_environment_variable_never_shown() -> None:
    made = resolve(ExecutorSettings(pool_vm_size="s", pool_containers=True, pool_registry="https://myreg.azurecr.io",
                                    pool_registry_user="puller", pool_registry_password_var="REG_PW"),
                   {**ENV, "REG_PW": "s3cret-value"}).pools.creation
    body = pool_body(made, "p", ("myreg.azurecr.io/tools:1",))
    assert body["virtualMachineConfiguration"]["containerConfiguration"] == {
        "type": "dockerCompatible", "containerImageNames": ["myreg.azurecr.io/tools:1"],
        "containerRegistries": [{"registryServer": "myreg.azurecr.io", "username": "puller",
                                 "password": "s3cret-value"}]}
    line = describe(made, "p")
    assert "logs in to myreg.azurecr.io as puller" in line
    assert "s3cret" not in line and "s3cret" not in repr(made)


def test_generated_formula_asks_for_the_ready_tasks_at_creation() -> None:
    """Created before any task exists, the pool's first evaluation (no samples yet) targets the ready tasks."""
    made = creation(pool_vm_size="Standard_D4s_v3", pool_autoscale="0-10")
    formula = pool_body(made, "p", ready_tasks=9)["autoScaleFormula"]
    assert _targets(formula, []).target_dedicated == 3  # 9 tasks, 4 slots per node
    assert _targets(formula, [0]).target_dedicated == 0  # then the samples decide
    assert _targets(pool_body(made, "p", ready_tasks=400)["autoScaleFormula"], []).target_dedicated == 10
    assert _targets(pool_body(made, "p")["autoScaleFormula"], []).target_dedicated == 0  # nothing ready: no error


def _targets(formula: str, samples: list[float], period: float = 30.0):
    now = 1_000_000.0
    series = [(now - period * (len(samples) - 1 - i), v) for i, v in enumerate(samples)]
    inputs = Inputs(now=now, sample_period=period, samples={"$PendingTasks": series}, current_dedicated=0,
                    current_low_priority=0, task_slots_per_node=4, target_dedicated=0, target_low_priority=0)
    return evaluate(parse(formula), inputs)


def test_generated_formula_grows_from_zero_and_shrinks_when_idle() -> None:
    formula = autoscale_formula(0, 10, 4, spot=True)
    assert _targets(formula, [0]).target_low_priority == 0
    assert _targets(formula, [1]).target_low_priority == 1  # a new pool grows at once
    assert _targets(formula, [9]).target_low_priority == 3  # one node per 4 slots, rounded up
    assert _targets(formula, [400]).target_low_priority == 10  # capped
    grown = _targets(formula, [8] * 10 + [0])  # a full window: a short lull keeps the average
    assert grown.target_low_priority == 2 and grown.deallocation_option == "taskcompletion"  # avg 7.3 pending
    assert _targets(formula, [0] * 11).target_low_priority == 0  # idle for the whole window: shrinks to zero
    dedicated = _targets(autoscale_formula(1, 3, 4, spot=False), [0])
    assert (dedicated.target_dedicated, dedicated.target_low_priority) == (1, 0)
