"""Seeded fault injection: a fraction of API requests is answered with 500 / 503 / 429 and not executed, so the
azure-core retry policy of the real SDK rides over it and every call still succeeds exactly once."""

from __future__ import annotations

import json
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError
from support.spec_validation import validate_response

from snakemake_executor_plugin_azbatch.local.service_config import ServiceConfig
from snakemake_executor_plugin_azbatch.local.http.faults import FaultInjector
from snakemake_executor_plugin_azbatch.local.auth.shared_key import authorization_header

NEVER_SCHEDULED = 1000  # requiredSlots no node has: tasks stay active, no process runs


def statuses(metrics: dict[str, Any], operation: str) -> dict[str, int]:
    return metrics["operations"].get(operation, {}).get("statuses", {})


@pytest.mark.parametrize("fail_status", [503, 429, 500])
def test_sdk_retries_ride_over_injected_faults(make_service: Any, fail_status: int) -> None:
    svc = make_service(fail_fraction=0.3, fail_status=fail_status, seed=11)
    # azure-core retries a status at most 3 times by default (retry_status); at 30 % faults that loses ~1 call in
    # 120, so allow more. 500 has no Retry-After: keep the exponential backoff short.
    client = svc.batch_client(retry_status=8, retry_backoff_factor=0.05)

    client.create_job(m.BatchJobCreateOptions(id="faulty", pool_info=m.BatchPoolInfo(pool_id=svc.pool_id)))
    tasks = [m.BatchTaskCreateOptions(id=f"t{i}", command_line="true", required_slots=NEVER_SCHEDULED) for i in range(10)]
    result = client.create_tasks("faulty", tasks)
    assert sorted(r.task_id for r in result.result_values) == sorted(t.id for t in tasks)
    assert all(r.status == m.BatchTaskAddStatus.SUCCESS for r in result.result_values)
    for _ in range(3):
        assert client.get_job("faulty").id == "faulty"
        assert len(list(client.list_tasks("faulty"))) == 10
        assert client.get_pool(svc.pool_id).id == svc.pool_id
    client.terminate_task("faulty", "t0")
    assert client.get_task("faulty", "t0").state == m.BatchTaskState.COMPLETED

    metrics = svc.metrics()
    injected = sum(
        entry["statuses"].get(str(fail_status), 0) for entry in metrics["operations"].values()
    )
    assert injected > 0, "with fail_fraction 0.3 some of ~16 requests must have been faulted"
    # A faulted request is not executed: each create succeeded exactly once and no retry met JobExists/TaskExists.
    create_job = statuses(metrics, "Jobs_CreateJob")
    assert create_job.get("201") == 1 and set(create_job) <= {"201", str(fail_status)}
    collection = statuses(metrics, "Tasks_CreateTaskCollection")
    assert collection.get("200") == 1 and set(collection) <= {"200", str(fail_status)}
    terminate = statuses(metrics, "Tasks_TerminateTask")
    assert terminate.get("204") == 1 and set(terminate) <= {"204", str(fail_status)}


def test_every_request_faulted_carries_retry_after_and_a_batch_error(make_service: Any) -> None:
    svc = make_service(fail_fraction=1.0, fail_status=429)
    url = f"{svc.account_url}/pools?api-version=2025-06-01.21.0"
    headers = {"ocp-date": formatdate(usegmt=True)}
    headers["Authorization"] = authorization_header("GET", url, headers, svc.config.account_name, svc.config.account_key)
    response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    validate_response("GET", url, response.status_code, response.content, response.headers)
    body = response.json()
    assert body["code"] == "TooManyRequests" and body["message"]["value"].startswith("Injected fault")
    assert body["odata.metadata"].endswith("$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element")

    client = svc.batch_client(retry_total=0)
    with pytest.raises(HttpResponseError) as raised:
        client.create_job(m.BatchJobCreateOptions(id="never", pool_info=m.BatchPoolInfo(pool_id=svc.pool_id)))
    assert raised.value.status_code == 429

    # /_local is never faulted, and the refused create did not happen.
    assert requests.get(svc.account_url + "/_local/health", timeout=30).status_code == 200
    metrics = svc.metrics()
    assert statuses(metrics, "Pools_ListPools") == {"429": 1}
    assert statuses(metrics, "Jobs_CreateJob") == {"429": 1}
    svc.stop()
    written = json.loads((svc.root / "metrics.json").read_text())
    assert written["operations"]["Jobs_CreateJob"]["statuses"] == {"429": 1}


def _picks(config: ServiceConfig, n: int = 200) -> list[bool]:
    injector = FaultInjector(config)
    return [injector.pick() is not None for _ in range(n)]


def test_fault_sequence_repeats_with_the_seed(tmp_path: Path) -> None:
    first = _picks(ServiceConfig(root=tmp_path, fail_fraction=0.3, seed=5))
    again = _picks(ServiceConfig(root=tmp_path, fail_fraction=0.3, seed=5))
    other = _picks(ServiceConfig(root=tmp_path, fail_fraction=0.3, seed=6))
    assert first == again and first != other
    assert 30 <= sum(first) <= 90  # about 30 % of 200
    assert not any(_picks(ServiceConfig(root=tmp_path, fail_fraction=0.0)))
    assert all(_picks(ServiceConfig(root=tmp_path, fail_fraction=1.0)))


def test_fault_status_must_be_a_transient_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="500, 503 or 429"):
        FaultInjector(ServiceConfig(root=tmp_path, fail_fraction=0.1, fail_status=404))


def test_a_mix_of_statuses_draws_each_of_them(tmp_path: Path) -> None:
    config = ServiceConfig(root=tmp_path, fail_fraction=1.0, fail_status=(429, 500, 503), seed=2)
    injector = FaultInjector(config)
    drawn = [injector.pick() for _ in range(300)]
    counts = {status: sum(1 for fault in drawn if fault and fault.status == status) for status in (429, 500, 503)}
    assert sum(counts.values()) == 300 and all(60 <= n <= 140 for n in counts.values()), counts
    again = FaultInjector(config)
    assert [again.pick().status for _ in range(300)] == [fault.status for fault in drawn]
    with pytest.raises(ValueError, match="--fail-status 429,404: choose 500, 503 or 429"):
        FaultInjector(ServiceConfig(root=tmp_path, fail_fraction=0.1, fail_status=(429, 404)))


def test_a_mix_of_faults_is_counted_apart_in_the_metrics(make_service: Any) -> None:
    svc = make_service(fail_fraction=0.5, fail_status=(429, 500, 503), seed=4)
    client = svc.batch_client(retry_status=12, retry_backoff_factor=0.01)
    for _ in range(8):
        assert client.get_pool(svc.pool_id).id == svc.pool_id
    metrics = svc.metrics()
    injected = metrics["injectedFaults"]
    answered = statuses(metrics, "Pools_GetPool")
    assert answered["200"] == 8
    assert injected == {status: n for status, n in answered.items() if status != "200"}
    assert len(injected) >= 2, "about 8 faults drawn from three statuses show at least two of them"
