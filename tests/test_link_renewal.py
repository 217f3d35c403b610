"""Links that outlive no task (staging/links.py, link_renewal.py): the signer reuses a link only while it covers what
the caller needs and renews its user-delegation key before a link would outlive it; the local service refuses
expired links as Batch does; and one run with 72-second links and a 3-minute pause completes (later tasks and a new
Batch job generation get fresh links, a task left waiting behind a full pool is replaced, a task outliving its
links is explained in one line and its retry gets fresh ones)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient
from support.blob_access import sas_expiry
from support.executor_runs import delta, kept_jobs, output_of, run_snakemake, write_files
from support.waiting import wait_for

from snakemake_executor_plugin_azbatch.tasks import task_spec
from snakemake_executor_plugin_azbatch.run.link_renewal import renewed_body, replacement_id
from snakemake_executor_plugin_azbatch.run.run_identity import HEARTBEAT_KEY
from snakemake_executor_plugin_azbatch.staging.links import LinkSigner

pytestmark = pytest.mark.no_report  # no test here reads a run report

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.time = start

    def __call__(self) -> datetime:
        return self.time


def _container(service, name: str) -> BlobServiceClient:
    blobs = service.blob_service_client()
    try:
        blobs.create_container(name)
    except Exception:
        pass
    blobs.get_blob_client(name, "in.txt").upload_blob(b"linked", overwrite=True)
    return blobs


def test_signer_reuses_a_link_only_while_it_covers_the_need(local_service):
    blobs = _container(local_service, "links-reuse")
    clock = Clock(T0)
    signer = LinkSigner(blobs, hours=1, now=clock)
    first = signer.container_sas("links-reuse", "r")
    assert signer.container_sas("links-reuse", "r") == first and signer.links_signed == 1
    assert sas_expiry(first) == T0 + timedelta(hours=1)
    clock.time = T0 + timedelta(minutes=10)
    # 50 minutes left: enough for a task that needs 20, not for one that needs the whole hour.
    assert signer.container_sas("links-reuse", "r", timedelta(minutes=20)) == first
    with signer.handing_out(timedelta(minutes=20)) as handed:
        assert signer.container_sas("links-reuse", "r") == first
    assert handed.expiry == T0 + timedelta(hours=1)
    fresh = signer.container_sas("links-reuse", "r")
    assert fresh != first and sas_expiry(fresh) == clock.time + timedelta(hours=1) and signer.links_signed == 2
    # Another permission is another link; links inside a body are renewed, foreign URLs left alone.
    assert signer.container_sas("links-reuse", "cw") not in (first, fresh)
    clock.time = T0 + timedelta(minutes=40)
    url = f"{blobs.url.rstrip('/')}/links-reuse/in.txt?{first}"
    body = renewed_body({"resourceFiles": [{"httpUrl": url, "filePath": "in.txt"},
                                           {"httpUrl": "https://example.org/x?sig=a&sp=r", "filePath": "x"}],
                         "environmentSettings": [{"name": "A", "value": "plain"},
                                                 {"name": "READ", "value": f"{blobs.url.rstrip('/')}/links-reuse?{first}"}]},
                        signer)
    renewed = body["resourceFiles"][0]["httpUrl"]
    assert renewed.startswith(url.split("?")[0] + "?") and sas_expiry(urlsplit(renewed).query) == clock.time + timedelta(hours=1)
    assert body["resourceFiles"][1]["httpUrl"] == "https://example.org/x?sig=a&sp=r"
    plain, read = body["environmentSettings"]
    assert plain == {"name": "A", "value": "plain"} and sas_expiry(urlsplit(read["value"]).query) == clock.time + timedelta(hours=1)


def test_a_link_works_until_it_expires_then_storage_refuses_it(local_service):
    blobs = _container(local_service, "links-expiry")
    signer = LinkSigner(blobs, hours=2 / 3600)  # 2-second links: fractions of an hour are allowed
    url = f"{blobs.url.rstrip('/')}/links-expiry/in.txt?{signer.container_sas('links-expiry', 'r')}"
    assert BlobClient.from_blob_url(url).download_blob().readall() == b"linked"
    time.sleep(3)
    with pytest.raises(Exception) as refused:
        BlobClient.from_blob_url(url, retry_total=0).download_blob().readall()
    assert getattr(refused.value, "status_code", None) == 403


def test_the_user_delegation_key_is_renewed_before_a_link_would_outlive_it(entra_service, monkeypatch):
    from test_entra_service import sp_credential

    service = entra_service
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", service.env["REQUESTS_CA_BUNDLE"])  # azure-identity's requests
    blobs = BlobServiceClient(service.env["SNAKEMAKE_AZBATCH_STORAGE_ACCOUNT_URL"], credential=sp_credential(service),
                              connection_verify=service.ca_file)
    container = blobs.get_container_client("links-key")
    try:
        container.create_container()
    except Exception:
        pass
    container.upload_blob("in.txt", b"delegated", overwrite=True)
    # Links of 2 s signed with keys of 6 s (a 7-day key and 8-day run, scaled down): a link is never signed with
    # a key that ends before it does, and a key serves every link it outlives.
    signer = LinkSigner(blobs, hours=2 / 3600, key_lifetime=timedelta(seconds=6))
    before = service.metrics()
    links = []
    for _ in range(6):
        sas = signer.container_sas("links-key", "r")
        links.append(sas)
        # Each link works (Azurite checks the signature against the key it was made with).
        reader = ContainerClient.from_container_url(f"{container.url}?{sas}", connection_verify=service.ca_file)
        assert reader.download_blob("in.txt").readall() == b"delegated"
        keys = {parse_qs(s)["skoid"][0] + parse_qs(s)["ske"][0] for s in links}
        assert all(sas_expiry(s) <= datetime.strptime(parse_qs(s)["ske"][0], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=timezone.utc) for s in links)
        time.sleep(1.2)
    assert len(set(links)) == 6  # 2-second links re-signed each time, but...
    # ...keys were requested less often (the key request is the only storage operation of kind "Other" here).
    requests = delta(before, service.metrics(), "storage", "Other")
    assert requests == signer.keys_requested == len(keys) and 2 <= requests <= 3


def test_nodes_refuse_expired_links_as_batch_does(local_service):
    """A resource file behind an expired SAS fails the task with BlobAccessDenied; outputs to a container whose SAS
    expired fail with FileUploadMiscError and a 403 in fileuploaderr.txt."""
    blobs = _container(local_service, "links-nodes")
    signer = LinkSigner(blobs, hours=1 / 3600)
    base = f"{blobs.url.rstrip('/')}/links-nodes"
    read, write = signer.container_sas("links-nodes", "r"), signer.container_sas("links-nodes", "cw")
    time.sleep(2)
    client = local_service.batch_client()
    job = "links-nodes-job"
    client.create_job({"id": job, "poolInfo": {"poolId": local_service.pool_id}})
    try:
        client.create_task(job, {"id": "download", "commandLine": "true",
                                 "resourceFiles": [{"httpUrl": f"{base}/in.txt?{read}", "filePath": "in.txt"}]})
        client.create_task(job, {"id": "upload", "commandLine": "/bin/sh -c 'echo x > out.txt'", "outputFiles": [{
            "filePattern": "out.txt", "destination": {"container": {"containerUrl": f"{base}?{write}", "path": "out.txt"}},
            "uploadOptions": {"uploadCondition": "taskcompletion"}}]})
        def completed():
            tasks = {t.id: t for t in client.list_tasks(job)}
            return tasks if all(t.state == "completed" for t in tasks.values()) else None

        by_id = wait_for(completed, 60, "both tasks completed")
        assert by_id["download"].execution_info.failure_info.code == "BlobAccessDenied"
        assert by_id["upload"].execution_info.failure_info.code == "FileUploadMiscError"
        log = b"".join(client.download_task_file(job, "upload", "fileuploaderr.txt")).decode()
        assert "403" in log and "sig=" not in log.replace("sig=REDACTED", "")
    finally:
        client.begin_delete_job(job, polling_interval=1).result()


def test_ids_of_generations_and_replacements():
    first = task_spec.job_id("wf", "a" * 64, "20300101T000000-abcdef")
    second = task_spec.job_id("wf", "a" * 64, "20300101T000000-abcdef", 2)
    assert len(second) <= 64 and second.endswith("-g2") and second != first
    old = "rule-12-a1-0123abcd"
    new = replacement_id(old)
    assert new.startswith("rule-12-a1-") and new != old and replacement_id(new) not in (old, new)


def test_a_run_with_72_second_links_and_a_3_minute_pause_completes(make_service, tmp_path):
    """One slot: `wait` 1 runs while `wait` 2 waits past the point where its links could no longer last its
    wall clock, so it is replaced (into a new Batch job generation: the first job's preparation links age too).
    `outlive` sleeps past its links on its first attempt: one line names the expiry, and its retry gets fresh
    links. `pause` is a local 3-minute gap after the first `wait`, after which `late` gets fresh links in a fresh
    generation."""
    service = make_service(pools=["one:1:1"])
    workdir = write_files(tmp_path / "renew", {
        "Snakefile": """
            localrules: all, pause

            rule all:
                input: "final.txt"

            rule wait:
                output: "w/{i}.txt"
                resources: runtime=1
                shell: "sleep 45; echo w{wildcards.i} > {output}"

            rule outlive:
                input: expand("w/{i}.txt", i=[1, 2])
                output: "outlived.txt"
                resources: naps=lambda wildcards, attempt: 80 if attempt == 1 else 0
                shell: "sleep {resources.naps}; cat {input} > {output}"

            rule pause:  # from the end of the first `wait`: the gap overlaps the second and `outlive`
                input: "w/1.txt"
                output: "paused.txt"
                shell: "sleep 180; echo paused > {output}"

            rule late:
                input: "paused.txt", "outlived.txt"
                output: "final.txt"
                shell: "cat {input} > {output}"
        """,
    })
    result = run_snakemake(service, workdir, "--retries", "1", container="renew", timeout=480,
                           SNAKEMAKE_AZBATCH_SAS_HOURS="0.02", SNAKEMAKE_AZBATCH_STATUS_INTERVAL_MAX="2",
                           SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    log = result.stdout + result.stderr
    assert result.returncode == 0, output_of(result)
    assert (workdir / "final.txt").read_text() == "paused\nw1\nw2\n"
    assert "1 waiting task(s) replaced with fresh links" in log, output_of(result)
    expired = [line for line in log.splitlines() if "storage refused the SAS links of task outlive-" in line]
    assert len(expired) == 1 and "they expired at" in expired[0], output_of(result)
    assert "--azbatch-sas-hours (0.02)" in expired[0] and "--azbatch-managed-identity" in expired[0]
    assert "sig=" not in log.replace("sig=REDACTED", "")

    client = service.batch_client()
    jobs = sorted(kept_jobs(client, "renew"), key=lambda j: j.creation_time)
    # Generations of one run: same metadata, ids -g2, -g3, ..., every one ended.
    assert len(jobs) >= 3 and [j.id.endswith(f"-g{n}") for n, j in enumerate(jobs[1:], 2)] == [True] * (len(jobs) - 1)
    # (the heartbeat time aside: each job carries when it was last said alive, run_identity.py)
    assert len({tuple((m.name, m.value) for m in j.metadata if m.name != HEARTBEAT_KEY) for j in jobs}) == 1
    assert all(j.state == "completed" for j in jobs)
    tasks = {t.id: (job, t) for job in jobs for t in client.list_tasks(job.id)}
    waits = [t for _, t in tasks.values() if t.display_name.startswith("wait ")]
    assert len(waits) == 2 and all(t.execution_info.result == "success" for t in waits)  # the waiting one deleted
    # Fresh links: every task and job got links that lived 72 s from when it was created, late ones included.
    for job, task in tasks.values():
        urls = [f.http_url for f in task.resource_files or []]
        urls += [o.destination.container.container_url for o in task.output_files or []]
        assert urls and all(timedelta(seconds=60) <= sas_expiry(u) - task.creation_time <= timedelta(seconds=80)
                            for u in urls), task.id
    for job in jobs:
        urls = [f.http_url for f in client.get_job(job.id).job_preparation_task.resource_files if "sig=" in f.http_url]
        assert urls and all(timedelta(seconds=60) <= sas_expiry(u) - job.creation_time <= timedelta(seconds=80) for u in urls)
    for job in jobs:
        client.begin_delete_job(job.id, polling_interval=1).result()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "two"])
def test_sas_hours_take_fractions_and_nothing_but_a_positive_number(value):
    from test_settings import BASE_ENV, resolve_env

    from snakemake_executor_plugin_azbatch.settings.executor_settings import SettingsError

    assert resolve_env({**BASE_ENV, "SNAKEMAKE_AZBATCH_SAS_HOURS": "0.02"}).links.sas_hours == 0.02
    with pytest.raises(SettingsError) as refused:
        resolve_env({**BASE_ENV, "SNAKEMAKE_AZBATCH_SAS_HOURS": value})
    assert "--azbatch-sas-hours" in str(refused.value) and "\n" not in str(refused.value)
