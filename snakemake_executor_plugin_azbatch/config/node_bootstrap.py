"""How Python and Snakemake reach the nodes: the bootstrap mode, the container image, the nodes' Python version and
the tools they already have."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..settings.executor_settings import BOOTSTRAP_MODES, NODE_TOOLS, SettingsError
from .packages import AppPackage
from .values import SettingValues, check_url, flag, where

MIN_NODE_PYTHON = (3, 11)


@dataclass(frozen=True)
class NodeSoftwareConfig:
    """What the nodes run tasks with: how Python and Snakemake get there, and what else they have."""

    bootstrap: str  # resolved: pip | offline | container | app-package | none
    container_image: str | None
    application_packages: tuple[AppPackage, ...]
    precommand: str | None
    node_python: str | None  # X.Y, for the offline wheelhouse
    node_provides: tuple[str, ...]  # conda, apptainer
    node_packages: tuple[str, ...]  # more requirements installed with Snakemake by the bootstrap
    conda_installer: str
    node_ca_bundle: Path | None  # CA certificates the nodes trust besides their own (bootstrap.py checks it)


def resolve_bootstrap(values: SettingValues, packages: tuple[AppPackage, ...]) -> NodeSoftwareConfig:
    image = values.get("container_image") or None
    has_packages = bool(packages)
    bootstrap = values.get("bootstrap") or values.defaults["bootstrap"]
    if bootstrap not in BOOTSTRAP_MODES:
        raise SettingsError(f"azbatch: {flag('bootstrap')} {bootstrap!r}: choose one of {', '.join(BOOTSTRAP_MODES)}")
    if bootstrap == "auto":
        bootstrap = "container" if image else "app-package" if has_packages else "pip"
    if bootstrap == "container" and not image:
        raise SettingsError(f"azbatch: {flag('bootstrap')} container needs {where('container_image')}")
    if bootstrap == "app-package" and not has_packages:
        raise SettingsError(f"azbatch: {flag('bootstrap')} app-package needs {where('application_packages')}")
    return NodeSoftwareConfig(
        bootstrap=bootstrap,
        container_image=image,
        application_packages=packages,
        precommand=values.get("precommand") or None,
        node_python=_node_python(values.get("node_python") or None),
        node_provides=_node_provides(values.get("node_provides") or []),
        node_packages=_node_packages(values.get("node_packages") or [], bootstrap),
        conda_installer=check_url("conda_installer", values.get("conda_installer")),
        node_ca_bundle=_node_ca_bundle(values.get("node_ca_bundle") or None, bootstrap),
    )


def _node_ca_bundle(text: str | None, bootstrap: str) -> Path | None:
    """A readable PEM file with at least one certificate, for bootstraps that install something."""
    if text is None:
        return None
    path = Path(str(text)).expanduser().resolve()
    try:
        content = path.read_text(errors="replace")
    except OSError as e:
        raise SettingsError(f"azbatch: {where('node_ca_bundle')} {text!r}: cannot read it ({e.strerror})") from None
    if "-----BEGIN CERTIFICATE-----" not in content:
        raise SettingsError(f"azbatch: {where('node_ca_bundle')} {text!r}: no PEM certificate in it; give a file "
                            "with -----BEGIN CERTIFICATE----- blocks")
    if bootstrap not in ("pip", "offline"):
        raise SettingsError(f"azbatch: {flag('node_ca_bundle')} is installed by the pip and offline bootstraps, "
                            f"not by {flag('bootstrap')} {bootstrap}; add the CA to the image instead")
    return path


def _node_python(text: str | None) -> str | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(3)\.(\d+)\s*", str(text))
    if not match or (int(match[1]), int(match[2])) < MIN_NODE_PYTHON:
        raise SettingsError(
            f"azbatch: {where('node_python')} {text!r}: give the nodes' python3 version as X.Y, at least 3.11 "
            "(Snakemake 9's minimum), e.g. 3.12"
        )
    return f"{match[1]}.{match[2]}"


def _node_provides(items) -> tuple[str, ...]:
    items = [part for item in ([items] if isinstance(items, str) else items) for part in str(item).replace(",", " ").split()]
    tools = tuple(dict.fromkeys(str(i).strip().lower() for i in items if str(i).strip()))
    unknown = [t for t in tools if t not in NODE_TOOLS]
    if unknown:
        raise SettingsError(
            f"azbatch: {where('node_provides')} {unknown[0]!r}: name tools among {', '.join(NODE_TOOLS)}"
        )
    return tools


def _node_packages(items, bootstrap: str) -> tuple[str, ...]:
    from packaging.requirements import InvalidRequirement, Requirement

    # Separated by spaces (a variable arrives as one string), so a requirement is written without spaces.
    items = [part for item in ([items] if isinstance(items, str) else items) for part in str(item).split()]
    packages = tuple(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
    for package in packages:
        try:
            Requirement(package)
        except InvalidRequirement:
            raise SettingsError(
                f"azbatch: {where('node_packages')} {package!r} is not a pip requirement; write e.g. matplotlib or "
                "matplotlib==3.9.2"
            ) from None
    if packages and bootstrap not in ("pip", "offline"):
        raise SettingsError(
            f"azbatch: {flag('node_packages')} is installed by the pip and offline bootstraps, not by "
            f"{flag('bootstrap')} {bootstrap}; put the packages into the image / application package instead"
        )
    return packages
