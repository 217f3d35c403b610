"""The Batch account (URL, name, key) and the default pool."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

from ..settings.executor_settings import SettingsError
from .values import SettingValues, check_key, check_url, flag, where

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def account_name_from_url(url: str) -> str | None:
    host = urlparse(url).hostname or ""
    if re.fullmatch(r"[\d.]+|localhost|\[?[0-9a-f:]+\]?", host):
        return None  # an IP or localhost carries no account name
    return host.split(".")[0] or None


@dataclass(frozen=True)
class AccountConfig:
    """The Batch account and the run's default pool."""

    url: str
    name: str | None  # None: not derivable from the URL (an IP or localhost) and not given
    key: str | None  # None: Microsoft Entra ID
    pool_id: str


def resolve_account(values: SettingValues) -> AccountConfig:
    account_url = values.get("account_url")
    if not account_url:
        raise SettingsError(
            f"azbatch: no Batch account URL; set {where('account_url')}, e.g. https://NAME.REGION.batch.azure.com"
        )
    if values.source("account_url") == "cli-variable" and "://" not in account_url:
        # The Azure CLI accepts its endpoint variable without a scheme and adds https:// itself; that is what
        # `az batch account show --query accountEndpoint -o tsv` prints.
        account_url = "https://" + account_url
    account_url = check_url("account_url", account_url)
    account_key = values.get("account_key") or None
    account_name = values.get("account_name") or account_name_from_url(account_url)
    if account_key:
        check_key("account_key", account_key)
        if not account_name:
            raise SettingsError(
                f"azbatch: cannot derive the Batch account name from {account_url}; set {where('account_name')}"
            )
    pool_id = values.get("pool_id")
    if not pool_id:
        raise SettingsError(f"azbatch: no pool given; set {where('pool_id')} to the id of a pre-created pool")
    if not _ID_RE.match(pool_id):
        raise SettingsError(
            f"azbatch: {flag('pool_id')} {pool_id!r} is not a valid pool id (letters, digits, '-', '_', ≤ 64)"
        )
    return AccountConfig(url=account_url, name=account_name, key=account_key, pool_id=pool_id)
