"""`wait_for`: the one way tests wait. Polls a predicate; on timeout fails with a message saying what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float, message: str | Callable[[], str], *, interval: float = 0.05
) -> T:
    """The first truthy value of `predicate()`; AssertionError with `message` (called, if callable, to describe
    the last state seen) when `timeout` seconds pass first. The predicate is checked once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g} s: {text}")
        time.sleep(interval)


def describe(value: Any, limit: int = 2000) -> str:
    """A bounded repr for timeout messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
