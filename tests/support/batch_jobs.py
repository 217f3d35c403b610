"""A fresh Batch job on a test service's pool, deleted when the test is done with it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import ResourceNotFoundError


@contextmanager
def fresh_job(client: BatchClient, pool_id: str, prefix: str) -> Iterator[str]:
    job_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    try:
        yield job_id
    finally:
        try:
            client.begin_delete_job(job_id, polling_interval=0).result()
        except ResourceNotFoundError:
            pass
