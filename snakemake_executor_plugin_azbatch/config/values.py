"""Reading one setting: the value Snakemake handed over, else `SNAKEMAKE_AZBATCH_<NAME>`, else the Azure CLI's
variable; plus the naming and checks every concern shares (flag names, URLs, keys)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import MISSING, fields
from typing import Mapping
from urllib.parse import urlparse

from ..settings.executor_settings import CLI_FALLBACKS, ENV_PREFIX, ExecutorSettings, SettingsError


def flag(name: str) -> str:
    return f"--azbatch-{name.replace('_', '-')}"


def where(name: str) -> str:
    """The flag and every variable a setting can come from, for messages."""
    fallback = CLI_FALLBACKS.get(name)
    return f"{flag(name)} (or {ENV_PREFIX}{name.upper()}" + (f" / {fallback})" if fallback else ")")


class SettingValues:
    """Values of the settings after fallbacks. Direct API users construct ExecutorSettings without argparse, so
    the variables apply to fields left at their default; `source(name)` tells where a value came from."""

    def __init__(self, settings: ExecutorSettings, environ: Mapping[str, str]):
        self.settings = settings
        self.environ = environ
        self.defaults = {
            f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(ExecutorSettings)
        }

    def source(self, name: str) -> str:
        """'settings' (flag, profile or variable through Snakemake), 'variable', 'cli-variable' or 'default'."""
        current = getattr(self.settings, name)
        if current not in (None, "", []) and current != self.defaults[name]:
            return "settings"
        if self.environ.get(ENV_PREFIX + name.upper()):
            return "variable"
        fallback = CLI_FALLBACKS.get(name)
        if fallback and self.environ.get(fallback):
            return "cli-variable"
        return "default"

    def get(self, name: str):
        source = self.source(name)
        if source == "variable":
            return self.environ[ENV_PREFIX + name.upper()]
        if source == "cli-variable":
            return self.environ[CLI_FALLBACKS[name]]
        return getattr(self.settings, name)


EXAMPLE_URLS = {
    "account_url": "https://NAME.REGION.batch.azure.com",
    "storage_account_url": "https://NAME.blob.core.windows.net",
}


def check_url(name: str, url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        hint = " (add https:// in front)" if "://" not in url else ""
        example = EXAMPLE_URLS.get(name, "https://HOST")
        raise SettingsError(f"azbatch: {flag(name)} {url!r} is not an http(s) URL{hint}; use e.g. {example}")
    return url.rstrip("/")


def check_key(name: str, key: str) -> None:
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(
            f"azbatch: {where(name)} is not a valid base64 account key; copy the key from the portal or "
            "`az batch account keys list` / `az storage account keys list`"
        ) from None
