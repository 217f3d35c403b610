"""SAS links for nodes: container-scoped signatures made with the account key or a user-delegation key, cached per
(container, permission) for the run. The one place that signs, so every link a node gets is made the same way."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from ..credentials import explained
from ..settings import SettingsError


class LinkSigner:
    """Signs container SAS tokens valid for `hours` from when they are made."""

    def __init__(self, service: BlobServiceClient, hours: float):
        self.service = service
        self.hours = hours
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], str] = {}

    def container_sas(self, container: str, permission: str) -> str:
        """A SAS query string (no leading '?') for `container` with `permission` letters, e.g. "r" or "cw"."""
        key = (container, permission)
        with self._lock:
            cached = self._cache.get(key)
            if cached:
                return cached
            sas = self._sign(container, permission)
            self._cache[key] = sas
            return sas

    def _sign(self, container: str, permission: str) -> str:
        now = datetime.now(timezone.utc)
        start, expiry = now - timedelta(minutes=15), now + timedelta(hours=self.hours)
        account_key = getattr(self.service.credential, "account_key", None)
        if account_key:
            signing = {"account_key": account_key}
        else:
            try:
                with explained(f"storage {self.service.url}", keyed=False):
                    signing = {"user_delegation_key": self.service.get_user_delegation_key(start, expiry)}
            except HttpResponseError as e:
                # Requesting the key is an action on the storage account: a role scoped to the container does
                # not allow it, whatever it allows on the blobs.
                raise SettingsError(
                    f"azbatch: cannot get a user-delegation key from {self.service.url} ({e.status_code}); your "
                    "Entra ID identity needs Storage Blob Data Contributor (or Storage Blob Delegator) on the storage "
                    "account, its resource group or subscription, not only on the container; or set "
                    "--azbatch-storage-account-key or --azbatch-managed-identity"
                ) from None
        return generate_container_sas(
            self.service.account_name,
            container,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=expiry,  # no start time: valid at once, whatever a node's clock skew
            **signing,
        )
