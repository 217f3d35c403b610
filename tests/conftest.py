"""Test harness: the local Batch service (with Azurite) on loopback, driven over HTTP by the real SDKs.

Fixtures
- `local_service` (session): one shared service for tests that do not change service-wide settings.
- `make_service(**ServiceConfig overrides)` (function): a private service, e.g. with fault injection or special
  pools (`pools=["big:2:4"]` strings are parsed like `--pool`). Stopped when the test ends.
- `entra_service` (session): a shared service with Microsoft Entra ID (`--entra`, so HTTPS) and short-lived tokens.
Both return a `ServiceHandle`. Every service is stopped even when a test fails (SIGTERM unwinds like Ctrl-C), and
at session end any process still below pytest or running under the session's temp dir is killed and reported, so
no run leaves Azurite or task processes behind.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from support.processes import descendant_pids, processes_using
from support.services import ENTRA_TOKEN_LIFETIME_S, ServiceHandle, start_service, started_services

# Pure unit-test modules of the plugin (no service, no subprocess), in the quick loop without editing each file.
QUICK_MODULES = {"test_settings.py", "test_task_spec.py"}


# The files that take longest (mostly waiting: a 3-minute link pause, node bootstraps, full runs), first: `make
# test` hands whole files to its workers in collection order, so a long file collected last would run alone at the
# end. Longest first (measured with --durations on CI's 2 cores).
LONGEST_FIRST = (
    "test_link_renewal.py", "test_stock_bootstrap.py", "test_example_workflow.py", "test_adoption.py",
    "test_executor_entra.py", "test_executor_timing.py", "test_executor_pool_creation.py", "test_executor_scale.py",
    "test_executor_staging.py", "test_node_image.py", "test_executor_usage.py", "test_executor_report.py",
    "test_service_timing.py", "test_executor_faults.py", "test_outage.py", "test_stock_nodes.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in QUICK_MODULES:
            item.add_marker(pytest.mark.quick)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept


@pytest.fixture(autouse=True)
def _no_report_where_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests marked `no_report` read no run report: their snakemake runs (whose environment starts from ours)
    write none."""
    if request.node.get_closest_marker("no_report"):
        monkeypatch.setenv("SNAKEMAKE_AZBATCH_NO_REPORT", "true")


@pytest.fixture(scope="session")
def local_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    handle = start_service(tmp_path_factory.mktemp("azbatch-local"), {})
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def entra_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    """One shared service with `--entra` (hence HTTPS), whose tokens live ENTRA_TOKEN_LIFETIME_S seconds."""
    from snakemake_executor_plugin_azbatch.local.auth.token_authority import EntraConfig

    handle = start_service(
        tmp_path_factory.mktemp("azbatch-local-entra"), {"entra": EntraConfig(token_lifetime=ENTRA_TOKEN_LIFETIME_S)}
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., ServiceHandle]]:
    handles: list[ServiceHandle] = []

    def factory(**overrides: Any) -> ServiceHandle:
        root = overrides.pop("root", None) or tmp_path / f"service{len(handles)}"
        try:
            handle = start_service(Path(root), overrides)
        except BaseException:
            if started_services and started_services[-1] not in handles:
                handles.append(started_services[-1])
            raise
        handles.append(handle)
        return handle

    try:
        yield factory
    finally:
        for handle in reversed(handles):
            handle.stop()


# -- no process left behind ---------------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # A CI timeout sends SIGTERM: unwind like Ctrl-C so fixtures still stop Azurite and the task processes.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    yield
    for handle in reversed(started_services):
        try:
            handle.stop()
        except Exception as exc:  # keep cleaning up
            print(f"conftest: stopping a local service failed: {exc}", file=sys.stderr)
    leftovers = sorted(set(descendant_pids(os.getpid())) | set(processes_using(tmp_path_factory.getbasetemp())))
    if leftovers:
        print(f"conftest: killing processes left behind by tests: {leftovers}", file=sys.stderr)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
