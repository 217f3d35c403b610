"""Files every task gets besides its inputs: extra resource files and paths already mounted on the nodes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from ..settings.executor_settings import SettingsError
from .packages import split_items
from .values import SettingValues, flag


@dataclass(frozen=True)
class ExtraResourceFile:
    source: str  # local path or http(s) URL
    node_path: str

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


def parse_resource_file(item: str) -> ExtraResourceFile:
    # [NODE_PATH=]SOURCE: a URL's query string has '=' too, so the node path comes first.
    head, sep, tail = item.partition("=")
    node_path, source = (head, tail) if sep and "://" not in head else ("", item)
    node_path = node_path or os.path.basename(urlparse(source).path if "://" in source else source)
    if not node_path or os.path.isabs(node_path) or ".." in node_path.split("/"):
        raise SettingsError(
            f"azbatch: {flag('resource_files')} {item!r}: NODE_PATH must be a relative path inside the "
            "task working directory, e.g. refs/genome.fa"
        )
    if "://" not in source and not os.path.isfile(source):
        raise SettingsError(f"azbatch: {flag('resource_files')} {item!r}: no such local file {source!r}")
    return ExtraResourceFile(source, node_path)


@dataclass(frozen=True)
class TaskFilesConfig:
    """Files every task gets besides its inputs, and paths the nodes have mounted (never staged)."""

    resource_files: tuple[ExtraResourceFile, ...]
    mounted_paths: tuple[str, ...]


def resolve_resource_files(values: SettingValues) -> TaskFilesConfig:
    extra = [parse_resource_file(item) for item in split_items(values.get("resource_files"), r"[,\n]+")]
    mounted = []
    for item in split_items(values.get("mounted_paths"), r"[,\n]+"):
        if not os.path.isabs(item):
            raise SettingsError(
                f"azbatch: {flag('mounted_paths')} {item!r} must be an absolute path mounted on the nodes"
            )
        mounted.append(os.path.normpath(item))
    return TaskFilesConfig(resource_files=tuple(extra), mounted_paths=tuple(mounted))
