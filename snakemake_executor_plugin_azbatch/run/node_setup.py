"""What this run needs on its nodes and how they get it: the checks before anything is submitted (bootstrap mode vs
pool, conda / apptainer rules vs what can reach the node), the job preparation task (bootstrap part and its staged
files), the prefix every task runs before Snakemake, and the arguments that point the node's Snakemake at the
node-wide conda and apptainer prefixes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from ..tasks import task_spec
from ..pools.pool_info import PoolInfo
from ..bootstrap import node_script
from ..node_software import wheelhouse
from ..node_software.marketplace_python import image_python
from ..config import Config
from ..settings.executor_settings import SettingsError
from ..staging import node_commands

DEFAULT_NODE_PYTHON = "3.12"  # Ubuntu 24.04, Batch's current Ubuntu image
def _too_old(python: str) -> bool:
    return tuple(int(p) for p in python.split(".")) < node_script.MIN_PYTHON


@dataclass(frozen=True)
class StagedFiles:
    """Local files staged for the preparation task. With `manifest` (its sha256), `resource_files` is only that
    manifest and the script downloads the listed files itself, with `env` (a read URL), when it needs them.
    Without, `resource_files` are the files and Batch downloads them before every preparation: so with a managed
    identity, as the node has no token of its own to fetch with."""

    resource_files: list[dict]
    manifest: str | None = None
    env: dict = field(default_factory=dict)


def _fetch(files: StagedFiles) -> str:
    """The node's command that downloads staged files through their manifest ("" when they are resource files).
    node_helper.py comes with the sources part's resource files, which every Batch job's preparation has."""
    return node_commands.fetch_command(files.manifest) if files.manifest else ""


@dataclass
class NodeSetup:
    """`methods`: Snakemake's software deployment methods of the run ("conda", "apptainer", ...); `stage([(local
    path, node path)]) -> StagedFiles` stages local files (content-addressed)."""

    config: Config
    methods: frozenset[str]
    snakemake_version: str
    stage: Callable[[list[tuple[Path, str]]], StagedFiles]
    log: Callable[[str], None] = lambda _: None
    cache: Path = field(default_factory=wheelhouse.cache_root)
    _prep: dict = field(default_factory=dict)

    # ---- what the nodes need ------------------------------------------------------------------------------------
    @property
    def installs_snakemake(self) -> bool:
        return self.config.software.bootstrap in ("pip", "offline")

    def _has(self, tool: str) -> bool:
        return tool in self.config.software.node_provides

    @property
    def installs_conda(self) -> bool:
        return self.installs_snakemake and not self._has("conda") and (
            "conda" in self.methods or self.installs_apptainer
        )

    @property
    def installs_apptainer(self) -> bool:
        return self.installs_snakemake and "apptainer" in self.methods and not self._has("apptainer")

    def check(self, pools: list[PoolInfo], planned: str | None = None) -> None:
        """One line when this run's needs cannot be met on its nodes; before anything is created or submitted.
        `planned`: the id of a pool the run is about to create (its info comes from the settings)."""
        mode = self.config.software.bootstrap
        for tool, method in (("conda", "conda"), ("apptainer", "apptainer")):
            if method not in self.methods or self._has(tool) or mode == "pip":
                continue
            if mode == "container":
                continue  # the image is the user's statement of what the tasks have
            why = "offline nodes cannot download it" if mode == "offline" else f"--azbatch-bootstrap {mode} installs nothing"
            raise SettingsError(
                f"azbatch: --software-deployment-method {method} needs {tool} on the nodes, but {why}; use "
                f"--azbatch-bootstrap pip (nodes with internet install it once), or install it in the pool's start "
                f"task or image and add --azbatch-node-provides {tool}"
            )
        for pool in pools:
            self._check_pool(pool, planned is not None and pool.id.lower() == planned.lower())

    def _check_pool(self, pool: PoolInfo, planned: bool) -> None:
        """The pool's image against what the bootstrap needs of it: the pip and offline bootstraps run uv and
        Snakemake 9 on the image's python3 (>= 3.11); container, app-package and none bring their own or are the
        user's statement. Container images vs container support are checked per rule (PoolInfo.container_problem)."""
        if self.config.software.bootstrap not in ("pip", "offline") or self.config.software.node_python is not None:
            return
        if self.config.software.container_image:
            return  # pip / offline then install into the tasks' image, with its python3
        python = image_python(pool.image)
        if python is None or not _too_old(python):
            return
        image, floor = "/".join(pool.image or ()), ".".join(map(str, node_script.MIN_PYTHON))
        if planned:
            raise SettingsError(
                f"azbatch: pool {pool.id!r} would be created with {image}, whose python3 {python} is older than "
                f"--azbatch-bootstrap {self.config.software.bootstrap} needs (Snakemake 9: >= {floor}); nothing was "
                "created. "
                "Use --azbatch-pool-image ubuntu-24.04 (the default), or --azbatch-bootstrap container with an image"
            )
        raise SettingsError(
            f"azbatch: pool {pool.id!r} runs {image}, whose python3 {python} is older than --azbatch-bootstrap "
            f"{self.config.software.bootstrap} needs (Snakemake 9: >= {floor}); use a pool image with a newer python3 "
            "(e.g. Ubuntu 24.04), a container image, or set --azbatch-node-python if the start task installs a newer python3"
        )

    def check_applications(self, missing: list[str]) -> None:
        if self.config.software.bootstrap == "app-package" and missing:
            raise SettingsError(
                f"azbatch: --azbatch-bootstrap app-package: application package {missing[0]} does not exist in the "
                "Batch account; publish it (`az batch application package create`) or fix --azbatch-application-packages"
            )

    # ---- the job preparation task -------------------------------------------------------------------------------
    def node_python(self, pool: PoolInfo) -> str:
        return self.config.software.node_python or image_python(pool.image) or DEFAULT_NODE_PYTHON

    @cached_property
    def ca_sha256(self) -> str | None:
        """sha256 of --azbatch-node-ca-bundle's content (names the node's combined bundle), when set."""
        path = self.config.software.node_ca_bundle
        if path is None or not self.installs_snakemake:
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def preparation_parts(self, pool: PoolInfo) -> tuple[list[str], list[dict], dict]:
        """The bootstrap's parts, the resource files they need and the preparation task's environment.

        pip: the node fetches the pinned uv from the package index itself (it must reach the index for Snakemake
        anyway), so nothing large is staged. offline: uv's wheel (~18 MB) and the wheelhouse are staged once per
        storage container; each reaches the node through a small manifest that the script fetches from only when
        that installation is missing, so a node (or a later run's job) that has them downloads nothing (see
        StagedFiles for a managed identity). --azbatch-node-ca-bundle is staged the same way, before both."""
        if not self.installs_snakemake:
            return [], [], {}
        staged: list[StagedFiles] = []
        parts = []
        if self.ca_sha256:
            ca = self.stage([(self.config.software.node_ca_bundle, f"{node_script.CA_DIR}/ca.pem")])
            staged.append(ca)
            parts.append(node_script.ca_part(self.ca_sha256, _fetch(ca)))
        offline = self.config.software.bootstrap == "offline"
        python = self.node_python(pool)
        if offline:
            uv = wheelhouse.uv_version()
            uv_wheel = wheelhouse.uv_wheel(self.cache, uv)
            uv_files = self.stage([(uv_wheel, f"{node_script.UV_WHEEL_DIR}/{uv_wheel.name}")])
            if self.config.software.node_python is None:
                self.log(f"azbatch: offline wheelhouse for the nodes' Python {python} (from the pool's image or the "
                         "default); set --azbatch-node-python if the nodes have another")
            wheels = wheelhouse.wheelhouse(self.cache, self.snakemake_version, python,
                                           self.config.software.node_packages, log=self.log)
            wheel_files = self.stage([(w, f"{node_script.WHEELHOUSE_DIR}/{w.name}") for w in wheels])
            staged += [uv_files, wheel_files]
            install = node_script.SnakemakeInstall(self.snakemake_version, uv_wheel.name, uv, True, python,
                                                   self.config.software.node_packages, _fetch(uv_files),
                                                   _fetch(wheel_files))
        else:
            install = node_script.SnakemakeInstall(self.snakemake_version, python=python,
                                                   extras=self.config.software.node_packages)
        parts.append(node_script.snakemake_part(install))
        if self.installs_conda:
            parts.append(node_script.conda_part(node_script.CondaInstall(
                self.config.software.conda_installer, apptainer=self.installs_apptainer)))
        env = {k: v for s in staged for k, v in s.env.items()}
        return parts, [f for s in staged for f in s.resource_files], env

    def preparation_task(
        self, pool: PoolInfo, extra_parts: list[str] = (), extra_files: list[dict] = ()
    ) -> dict | None:
        """The job preparation task for a Batch job on `pool` (None when nothing is prepared): the bootstrap's parts,
        then `extra_parts` (e.g. the sources archive's) with their resource files; bootstrap files are staged once
        per run."""
        key = self.node_python(pool)
        if key not in self._prep:
            self._prep[key] = self.preparation_parts(pool)
        parts, resource_files, env = self._prep[key]
        parts = [*parts, *(p for p in extra_parts if p)]
        resource_files = [*resource_files, *extra_files]
        if not parts:
            return None
        script = node_script.preparation_script(parts)
        # In the tasks' image whenever they run in one: what pip installs then fits the tasks' Python, and the
        # sources part needs only the image's python3 (which the image must have), not the container host's.
        return task_spec.preparation_task(script, resource_files, self.config.software.container_image, env)

    # ---- every task ---------------------------------------------------------------------------------------------
    def exec_prefix(self) -> str:
        """Shell before Snakemake in every task: application packages' bin/ executable and on PATH, the node-wide
        installs on PATH."""
        parts = []
        dirs = [f"${{{p.env_var}}}/bin" for p in self.config.software.application_packages]
        if dirs:
            parts += [node_script.executable_files(dirs), task_spec.path_prefix(dirs)]
        if self.installs_snakemake:
            target = node_script.snakemake_dir(self.snakemake_version, self.config.software.node_packages)
            parts.append(node_script.task_prefix(node_script.task_path_dirs(
                target, self.installs_conda, self.installs_apptainer), self.ca_sha256))
        return "; ".join(parts)

    def snakemake_args(self) -> str:
        """Node-wide prefixes for the node's Snakemake, so each conda env / apptainer image is made once per node
        (after Snakemake's own general arguments, so these win over a local --conda-prefix)."""
        args = []
        if "conda" in self.methods:
            args.append(f'--conda-prefix "{node_script.conda_envs_dir()}"')
        if "apptainer" in self.methods:
            args.append(f'--apptainer-prefix "{node_script.apptainer_images_dir()}"')
        return " ".join(args)
