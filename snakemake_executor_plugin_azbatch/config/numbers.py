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
    """What runs leave behind and take over: this run's Batch jobs and container for debugging (`job`), other
    runs' leftovers (`orphans`); dead runs' tasks never adopted (`no_adopt`, adoption/); SIGHUP leaves the tasks
    for a later run to adopt (`leave_on_hangup`, run_end.py)."""

    job: bool
    orphans: bool
    no_adopt: bool
    leave_on_hangup: bool


def resolve_keep(values: SettingValues) -> KeepConfig:
    return KeepConfig(job=flag(values, "keep_job"), orphans=flag(values, "keep_orphans"),
                      no_adopt=flag(values, "no_adopt"), leave_on_hangup=flag(values, "leave_on_hangup"))
