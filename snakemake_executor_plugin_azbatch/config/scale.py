"""Settings for large runs: parallel submission, the input-manifest threshold, the adaptive status interval's
bound, how long finished tasks' directories stay on the nodes and how long a run waits for unusable nodes,
the run's heartbeat."""

from __future__ import annotations

from ..settings.executor_settings import SettingsError
from .numbers import number
from .values import SettingValues, where

MAX_SUBMIT_CONCURRENCY = 32


def resolve_scale(values: SettingValues) -> dict:
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
    # An unset value (None) means the setting's default, stated once in settings/scale_settings.py & co.
    return {
        "heartbeat_interval": heartbeat,
        "heartbeat_stale": stale,
        "submit_concurrency": values.defaults["submit_concurrency"] if concurrency is None else concurrency,
        "input_manifest_threshold": values.defaults["input_manifest_threshold"] if threshold is None else threshold,
        "status_interval_max": number(values, "status_interval_max", float, 0.1),
        "task_retention_minutes": number(values, "task_retention", int, 0) or 0,
        "unusable_wait": values.defaults["unusable_wait"] if unusable_wait is None else unusable_wait,
    }
