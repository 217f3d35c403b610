"""What the local service's nodes really are (`local/model/node_system.py`): the image its own pools report and the
images a created pool may claim."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_azbatch.local.model import node_system

pytestmark = pytest.mark.quick

UBUNTU_24 = {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}
UBUNTU_22 = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}


def test_stock_nodes_stand_in_for_debian_13_only() -> None:
    stock = node_system.STOCK
    assert stock.stand_in_problem({"publisher": "debian", "offer": "debian-13", "sku": "13"}) is None
    problem = stock.stand_in_problem(UBUNTU_24)
    assert problem == ("The local service's nodes run the stock node image (Debian 13), python3 3.13; they cannot "
                       "stand in for canonical/ubuntu-24_04-lts/server, whose python3 is 3.12. Create the pool with "
                       "imageReference debian/debian-13/13 and nodeAgentSKUId 'batch.node.debian 13'.")
    assert stock.stand_in_problem({"publisher": "pub", "offer": "custom", "sku": "1"}) is None  # unknown: no claim


def test_simulated_nodes_stand_in_for_any_image() -> None:
    assert node_system.SIMULATED.stand_in_problem(UBUNTU_22) is None
    assert node_system.SIMULATED.vm_configuration()["nodeAgentSKUId"] == "batch.node.ubuntu 24.04"


def test_the_host_is_named_by_its_release_only_when_that_release_has_its_python(tmp_path, monkeypatch) -> None:
    release = tmp_path / "os-release"
    release.write_text('ID=debian\nVERSION_ID="12"\n')
    host = node_system.host_system(release)
    if host.python == "3.11":  # python3 on PATH is Debian 12's
        assert host.image["offer"] == "debian-12" and host.node_agent == "batch.node.debian 12"
    else:  # another python3 first on PATH: an honest name, no Marketplace image
        assert host.image["publisher"] == "azbatch-local" and host.image["sku"] == f"python3-{host.python}"
    assert host.stand_in_problem(UBUNTU_22 if host.python != "3.10" else UBUNTU_24) is not None
