"""Numeric and boolean settings: SAS lifetime, transfer concurrency, status interval, keep-job."""

from __future__ import annotations

from ..settings import SettingsError
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


def resolve_numbers(values: SettingValues) -> dict:
    keep_job = values.get("keep_job")
    if isinstance(keep_job, str):
        keep_job = keep_job.strip().lower() in ("1", "true", "yes", "on")
    return {
        "keep_job": bool(keep_job),
        "sas_hours": number(values, "sas_hours", int, 1),
        "upload_concurrency": number(values, "upload_concurrency", int, 1),
        "status_interval": number(values, "status_interval", float, 0.1),
    }
