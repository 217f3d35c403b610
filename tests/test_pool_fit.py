"""A rule's container image must fit its pool: Batch requires containerSettings on every task of a pool created
with virtualMachineConfiguration.containerConfiguration and forbids them on any other pool."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_azbatch.pools.pool_info import PoolInfo

pytestmark = pytest.mark.quick


def pool(containers: bool) -> PoolInfo:
    return PoolInfo("p1", 2, 1, 0, 1, False, (), containers)


@pytest.mark.parametrize("containers, image", [(True, "img:1"), (False, None)])
def test_matching_pools_and_rules_pass(containers, image):
    assert pool(containers).container_problem("align", image) is None


def test_an_image_on_a_plain_pool_names_rule_pool_and_fix():
    problem = pool(False).container_problem("align", "img:1")
    assert problem.startswith("azbatch: rule align runs in container image 'img:1' but pool 'p1' has no container")
    assert "azbatch_pool" in problem and "\n" not in problem


def test_no_image_on_a_container_pool_names_rule_pool_and_fix():
    problem = pool(True).container_problem("align", None)
    assert problem.startswith("azbatch: rule align has no container image but pool 'p1' is container-enabled")
    assert "--azbatch-container-image" in problem and "azbatch_container_image" in problem and "\n" not in problem
