"""Numeric and boolean settings: SAS lifetime, transfer concurrency, status interval, outage tolerance, keep-job,
keep-orphans."""

from __future__ import annotations

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


def sas_hours(values: SettingValues) -> float | None:
    """Hours, fractions allowed (0.02 = 72 s links for a rehearsal of link renewal); more than zero."""
    hours = number(values, "sas_hours", float, 0)
    if hours is not None and not 0 < hours < float("inf"):
        raise SettingsError(f"azbatch: {where('sas_hours')} must be more than 0 hours (fractions allowed, e.g. 0.5)")
    return hours


def flag(values: SettingValues, name: str) -> bool:
    value = values.get(name)
    if isinstance(value, str):
        value = value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def resolve_numbers(values: SettingValues) -> dict:
    return {
        "keep_job": flag(values, "keep_job"),
        "keep_orphans": flag(values, "keep_orphans"),
        "sas_hours": sas_hours(values),
        "upload_concurrency": number(values, "upload_concurrency", int, 1),
        "status_interval": number(values, "status_interval", float, 0.1),
        "outage_tolerance_minutes": number(values, "outage_tolerance", float, 0.01) or 10.0,
    }
