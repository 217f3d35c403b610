"""Reading numeric and boolean settings; what a run keeps after it ends (keep-job, keep-orphans)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings.executor_settings import SettingsError
from .values import SettingValues, where


def number(values: SettingValues, name: str, kind, minimum):
    raw = values.get(name)
    try:
        value = kind(raw) if raw is not None else None
    except (TypeError, ValueError):
        raise SettingsError(f"azbatch: {where(name)} {raw!r} is not a number") from None
    if value is not None and value < minimum:
        raise SettingsError(f"azbatch: {where(name)} must be at least {minimum}")
    return value


def flag(values: SettingValues, name: str) -> bool:
    value = values.get(name)
    if isinstance(value, str):
        value = value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class KeepConfig:
    """What the run leaves behind for debugging: its Batch jobs and container (`job`), other runs' leftovers
    (`orphans`)."""

    job: bool
    orphans: bool


def resolve_keep(values: SettingValues) -> KeepConfig:
    return KeepConfig(job=flag(values, "keep_job"), orphans=flag(values, "keep_orphans"))
