"""The staging storage account (URL and key or connection string, container and prefix) and how nodes reach it
(SAS links of a lifetime, or the pool's managed identity)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..settings.executor_settings import DEFAULT_CONTAINER, SettingsError
from .numbers import number
from .values import SettingValues, check_key, check_url, flag, where

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
# A user-delegation key, and so every SAS it signs, may expire at most 7 days after it is requested.
MAX_USER_DELEGATION_HOURS = 7 * 24


@dataclass(frozen=True)
class StorageConfig:
    """The staging storage account."""

    account_url: str | None
    account_key: str | None
    connection_string: str | None
    container: str
    prefix: str  # "" or ending in "/"


@dataclass(frozen=True)
class LinksConfig:
    """How nodes reach the staging storage: SAS links living `sas_hours`, or the pool's managed identity."""

    sas_hours: float
    managed_identity: str | None


def resolve_storage(values: SettingValues) -> StorageConfig:
    connection_string = values.get("storage_connection_string") or None
    account_url = values.get("storage_account_url") or None
    account_key = values.get("storage_account_key") or None
    if account_url:
        account_url = check_url("storage_account_url", account_url)
    if account_key:
        check_key("storage_account_key", account_key)
        if not account_url:
            raise SettingsError(
                f"azbatch: {flag('storage_account_key')} needs {where('storage_account_url')} as well"
            )
    if connection_string and "=" not in connection_string:
        raise SettingsError(
            f"azbatch: {where('storage_connection_string')} is not a connection string "
            "(expected KEY=VALUE;... as shown by `az storage account show-connection-string`)"
        )
    if not account_url and not connection_string:
        raise SettingsError(
            f"azbatch: no staging storage; set {where('storage_account_url')} (with a key or Entra ID) "
            f"or {where('storage_connection_string')}"
        )
    container = values.get("storage_container") or DEFAULT_CONTAINER
    if not _CONTAINER_RE.match(container):
        raise SettingsError(
            f"azbatch: {flag('storage_container')} {container!r} is not a valid container name "
            "(3-63 lowercase letters, digits and single hyphens)"
        )
    prefix = (values.get("storage_prefix") or "").strip("/")
    return StorageConfig(account_url=account_url, account_key=account_key, connection_string=connection_string,
                         container=container, prefix=prefix + "/" if prefix else "")


def resolve_links(values: SettingValues) -> LinksConfig:
    """Hours, fractions allowed (0.02 = 72 s links for a rehearsal of link renewal); more than zero."""
    hours = number(values, "sas_hours", float, 0)
    if hours is not None and not 0 < hours < float("inf"):
        raise SettingsError(f"azbatch: {where('sas_hours')} must be more than 0 hours (fractions allowed, e.g. 0.5)")
    return LinksConfig(sas_hours=hours, managed_identity=values.get("managed_identity") or None)


def uses_user_delegation_sas(storage: StorageConfig, links: LinksConfig) -> bool:
    """Tasks get SAS URLs signed with a user-delegation key (Microsoft Entra ID) when neither a storage key, a
    connection string nor the pool's managed identity is configured."""
    return not (links.managed_identity or storage.account_key or storage.connection_string)


def check_sas_lifetime(storage: StorageConfig, links: LinksConfig) -> None:
    hours = links.sas_hours
    if hours > MAX_USER_DELEGATION_HOURS and uses_user_delegation_sas(storage, links):
        raise SettingsError(
            f"azbatch: {where('sas_hours')} {hours:g} is longer than a user-delegation SAS may live with Microsoft "
            f"Entra ID (at most {MAX_USER_DELEGATION_HOURS} hours, 7 days); lower it, or set "
            f"{flag('storage_account_key')} or {flag('managed_identity')}"
        )
