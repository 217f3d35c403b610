"""`TaskBuilder`: a Snakemake job, its pool and its staged inputs → the finished task request. Everything it needs is
given at construction; the job's resources are read here and nowhere else (`resource`, `pool_id`, `image`)."""

from __future__ import annotations

import os
from typing import Any, Callable

from snakemake.common.tbdstring import TBDString

from ..config import Config
from ..pools import vm_sizes
from ..pools.pool_info import PoolInfo
from ..settings.executor_settings import SettingsError
from ..staging import NodePaths, Staging, input_check, node_commands, usage_probe
from ..staging.manifest import manifest_env, stage_manifest
from . import resource_check, task_spec


class TaskBuilder:
    """`job_args(job)`: the job's own Snakemake arguments (the executor's `get_job_args`); `storage_call(fn)`: an
    upload that waits out a storage outage; `warn(line)`: a warning line."""

    def __init__(self, config: Config, staging: Staging, node_paths: NodePaths, *,
                 job_args: Callable[[Any], str], storage_call: Callable[[Callable[[], Any]], Any], warn: Callable[[str], None]):
        self.config = config
        self.staging = staging
        self.layout = staging.layout
        self.node_paths = node_paths
        self.job_args = job_args
        self._threads_warned: set[tuple[str, str]] = set()  # (rule, pool) warned once
        self.storage_call = storage_call
        self.warn = warn

    # ---- the job's resources -----------------------------------------------------------------------------------
    @staticmethod
    def resource(job, name: str):
        """A resource of the job (or of the first member of a group job that sets it), as text; None when unset."""
        members = list(job.jobs) if job.is_group() else [job]
        for member in [job, *members]:
            try:
                value = member.resources.get(name)
            except Exception:
                value = None
            if value not in (None, ""):
                return value if isinstance(value, TBDString) else str(value)
        return None

    def pool_id(self, job) -> str:
        return self.resource(job, "azbatch_pool") or self.config.account.pool_id

    def image(self, job) -> str | None:
        return self.resource(job, "azbatch_container_image") or self.config.software.container_image

    @staticmethod
    def _resource_value(job, name: str):
        try:
            return job.resources.get(name)
        except Exception:
            return None

    def resource_problem(self, job, pool: PoolInfo) -> str | None:
        """mem_mb / disk_mb / GPUs against the pool's VM size (Batch enforces none of them); threads warn."""
        size = vm_sizes.lookup(pool.vm_size, {s.name: s for s in self.config.pools.vm_sizes})
        if size is None:
            return None
        resources = {name: self._resource_value(job, name) for name in resource_check.RESOURCE_NAMES}
        warning = resource_check.threads_warning(job.name, pool.id, size, int(job.threads or 1))
        if warning and (job.name, pool.id) not in self._threads_warned:
            self._threads_warned.add((job.name, pool.id))
            self.warn(warning)
        return resource_check.fit_problem(job.name, pool.id, size, resources)

    # ---- the command -------------------------------------------------------------------------------------------
    @staticmethod
    def exec_prefix(manifest: str | None = None, verify: str | None = None) -> str:
        """What a task runs before Snakemake: its manifest's fetch (before the links: inputs win), the job-wide
        prefix, then its inputs' check against their sha256."""
        fetch = node_commands.fetch_command(manifest) + " && " if manifest else ""
        return f'{fetch}eval "${task_spec.TASK_PREFIX_VARIABLE}"' + (f" && {verify}" if verify else "")

    def command(self, job, manifest: str | None = None, verify: str | None = None) -> str:
        """The job's own arguments only: the rest of Snakemake's command line is the same for the whole run and
        comes from the shell function the job-wide prefix defines (task_spec.snakemake_function)."""
        return f"{self.exec_prefix(manifest, verify)} && {task_spec.SNAKEMAKE_FUNCTION} {self.job_args(job).strip()}"

    # ---- the task ----------------------------------------------------------------------------------------------
    def _inputs(self, pairs: list[tuple[str, str]], blobs: dict[str, str]) -> tuple[list[dict], dict, str | None,
                                                                                     str | None]:
        """Input resource files, extra environment, manifest digest, input check: one resource file per input, or
        above the threshold one manifest the task fetches itself (not with a managed identity: the node would need
        a token of its own)."""
        if len(pairs) > self.config.scale.input_manifest_threshold and not self.staging.identity:
            spec, digest = self.storage_call(lambda: stage_manifest(self.staging, pairs, blobs))
            env = manifest_env(self.staging, [blobs[os.path.abspath(local)] for local, _ in pairs])
            return [spec], env, digest, None  # fetch checks each file's sha256
        files = {node.replace(os.sep, "/"): self.staging.resource_file(blobs[os.path.abspath(local)], node)
                 for local, node in pairs}
        return list(files.values()), {}, None, input_check.task_verify_command(self.staging, pairs, blobs)

    def build(self, job, pool: PoolInfo, files: task_spec.JobFiles, pairs: list[tuple[str, str]],
              blobs: dict[str, str], key: str | None = None) -> task_spec.TaskRequest:
        """`key`: the job's content key (adoption/), carried in the display name for a later run to adopt by."""
        tid = task_spec.task_id(job)
        task_prefix = self.layout.task_prefix(tid)
        resource_files, extra_env, manifest, verify = self._inputs(pairs, blobs)
        output_files = task_spec.output_file_specs(
            files, self.layout.task_files_dir(task_prefix), self.layout.task_batch_logs_dir(task_prefix),
            self.staging.output_container_url(), self.staging.identity,
        )
        if self.staging.identity:  # else the node writes its measurement itself (usage_probe.job_environment)
            output_files.append(usage_probe.output_spec(tid, self.staging.output_container_url(), self.staging.identity))
        slots, warning = task_spec.required_slots(job.threads, pool.slots_per_node)
        if warning:
            self.warn(f"azbatch: job {job.name} (task {tid}) {warning}")
        image = self.image(job)
        problem = pool.container_problem(job.name, image) or self.resource_problem(job, pool)
        if problem:
            raise SettingsError(problem)
        script = node_commands.with_directories(  # empty directories: made for inputs, listed for outputs
            self.command(job, manifest, verify), self.node_paths.empty_dirs(files.inputs, "input directory"),
            [o.path for o in files.outputs if o.directory], task_spec.EMPTY_DIRS_FILE)
        return task_spec.TaskRequest(
            id=tid,
            display_name=task_spec.display_name(job, key),
            script=script,
            env=extra_env,  # Snakemake's envvars are the same for every task: the job's common environment
            resource_files=resource_files,
            output_files=output_files,
            slots=slots,
            max_wall_clock_seconds=task_spec.runtime_seconds(job.resources),
            container_image=image,
            application_packages=[p.reference() for p in self.config.software.application_packages],
            retention_seconds=self.config.scale.task_retention_minutes * 60 or None,
        )
