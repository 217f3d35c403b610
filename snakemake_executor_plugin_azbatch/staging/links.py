"""SAS links for nodes: container-scoped signatures made with the account key or a user-delegation key, the one
place that signs, so every link a node gets is made the same way.

A link lives `--azbatch-sas-hours` from when it is signed. Signed links are cached per (container, permission) and
handed out again only while their remaining life covers what the caller needs (`need`: a task's wall clock plus
an upload allowance, or the whole lifetime); otherwise a fresh one is signed (HMAC, no request). A user-delegation
key is one request to the storage account: it is requested for `key_lifetime` (7 days, Azure's maximum) and
requested again only when a link would outlive it, so an 8-day run asks for two or three keys.

`handing_out(need)` records, for the calling thread, the earliest expiry of the links signed or reused inside it:
what the executor remembers of a task or Batch job to know when its links near their end (link_renewal.py)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from ..azure_api.credentials import explained
from ..settings.executor_settings import SettingsError

# Azure refuses a user-delegation key that expires more than 7 days after it is requested (by its clock: a few
# minutes less, for skew; a 168-hour link is cut to its key's end).
MAX_KEY_LIFETIME = timedelta(days=7) - timedelta(minutes=5)
# A reused link may have lost this fraction of its lifetime even when the caller asks for all of it, so a burst of
# submissions shares one link instead of signing one per task.
REUSE_SLACK = 0.05


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class SignedLink:
    sas: str  # query string, no leading '?'
    expiry: datetime


@dataclass
class HandedLinks:
    """The links handed out inside one `handing_out` block: the earliest expiry (None: no link)."""

    expiry: datetime | None = None
    need: timedelta = field(default=timedelta(0))

    def add(self, expiry: datetime) -> None:
        if self.expiry is None or expiry < self.expiry:
            self.expiry = expiry


class LinkSigner:
    """Signs container SAS tokens valid for `hours` (a float: 0.02 is 72 s) from when they are made."""

    def __init__(self, service: BlobServiceClient, hours: float, key_lifetime: timedelta = MAX_KEY_LIFETIME,
                 now: Callable[[], datetime] = _utc_now):
        self.service = service
        self.lifetime = timedelta(hours=hours)
        self.key_lifetime = min(key_lifetime, MAX_KEY_LIFETIME)
        self.now = now
        self.keys_requested = 0  # user-delegation keys asked for (one request each)
        self.links_signed = 0
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], SignedLink] = {}
        self._key = None  # the current user-delegation key (UserDelegationKey) and its expiry
        self._key_expiry: datetime | None = None
        self._local = threading.local()

    # ---- what callers use ----------------------------------------------------------------------------------------
    def container_sas(self, container: str, permission: str, need: timedelta | None = None) -> str:
        """A SAS query string (no leading '?') for `container` with `permission` letters, e.g. "r" or "cw", that
        stays valid at least `need` from now (inside `handing_out`, that block's need; else the whole lifetime,
        less REUSE_SLACK)."""
        handed: HandedLinks | None = getattr(self._local, "handed", None)
        if need is None:
            need = handed.need if handed is not None else self.lifetime
        link = self.link(container, permission, need)
        if handed is not None:
            handed.add(link.expiry)
        return link.sas

    def link(self, container: str, permission: str, need: timedelta) -> SignedLink:
        cache_key = (container, permission)
        required = min(need, self.lifetime * (1 - REUSE_SLACK))
        with self._lock:
            cached = self._cache.get(cache_key)
            if cached is not None and cached.expiry - self.now() >= required:
                return cached
            link = self._sign(container, permission)
            self._cache[cache_key] = link
            return link

    @contextmanager
    def handing_out(self, need: timedelta | None = None) -> Iterator[HandedLinks]:
        """Links made in this block (this thread) stay valid `need` from now (default: the whole lifetime); the
        yielded record gets their earliest expiry."""
        outer = getattr(self._local, "handed", None)
        handed = HandedLinks(need=min(need, self.lifetime) if need is not None else self.lifetime)
        self._local.handed = handed
        try:
            yield handed
        finally:
            self._local.handed = outer
            if outer is not None and handed.expiry is not None:
                outer.add(handed.expiry)

    def renew_url(self, url: str, need: timedelta | None = None) -> str:
        """`url` with a fresh link when it is a container or blob URL of this account carrying a SAS this signer
        made (same container and permission), else unchanged: links inside bodies built earlier (a Batch job's
        preparation task, a waiting task) renewed without rebuilding them."""
        parts = urlsplit(url)
        own = urlsplit(self.service.url)
        query = parse_qs(parts.query)
        if (parts.scheme, parts.netloc) != (own.scheme, own.netloc) or "sig" not in query or "sp" not in query:
            return url
        segments = [s for s in parts.path.split("/") if s]
        own_segments = [s for s in own.path.split("/") if s]  # Azurite: /<account>/<container>/...
        if len(segments) <= len(own_segments):
            return url
        container = segments[len(own_segments)]
        sas = self.container_sas(container, query["sp"][0], need)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, sas, parts.fragment))

    # ---- signing ---------------------------------------------------------------------------------------------------
    def _sign(self, container: str, permission: str) -> SignedLink:
        expiry = self.now() + self.lifetime
        account_key = getattr(self.service.credential, "account_key", None)
        if account_key:
            signing = {"account_key": account_key}
        else:
            key, key_expiry = self._delegation_key(expiry)
            signing = {"user_delegation_key": key}
            expiry = min(expiry, key_expiry)
        self.links_signed += 1
        sas = generate_container_sas(
            self.service.account_name,
            container,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=expiry,  # no start time: valid at once, whatever a node's clock skew
            **signing,
        )
        return SignedLink(sas, expiry)

    def _delegation_key(self, link_expiry: datetime):
        """The current user-delegation key, requested again when `link_expiry` would outlive it by more than the
        reuse slack (under the lock); a link is cut to its key's end."""
        now = self.now()
        wanted = min(link_expiry, now + self.key_lifetime) - self.lifetime * REUSE_SLACK
        if self._key is not None and self._key_expiry is not None and self._key_expiry >= wanted:
            return self._key, self._key_expiry
        start, expiry = now - timedelta(minutes=15), now + self.key_lifetime
        try:
            with explained(f"storage {self.service.url}", keyed=False):
                key = self.service.get_user_delegation_key(start, expiry)
        except HttpResponseError as e:
            # Requesting the key is an action on the storage account: a role scoped to the container does
            # not allow it, whatever it allows on the blobs.
            raise SettingsError(
                f"azbatch: cannot get a user-delegation key from {self.service.url} ({e.status_code}); your "
                "Entra ID identity needs Storage Blob Data Contributor (or Storage Blob Delegator) on the storage "
                "account, its resource group or subscription, not only on the container; or set "
                "--azbatch-storage-account-key or --azbatch-managed-identity"
            ) from None
        self.keys_requested += 1
        self._key, self._key_expiry = key, expiry
        return key, expiry
