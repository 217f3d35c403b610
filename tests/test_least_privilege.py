"""Issue 19: no link a node is given can change what another run (or a later one) reads, and a content-addressed
blob changed behind the plugin's back fails the task in one line, is removed, and the next run heals it. On the
local service: Azurite enforces each SAS's permissions, the node agent uses the links exactly as given."""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, ContainerClient

from support.executor_runs import kept_jobs, output_of, run_snakemake, write_files

from snakemake_executor_plugin_azbatch.run import recovery
from snakemake_executor_plugin_azbatch.config import resolve
from snakemake_executor_plugin_azbatch.staging import BlobLayout, Staging
from snakemake_executor_plugin_azbatch.staging.run_container import RUN_CONTAINER_INFIX

CAS = BlobLayout("")

TWO_STEPS = {
    "Snakefile": """
        rule all:
            input: "c.txt"

        rule upper:
            input: "a.txt"
            output: "b.txt"
            shell: "tr a-z A-Z < {input} > {output}"

        rule both:
            input: "b.txt", "a.txt"
            output: "c.txt"
            shell: "cat {input} > {output}"
    """,
    "a.txt": "shared input\n",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refused(action) -> int:
    with pytest.raises(HttpResponseError) as caught:
        action()
    return caught.value.status_code


def run_containers(service, staging: str) -> list[str]:
    containers = service.blob_service_client().list_containers(name_starts_with=staging + RUN_CONTAINER_INFIX)
    return [c.name for c in containers]


def test_no_task_link_can_change_a_shared_blob_or_reach_beyond_its_run(local_service, tmp_path):
    workdir = write_files(tmp_path / "links", TWO_STEPS)
    result = run_snakemake(local_service, workdir, container="links", SNAKEMAKE_AZBATCH_KEEP_JOB="true")
    client = local_service.batch_client()
    (job,) = kept_jobs(client, "links")
    try:
        assert result.returncode == 0, output_of(result)
        assert (workdir / "c.txt").read_text() == "SHARED INPUT\nshared input\n"
        (run_container,) = run_containers(local_service, "links")
        assert f"kept storage container {run_container}" in result.stderr  # with the kept job, for debugging
        tasks = {t.id.split("-")[0]: t for t in client.list_tasks(job.id)}
        reads = [r.http_url for t in tasks.values() for r in t.resource_files]
        writes = {o.destination.container.container_url for t in tasks.values() for o in t.output_files}
        # Nodes read the store and their run's container, and write only the latter; no list, no delete.
        assert {parse_qs(urlsplit(u).query)["sp"][0] for u in reads} == {"r"}
        assert {parse_qs(urlsplit(u).query)["sp"][0] for u in writes} == {"cw"}
        assert {urlsplit(u).path.rsplit("/", 1)[1] for u in writes} == {run_container}
        # The second task reads the first one's output in place, from the run's container (checked on the node).
        (b_link,) = [r.http_url for r in tasks["both"].resource_files if r.file_path == "b.txt"]
        assert f"/{run_container}/" in b_link
        assert "azbatch_verify" in tasks["both"].command_line and "--run b.txt=" in tasks["both"].command_line

        service = local_service.blob_service_client()
        cas_blob = CAS.cas_blob(sha(b"shared input\n"))
        cas_url = service.get_container_client("links").get_blob_client(cas_blob).url
        queries = {urlsplit(u).query for u in [*reads, *writes]}
        for query in queries:
            # The link's signature (over the store or the run's container) as a key to the shared blob: refused.
            blob = BlobClient.from_blob_url(f"{cas_url}?{query}")
            assert refused(lambda: blob.upload_blob(b"evil\n", overwrite=True)) == 403
            assert refused(blob.delete_blob) == 403
            # Nor may it list the store or another run's container.
            other = ContainerClient.from_container_url(f"{service.url}links{RUN_CONTAINER_INFIX}0123456789ab?{query}")
            assert refused(lambda: other.upload_blob("x", b"x")) in (403, 404)
            assert refused(lambda: next(iter(ContainerClient.from_container_url(
                f"{service.url}links?{query}").list_blobs()))) == 403
        write_query = next(iter({urlsplit(u).query for u in writes}))
        in_run = ContainerClient.from_container_url(f"{service.url}{run_container}?{write_query}")
        some_output = f"{tasks['upper'].id}/files/b.txt"
        # The output link writes its run's container (what Batch's node agent needs) and nothing more.
        in_run.upload_blob("probe.txt", b"x")
        assert refused(lambda: in_run.download_blob(some_output).readall()) == 403
        assert refused(lambda: in_run.delete_blob(some_output)) == 403
        assert refused(lambda: next(iter(in_run.list_blobs()))) == 403
        # A read link reads and cannot write, even in its run's container.
        read_only = BlobClient.from_blob_url(b_link)
        assert read_only.download_blob().readall() == b"SHARED INPUT\n"
        assert refused(lambda: read_only.upload_blob(b"evil\n", overwrite=True)) == 403
        assert service.get_blob_client("links", cas_blob).download_blob().readall() == b"shared input\n"

        # A dead run's container is found from the run token in its Batch job's metadata (the earlier-run cleanup).
        token = {m.name: m.value for m in job.metadata}[recovery.RUN_KEY]
        config = resolve(None, environ={**local_service.env, "SNAKEMAKE_AZBATCH_STORAGE_CONTAINER": "links"})
        staging = Staging(config, lambda: None, tmp_path / "record", logging.getLogger("test"))
        assert staging.delete_run_container(token) is True
        assert run_containers(local_service, "links") == []
        assert staging.delete_run_container(token) is False  # gone: nothing to do, no error
        staging.close()
    finally:
        client.begin_delete_job(job.id, polling_interval=1).result()
        for name in run_containers(local_service, "links"):
            local_service.blob_service_client().delete_container(name)


def test_a_changed_content_addressed_blob_fails_the_task_in_one_line_and_the_next_run_heals_it(local_service, tmp_path):
    workdir = write_files(
        tmp_path / "heal",
        {
            "Snakefile": 'rule cat:\n    input: "a.txt", "b.txt"\n    output: "ab.txt"\n'
                         '    shell: "cat {input} > {output}"\n',
            "a.txt": "a\n",
            "b.txt": "b\n",
        },
    )
    result = run_snakemake(local_service, workdir, container="heal")
    assert result.returncode == 0, output_of(result)
    assert run_containers(local_service, "heal") == []  # deleted at the run's end, its outputs downloaded
    # Someone with the account key overwrites b.txt's content-addressed blob: the plugin would not upload it again.
    store = local_service.blob_service_client().get_container_client("heal")
    blob = CAS.cas_blob(sha(b"b\n"))
    store.upload_blob(blob, b"evil\n", overwrite=True)

    result = run_snakemake(local_service, workdir, "--forceall", container="heal")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    line = (f"azbatch: input b.txt (blob {blob[:len(CAS.cas_prefix) + 48]}...) does not match its sha256: the blob "
            "changed after it was staged; the command did not run")
    assert line in text.splitlines(), output_of(result)
    assert "exit code 97" in text
    removed = [x for x in text.splitlines() if f"removed blob {blob} (input b.txt)" in x]
    assert len(removed) == 1, output_of(result)
    assert not store.get_blob_client(blob).exists()

    result = run_snakemake(local_service, workdir, container="heal")
    assert result.returncode == 0, output_of(result)
    assert (workdir / "ab.txt").read_text() == "a\nb\n"
    assert store.download_blob(blob).readall() == b"b\n"
