"""How Python and Snakemake reach the nodes: the bootstrap mode and the container image."""

from __future__ import annotations

from ..settings import BOOTSTRAP_MODES, SettingsError
from .values import SettingValues, flag, where


def resolve_bootstrap(values: SettingValues, has_packages: bool) -> dict:
    image = values.get("container_image") or None
    bootstrap = values.get("bootstrap") or "auto"
    if bootstrap not in BOOTSTRAP_MODES:
        raise SettingsError(f"azbatch: {flag('bootstrap')} {bootstrap!r}: choose one of {', '.join(BOOTSTRAP_MODES)}")
    if bootstrap == "auto":
        bootstrap = "container" if image else "app-package" if has_packages else "pip"
    if bootstrap == "container" and not image:
        raise SettingsError(f"azbatch: {flag('bootstrap')} container needs {where('container_image')}")
    if bootstrap == "app-package" and not has_packages:
        raise SettingsError(f"azbatch: {flag('bootstrap')} app-package needs {where('application_packages')}")
    return {"container_image": image, "bootstrap": bootstrap, "precommand": values.get("precommand") or None}
