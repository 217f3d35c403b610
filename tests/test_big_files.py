"""Large files move as parallel block transfers, streamed from and into open files, on both wings: the plugin's
staging (upload of an input, download of an output) and the local nodes (resource file, output file). A 64 MiB
file must travel as several blocks / ranged reads (counted by the service's blob metrics) and arrive intact.
Throughput and memory at several GiB are measured by `make bench` (benchmarks/big_files.py), not asserted here."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from snakemake_executor_plugin_azbatch.staging import blobs as staging
from snakemake_executor_plugin_azbatch.staging.layout import BlobLayout
from snakemake_executor_plugin_azbatch.staging.record import sha256_file
from support.waiting import wait_for
from snakemake_executor_plugin_azbatch.local.backends import blob_transfer
from snakemake_executor_plugin_azbatch.config import resolve

SIZE = 64 * 1024 * 1024 + 12345  # not a multiple of the block size: the last block is short
WAIT_SECONDS = 120


def make_file(path: Path, size: int) -> str:
    """A file of `size` random bytes, written in pieces; returns its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            piece = os.urandom(min(left, 1 << 20))
            fh.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    return sha256_file(str(path))


def storage_count(before: dict, after: dict, operation: str) -> int:
    def count(m: dict) -> int:
        return int(m.get("storage", {}).get(operation, {}).get("count", 0))

    return count(after) - count(before)


def test_plugin_staging_moves_a_large_file_in_parallel_blocks(local_service, tmp_path):
    container = f"big-{uuid.uuid4().hex[:8]}"
    config = resolve(None, environ={**local_service.env, "SNAKEMAKE_AZBATCH_STORAGE_CONTAINER": container})
    stage = staging.Staging(config, lambda: None, tmp_path / "record", logging.getLogger("test"))
    stage.preflight()
    source = tmp_path / "input.bin"
    digest = make_file(source, SIZE)
    blocks = math.ceil(SIZE / staging.BLOCK_SIZE)

    before = local_service.metrics()
    blob = stage.stage_files([str(source)])[str(source)]
    after_upload = local_service.metrics()
    assert blob.endswith(digest)
    assert storage_count(before, after_upload, "PutBlock") == blocks
    assert storage_count(before, after_upload, "PutBlockList") == 1
    assert storage_count(before, after_upload, "PutBlob") == 0

    landed = stage.downloads.download_prefix(BlobLayout.CAS_DIR, str(tmp_path / "back"))
    after_download = local_service.metrics()
    stage.close()
    # One ranged read per block: the first read is one block long too (max_single_get_size).
    assert storage_count(after_upload, after_download, "GetBlob") == blocks
    assert landed == [str(tmp_path / "back" / digest)]
    assert sha256(Path(landed[0])) == digest


def test_node_moves_a_large_resource_file_and_output_file_in_parallel_blocks(local_service, tmp_path):
    storage = local_service.endpoints.storage
    blob_service = local_service.blob_service_client()
    container = blob_service.create_container(f"big-{uuid.uuid4().hex[:8]}")
    source = tmp_path / "input.bin"
    digest = make_file(source, SIZE)
    with open(source, "rb") as fh:
        container.upload_blob("in/input.bin", fh, max_concurrency=4)
    now = datetime.now(timezone.utc)
    sas = generate_container_sas(
        storage.account_name, container.container_name, account_key=storage.account_key,
        permission=ContainerSasPermissions(read=True, write=True, create=True, add=True),
        start=now - timedelta(minutes=5), expiry=now + timedelta(hours=1),
    )
    container_url = f"{container.url}?{sas}"
    client = local_service.batch_client()
    job_id = f"big-{uuid.uuid4().hex[:8]}"
    client.create_job({"id": job_id, "poolInfo": {"poolId": local_service.pool_id}})
    blocks = math.ceil(SIZE / blob_transfer._BLOCK)

    before = local_service.metrics()
    client.create_task(job_id, {
        "id": "copy",
        "commandLine": "/bin/sh -c 'sha256sum input.bin > input.sha256 && mv input.bin output.bin'",
        "resourceFiles": [{"httpUrl": f"{container.url}/in/input.bin?{sas}", "filePath": "input.bin"}],
        "outputFiles": [
            {
                "filePattern": name,
                "destination": {"container": {"containerUrl": container_url, "path": f"out/{name}"}},
                "uploadOptions": {"uploadCondition": "tasksuccess"},
            }
            for name in ("output.bin", "input.sha256")
        ],
    })
    task = wait_for(
        lambda: (t := client.get_task(job_id, "copy")).state == "completed" and t,
        WAIT_SECONDS, lambda: f"task never completed: {client.get_task(job_id, 'copy').as_dict()}", interval=0.2,
    )
    after = local_service.metrics()
    assert task.execution_info.exit_code == 0, task.as_dict()
    # The node read the resource file as ranged reads of one block each and wrote the output as blocks;
    # the small checksum file went up as one PutBlob.
    assert storage_count(before, after, "GetBlob") == blocks
    assert storage_count(before, after, "PutBlock") == blocks
    assert storage_count(before, after, "PutBlockList") == 1
    assert storage_count(before, after, "PutBlob") == 1
    on_node = container.download_blob("out/input.sha256").readall().decode().split()[0]
    assert on_node == digest
    back = tmp_path / "output.bin"
    with open(back, "wb") as fh:
        container.download_blob("out/output.bin", max_concurrency=4).readinto(fh)
    assert sha256(back) == digest
    client.begin_delete_job(job_id).result()
