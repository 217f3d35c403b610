"""Where things are on a local Batch Linux node, and the `AZ_BATCH_*` environment a task sees there.

A node is the directory `ROOT/nodes/<pool>/<node>/`, laid out as on Batch: `shared/`, `startup/`, `applications/`,
`workitems/<job>/job-1/<task>/{wd,stdout.txt,stderr.txt}`, `fsmounts/`, `certs/`. Every backend and the model
ask this module for paths and variables, so the layout is defined once. The environment of a task is built in
Batch's order: the node's variables, then the job's commonEnvironmentSettings, then the task's
environmentSettings (later settings win).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_SUBDIRS = ("shared", "startup", "applications", "workitems", "fsmounts", "certs")
TASK_USER = "_azbatch"


def node_id_for(pool_id: str, index: int) -> str:
    """A Batch-looking node id (`tvmps_<hex>_<n>`), stable for a pool id and index."""
    digest = hashlib.sha256(f"{pool_id}/{index}".encode()).hexdigest()[:10]
    return f"tvmps_{digest}_{index}"


@dataclass(frozen=True)
class NodeLayout:
    """The directories of one node; `root` is the node's AZ_BATCH_NODE_ROOT_DIR."""

    pool_id: str
    node_id: str
    root: Path
    dedicated: bool = True  # False: a Spot node (AZ_BATCH_NODE_IS_DEDICATED false, as Batch tells its tasks)

    def create(self) -> None:
        for sub in NODE_SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    @property
    def applications_dir(self) -> Path:
        return self.root / "applications"

    @property
    def startup_dir(self) -> Path:
        """The start task's directory: wd/, stdout.txt, stderr.txt (node files `startup/...`)."""
        return self.root / "startup"

    def task_dir(self, job_id: str, task_id: str) -> Path:
        """A task's directory (also used for the job preparation/release tasks, under their own ids)."""
        return self.job_dir(job_id) / "job-1" / task_id

    def job_dir(self, job_id: str) -> Path:
        """Every task directory of a job on this node, the preparation and release tasks' included."""
        return self.root / "workitems" / job_id

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def node_environment(self, account_name: str, account_url: str) -> dict[str, str]:
        """The variables every task on this node sees, whatever its job."""
        return {
            "AZ_BATCH_ACCOUNT_NAME": account_name,
            "AZ_BATCH_ACCOUNT_URL": account_url,
            "AZ_BATCH_POOL_ID": self.pool_id,
            "AZ_BATCH_NODE_ID": self.node_id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if self.dedicated else "false",
            "AZ_BATCH_NODE_ROOT_DIR": str(self.root),
            "AZ_BATCH_NODE_SHARED_DIR": str(self.root / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(self.root / "startup"),
            "AZ_BATCH_NODE_STARTUP_WORKING_DIR": str(self.root / "startup" / "wd"),
            "AZ_BATCH_NODE_MOUNTS_DIR": str(self.root / "fsmounts"),
        }

    def task_environment(
        self,
        account_name: str,
        account_url: str,
        job_id: str,
        task_id: str,
        preparation_task_id: str | None,
    ) -> dict[str, str]:
        """The node's variables plus those of one task (job preparation variables when the job has one)."""
        tdir = self.task_dir(job_id, task_id)
        env = self.node_environment(account_name, account_url)
        env.update(
            {
                "AZ_BATCH_CERTIFICATES_DIR": str(tdir / "certs"),
                "AZ_BATCH_JOB_ID": job_id,
                "AZ_BATCH_TASK_ID": task_id,
                "AZ_BATCH_TASK_DIR": str(tdir),
                "AZ_BATCH_TASK_WORKING_DIR": str(tdir / "wd"),
                "AZ_BATCH_TASK_USER": TASK_USER,
                "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
            }
        )
        if preparation_task_id:
            prep_dir = self.task_dir(job_id, preparation_task_id)
            env["AZ_BATCH_JOB_PREP_DIR"] = str(prep_dir)
            env["AZ_BATCH_JOB_PREP_WORKING_DIR"] = str(prep_dir / "wd")
        return env


    def start_task_environment(self, account_name: str, account_url: str) -> dict[str, str]:
        """The start task's variables: the node's and its own directories (no job, no task id, as on Batch)."""
        env = self.node_environment(account_name, account_url)
        env.update(
            {
                "AZ_BATCH_CERTIFICATES_DIR": str(self.startup_dir / "certs"),
                "AZ_BATCH_TASK_DIR": str(self.startup_dir),
                "AZ_BATCH_TASK_WORKING_DIR": str(self.startup_dir / "wd"),
                "AZ_BATCH_TASK_USER": TASK_USER,
                "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
            }
        )
        return env


def is_admin(user_identity: Mapping[str, Any] | None) -> bool:
    """userIdentity asks for admin elevation (autoUser elevationLevel admin)."""
    auto = (user_identity or {}).get("autoUser") or {}
    return str(auto.get("elevationLevel", "nonadmin")).lower() == "admin"


def user_identity_name(user_identity: Mapping[str, Any] | None) -> str:
    """AZ_BATCH_TASK_USER_IDENTITY for an auto-user: PoolNonAdmin, PoolAdmin, TaskNonAdmin or TaskAdmin."""
    auto = (user_identity or {}).get("autoUser") or {}
    scope = "Task" if str(auto.get("scope", "pool")).lower() == "task" else "Pool"
    return scope + ("Admin" if is_admin(user_identity) else "NonAdmin")


def merge_settings(env: dict[str, str], *settings_lists: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """Apply Batch environmentSettings lists (`[{name, value}]`) in order; later lists win. Returns `env`."""
    for settings in settings_lists:
        for setting in settings or []:
            env[setting["name"]] = setting.get("value") or ""
    return env


def app_package_env_name(name: str, version: str | None) -> str:
    """Batch's Linux naming: case preserved, '.', '-' and '#' flattened to '_'."""
    flat = re.sub(r"[.#-]", "_", name)
    return f"AZ_BATCH_APP_PACKAGE_{flat}" + (f"_{re.sub(r'[.#-]', '_', version)}" if version else "")


# Variables the host-side launchers (nsenter, bwrap, podman, conmon, runc) would act on themselves (dynamic
# loader, libc, temp/config/home lookups). They reach the task as explicit values (--setenv / --env K=V): they hold
# paths and options, not secrets. Every other variable travels only in the environment, never in a command line.
_LAUNCHER_VARIABLES = ("PATH", "HOME", "TMPDIR", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RES_OPTIONS",
                       "LOCALDOMAIN", "TZDIR")  # fmt: skip
_LAUNCHER_PREFIXES = ("LD_", "MALLOC_", "XDG_", "CONTAINERS_")


def split_launcher_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(variables safe in a host launcher's environment, variables to hand over explicitly): see above."""
    inherited, explicit = {}, {}
    for key, value in env.items():
        launcher_owned = key in _LAUNCHER_VARIABLES or key.startswith(_LAUNCHER_PREFIXES)
        (explicit if launcher_owned else inherited)[key] = value
    return inherited, explicit
