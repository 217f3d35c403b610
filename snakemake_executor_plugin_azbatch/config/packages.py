"""Batch application packages for every task (`NAME[:VERSION]`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..settings.executor_settings import SettingsError
from .values import SettingValues, flag

_APP_PACKAGE_RE = re.compile(r"^([A-Za-z0-9_-]{1,64})(?::([A-Za-z0-9_.-]{1,64}))?$")


@dataclass(frozen=True)
class AppPackage:
    name: str
    version: str | None

    def reference(self) -> dict:
        ref = {"applicationId": self.name}
        if self.version:
            ref["version"] = self.version
        return ref

    @property
    def env_var(self) -> str:
        # Batch on Linux exports AZ_BATCH_APP_PACKAGE_<id>[_<version>] with '.', '-' and '#' flattened to '_'.
        name = f"AZ_BATCH_APP_PACKAGE_{self.name}" + (f"_{self.version}" if self.version else "")
        return re.sub(r"[.#-]", "_", name)


def split_items(values: list[str] | str | None, separators: str = r"[,\s]+") -> list[str]:
    """List settings also accept one comma-separated string (e.g. from an environment variable)."""
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in re.split(separators, value) if item.strip()]


def resolve_packages(values: SettingValues) -> tuple[AppPackage, ...]:
    packages = []
    for item in split_items(values.get("application_packages")):
        m = _APP_PACKAGE_RE.match(item)
        if not m:
            raise SettingsError(
                f"azbatch: {flag('application_packages')} {item!r}: expected NAME[:VERSION], e.g. tools:1.0"
            )
        packages.append(AppPackage(m.group(1), m.group(2)))
    return tuple(packages)
