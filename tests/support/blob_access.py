"""Containers and SAS links in the test service's Azurite, as tests hand them to tasks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from azure.storage.blob import BlobSasPermissions, ContainerSasPermissions, generate_blob_sas, generate_container_sas


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_container(svc, prefix: str):
    service = svc.blob_service_client()
    name = unique(prefix).lower()
    return service.create_container(name)


def container_url(svc, container: str, sas: bool = True, **permissions: bool) -> str:
    storage = svc.endpoints.storage
    base = f"{storage.blob_url}/{container}"
    if not sas:
        return base
    token = generate_container_sas(
        storage.account_name,
        container,
        account_key=storage.account_key,
        permission=ContainerSasPermissions(**(permissions or {"read": True, "list": True})),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    return f"{base}?{token}"


def blob_url(svc, container: str, blob: str) -> str:
    storage = svc.endpoints.storage
    token = generate_blob_sas(
        storage.account_name,
        container,
        blob,
        account_key=storage.account_key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    return f"{storage.blob_url}/{container}/{blob}?{token}"
