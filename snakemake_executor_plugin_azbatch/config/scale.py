"""Settings for large and long runs: parallel submission and uploads, the input-manifest threshold, the status
interval and its adaptive bound, how long finished tasks' directories stay on the nodes, how long a run waits for
unusable nodes or out an outage, the run's heartbeat."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings.executor_settings import SettingsError
from .numbers import number
from .values import SettingValues, where

MAX_SUBMIT_CONCURRENCY = 32


@dataclass(frozen=True)
class ScaleConfig:
    submit_concurrency: int
    upload_concurrency: int
    input_manifest_threshold: int
    status_interval: float | None  # None: Snakemake's --seconds-between-status-checks (polling.first_interval)
    status_interval_max: float | None  # None: derived from the first interval (polling.default_maximum)
    task_retention_minutes: int
    unusable_wait: float  # seconds without a usable node in a pool before the run ends (node_states)
    heartbeat_interval: float  # seconds between heartbeats (run_watch.py)
    heartbeat_stale: float  # seconds without one before another run counts as dead (recovery.py)
    outage_tolerance_minutes: float  # Batch or storage unreachable mid-run this long ends the run (outage.py)


def _or_default(values: SettingValues, name: str, value):
    """An unset value (None) means the setting's default, stated once on its ExecutorSettings field."""
    return values.defaults[name] if value is None else value


def resolve_scale(values: SettingValues) -> ScaleConfig:
    upload = number(values, "upload_concurrency", int, 1)
    status_interval = number(values, "status_interval", float, 0.1)
    outage = number(values, "outage_tolerance", float, 0.01)
    concurrency = number(values, "submit_concurrency", int, 1)
    if concurrency is not None and concurrency > MAX_SUBMIT_CONCURRENCY:
        raise SettingsError(f"azbatch: {where('submit_concurrency')} must be at most {MAX_SUBMIT_CONCURRENCY}")
    threshold = number(values, "input_manifest_threshold", int, 0)
    unusable_wait = number(values, "unusable_wait", float, 0)
    heartbeat = number(values, "heartbeat_interval", float, 0.5)
    heartbeat = values.defaults["heartbeat_interval"] if heartbeat is None else heartbeat
    stale = number(values, "heartbeat_stale", float, 1)
    stale = values.defaults["heartbeat_stale"] if stale is None else stale
    if stale < 2 * heartbeat:
        raise SettingsError(f"azbatch: {where('heartbeat_stale')} ({stale:g} s) must be at least twice "
                            f"{where('heartbeat_interval')} ({heartbeat:g} s), or live runs would count as dead")
    return ScaleConfig(
        submit_concurrency=_or_default(values, "submit_concurrency", concurrency),
        upload_concurrency=_or_default(values, "upload_concurrency", upload),
        input_manifest_threshold=_or_default(values, "input_manifest_threshold", threshold),
        status_interval=status_interval,
        status_interval_max=number(values, "status_interval_max", float, 0.1),
        task_retention_minutes=_or_default(values, "task_retention", number(values, "task_retention", int, 0)),
        unusable_wait=_or_default(values, "unusable_wait", unusable_wait),
        heartbeat_interval=heartbeat,
        heartbeat_stale=stale,
        outage_tolerance_minutes=_or_default(values, "outage_tolerance", outage),
    )
