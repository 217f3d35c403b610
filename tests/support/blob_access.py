"""Containers and SAS links in the test service's Azurite, as tests hand them to tasks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from azure.storage.blob import BlobSasPermissions, ContainerSasPermissions, generate_blob_sas, generate_container_sas


def sas_expiry(link: str) -> datetime:
    """When a SAS link expires (its `se=`); `link` is a URL or its query string."""
    query = urlsplit(link).query if "://" in link else link
    return datetime.strptime(parse_qs(query)["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


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
