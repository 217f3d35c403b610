"""How a setting is described: its metadata (help, variable, what an unset value means), the default `--help` shows
(derived from the field, so it cannot drift), and the one-line settings error."""

import types
from dataclasses import MISSING, fields
from typing import Optional

from snakemake.exceptions import ApiError

ENV_PREFIX = "SNAKEMAKE_AZBATCH_"
# Azure CLI's own variables, honoured when the plugin's setting is absent.
CLI_FALLBACKS = {
    "account_url": "AZURE_BATCH_ENDPOINT",
    "account_name": "AZURE_BATCH_ACCOUNT",
    "account_key": "AZURE_BATCH_ACCESS_KEY",
    "storage_connection_string": "AZURE_STORAGE_CONNECTION_STRING",
}


class SettingsError(ApiError):
    """A bad setting; the message is one line naming the setting and what to do. (An ApiError, because Snakemake
    prints those as one line, without a traceback.)"""


def setting(help: str, unset: Optional[str] = None, **metadata) -> dict:
    """A setting's metadata. `unset`: what an unset (None) setting means, for `--help`'s "Default: ..." line."""
    return {"help": help, "env_var": True, **({"unset": unset} if unset else {}), **metadata}


def default_text(f) -> str:
    """What `--help` says a setting's default is, from the dataclass field itself."""
    if "unset" in f.metadata:
        return f.metadata["unset"]
    value = f.default_factory() if f.default is MISSING else f.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "" or value == []:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def help_with_defaults(cls):
    """Every setting's help ends with its default (Snakemake shows none for plugin settings), derived from the
    field, so the help cannot drift from the code. Field metadata is read-only: each field gets a new mapping."""
    for f in fields(cls):
        help_text = f.metadata["help"].rstrip()
        tail = "Required." if f.metadata.get("required") else f"Default: {default_text(f)}."
        f.metadata = types.MappingProxyType({**f.metadata, "help": f"{help_text} {tail}"})
    return cls
