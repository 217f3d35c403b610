"""What a run stages once for all its tasks: its sources and local extra files as one archive (extracted by each
node's job preparation task), and bootstrap files the nodes fetch only when they install."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from ..config import Config
from ..staging import NodePaths, Staging
from ..staging.manifest import stage_manifest
from ..staging.node_helper import READ_URL_VARIABLE
from ..staging.sources_archive import PreparedSources, stage_sources
from .node_setup import StagedFiles


class RunFiles:
    """`workflow_sources()`: the workflow's source files (Snakemake's `dag.get_sources()`); `archive`: where the
    sources archive is written locally."""

    def __init__(self, config: Config, staging: Staging, node_paths: NodePaths,
                 workflow_sources: Callable[[], Iterable[str]], archive: Path):
        self.config = config
        self.staging = staging
        self.node_paths = node_paths
        self.workflow_sources = workflow_sources
        self.archive = archive
        self._sources: PreparedSources | None = None  # staged at the first submission, once per run

    def stage(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Resource files for (local path, node path) pairs."""
        if not pairs:
            return []
        blobs = self.staging.stage_files(p for p, _ in pairs)
        return [self.staging.resource_file(blobs[os.path.abspath(p)], node) for p, node in pairs]

    def stage_fetched(self, pairs: list[tuple[Path, str]]) -> StagedFiles:
        """Bootstrap files the node fetches only when it needs them: one manifest resource file and a read URL
        (with a managed identity, the files themselves: the node could not fetch without a token)."""
        pairs = [(str(local), node) for local, node in pairs]
        if self.staging.identity:
            return StagedFiles(self.stage(pairs))
        blobs = self.staging.stage_files(p for p, _ in pairs)
        spec, digest = stage_manifest(self.staging, pairs, blobs)
        return StagedFiles([spec], digest, {READ_URL_VARIABLE: self.staging.read_container_url()})

    def sources(self) -> PreparedSources:
        """The run's sources and local extra files as one archive blob, extracted by each node's job preparation
        task; URL extra files are downloaded there once per node too."""
        if self._sources is None:
            pairs = []
            for source in sorted(self.workflow_sources()):
                for f in NodePaths.expand(source):
                    if os.path.isfile(f):
                        pairs.append((f, self.node_paths.node_path(f, "workflow source")))
            pairs += [(x.source, x.node_path) for x in self.config.files.resource_files if not x.is_url]
            urls = [(x.source, x.node_path) for x in self.config.files.resource_files if x.is_url]
            self._sources = stage_sources(self.staging, self.archive, pairs, urls)
        return self._sources
