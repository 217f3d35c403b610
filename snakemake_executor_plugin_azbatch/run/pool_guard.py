"""The run's pools, checked before anything is created: preflight (credentials, pools, storage, the nodes'
needs), a pool created when asked (and deleted again unless kept), every rule against its pool (container image,
mem_mb / disk_mb / GPUs against the VM size, through TaskBuilder)."""

from __future__ import annotations

from typing import Callable, Iterable

from snakemake.common.tbdstring import TBDString

from ..azure_api.batch_client import BatchService, BatchServiceError
from ..config import Config
from ..pools import pool_creation, vm_sizes
from ..staging import Staging
from ..tasks.task_builder import TaskBuilder
from ..pools.pool_info import PoolInfo
from ..node_software.wheelhouse import WheelhouseError
from ..settings.executor_settings import SettingsError
from ..staging.sources_archive import PreparedSources
from .node_setup import NodeSetup
from .run_watch import RunWatch

RETIRING_NODE_AGENT = "batch.node.ubuntu 22.04"  # Batch's end of support: 2027-06-30


class PoolGuard:
    """`tasks`: where a job's pool, image and resource fit are read (TaskBuilder); `own_jobs()`: this run's Batch
    jobs (never counted as other runs' users of a pool); `workflow`: Snakemake's (its DAG: the rules that will run
    and the tasks ready at once)."""

    def __init__(self, config: Config, batch: BatchService, staging: Staging, node_setup: NodeSetup,
                 tasks: TaskBuilder, run_watch: RunWatch, workflow, own_jobs: Callable[[], Iterable[str]], logger):
        self.config = config
        self.batch = batch
        self.staging = staging
        self.node_setup = node_setup
        self.tasks = tasks
        self.run_watch = run_watch
        self.workflow = workflow
        self.own_jobs = own_jobs
        self.logger = logger
        self.pools: dict[str, PoolInfo] = {}  # pool id (lower) -> what the run knows of it
        self.created_pool: str | None = None  # the pool this run created, deleted at the end unless kept
        self.on_created: Callable[[str], None] = lambda pool_id: None  # the report's node-hours count from then

    def preflight(self) -> None:
        """Credentials, pools and storage are checked before anything else is created; a pool the run creates is
        checked as planned (image vs bootstrap, containers, VM size) before it is created, and deleted again when a
        later check fails."""
        planned = self.plan_pool_creation()
        try:
            self.pool_info(self.config.account.pool_id)
            self.check_rules_fit_their_pools()
            self.node_setup.check(list(self.pools.values()), planned=planned)
            if self.config.software.bootstrap == "app-package":
                self.node_setup.check_applications(
                    self.batch.missing_applications(self.config.software.application_packages))
            self.staging.preflight()
            self.preparation_task(self.pools[self.config.account.pool_id.lower()])  # bootstrap files made, staged
            if planned:
                self.create_planned_pool()
        except BaseException:
            self.delete_created_pool()
            raise

    def plan_pool_creation(self) -> str | None:
        """The id of the pool this run will create (it does not exist), its planned info in `pools`; else None."""
        creation, pool_id = self.config.pools.creation, self.config.account.pool_id
        if creation is None:
            return None
        if self.batch.pool_exists(pool_id):
            self.logger.info(f"azbatch: pool {pool_id} exists; it is used as it is (never resized or deleted by "
                             "this run)")
            return None
        autoscale = creation.autoscale is not None or bool(creation.formula)
        self.pools[pool_id.lower()] = PoolInfo(
            pool_id, creation.slots, 0, 0, 0 if autoscale else creation.dedicated + creation.spot, autoscale,
            container_enabled=creation.containers, vm_size=creation.vm_size, image=creation.image[:3])
        return pool_id

    def create_planned_pool(self) -> None:
        """Pools_AddPool, its autoscale formula's first target the tasks that are ready now; then the pool as Batch
        reports it replaces the planned info."""
        creation, pool_id = self.config.pools.creation, self.config.account.pool_id
        prices = self.config.report.price_node_hour
        self.logger.info(pool_creation.describe(creation, pool_id, prices.dedicated if prices else None,
                                                prices.low_priority if prices else None))
        if creation.node_agent.lower() == RETIRING_NODE_AGENT:
            self.logger.warning(f"azbatch: Batch retires the node agent '{RETIRING_NODE_AGENT}' on 2027-06-30 (then "
                                "pools with it may be scaled to zero); prefer --azbatch-pool-image ubuntu-24.04")
        image = self.config.software.container_image
        images = (image,) if creation.containers and image else ()
        self.batch.create_pool(pool_creation.pool_body(creation, pool_id, images, self.ready_tasks(pool_id)))
        self.created_pool = pool_id
        self.on_created(pool_id)
        del self.pools[pool_id.lower()]
        self.pool_info(pool_id)

    def ready_tasks(self, pool_id: str) -> int:
        """Remote jobs for `pool_id` that can start now (none of their dependencies still has to run), at most
        Snakemake's --jobs (what it submits at once)."""
        dag = self.workflow.dag
        needrun = set(dag.needrun_jobs())
        ready = sum(1 for job in needrun if not job.is_local and str(self.tasks.pool_id(job)).lower() == pool_id.lower()
                    and not any(dep in needrun for dep in dag.dependencies[job]))
        limit = getattr(getattr(self.workflow, "resource_settings", None), "nodes", None)
        return min(ready, limit) if isinstance(limit, int) and limit > 0 else ready

    def pool_cores(self, pool: PoolInfo) -> int | None:
        """The cores of a pool's VM size, when known (built-in table or --azbatch-vm-sizes)."""
        size = vm_sizes.lookup(pool.vm_size, {s.name: s for s in self.config.pools.vm_sizes})
        return size.cores if size else None

    def delete_created_pool(self) -> None:
        """Never a pool the run did not create, nor one other runs' Batch jobs still use; kept with
        --azbatch-keep-pool."""
        pool_id = self.created_pool
        if pool_id is None:
            return
        self.created_pool = None
        if self.config.pools.creation and self.config.pools.creation.keep:
            self.logger.info(f"azbatch: kept pool {pool_id} (created by this run); delete it with "
                             f"`az batch pool delete --pool-id {pool_id}`")
            return
        if pool_id.lower() in self.run_watch.gone_pools:
            return  # deleted under the run: the line that ended it said so
        users = self.other_jobs_on(pool_id)
        if users:
            self.logger.warning(
                f"azbatch: pool {pool_id} (created by this run) is left: {users}; delete it once they are done "
                f"with `az batch pool delete --pool-id {pool_id}`"
            )
            return
        try:
            self.batch.delete_pool(pool_id)
            self.logger.info(f"azbatch: deleted pool {pool_id} (created by this run)")
        except BatchServiceError as e:
            self.logger.error(str(e))

    def other_jobs_on(self, pool_id: str) -> str:
        """'' when no active Batch job other than this run's uses the pool, else what does (or why that is not
        known): one list of the account's active jobs, `$select=id,poolInfo`."""
        own = set(self.own_jobs())
        try:
            jobs = self.batch.list_active_jobs("state eq 'active'", ["id", "poolInfo"])
        except Exception as e:  # not known: a pool another run may use is not deleted on a guess
            return f"whether other runs use it is not known ({str(e).removeprefix('azbatch: ')})"
        others = sorted(j.id for j in jobs if j.id not in own
                        and str(getattr(getattr(j, "pool_info", None), "pool_id", "") or "").lower() == pool_id.lower())
        if not others:
            return ""
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        return f"{len(others)} active Batch job(s) of other runs use it ({', '.join(others[:3])}{more})"

    def preparation_task(self, pool: PoolInfo, sources: PreparedSources | None = None) -> dict | None:
        """The bootstrap's parts, then (when given) the run's sources archive part."""
        try:
            if sources is None:
                return self.node_setup.preparation_task(pool)
            return self.node_setup.preparation_task(pool, [sources.script], sources.resource_files)
        except WheelhouseError as e:
            raise SettingsError(str(e)) from None

    def check_rules_fit_their_pools(self) -> None:
        """Every rule that will run remotely: its pool exists and takes its container image (or its lack of one).
        Resources known only once inputs exist are checked again at submission."""
        seen = set()
        for job in self.workflow.dag.needrun_jobs():
            if job.is_local:
                continue
            key = (job.rule.name, self.tasks.pool_id(job), self.tasks.image(job))
            if key in seen or any(isinstance(value, TBDString) for value in key):
                continue
            seen.add(key)
            rule, pool_id, image = key
            pool = self.pool_info(pool_id, setting=f"the azbatch_pool resource of rule {rule}")
            problem = pool.container_problem(rule, image) or self.tasks.resource_problem(job, pool)
            if problem:
                raise SettingsError(problem)

    def pool_info(self, pool_id: str, setting: str = "--azbatch-pool-id") -> PoolInfo:
        key = pool_id.lower()
        if key not in self.pools:
            info = self.batch.check_pool(pool_id, setting)
            self.logger.info(
                f"azbatch: pool {info.id}: {info.dedicated_nodes} dedicated + {info.low_priority_nodes} "
                f"low-priority node(s), {info.slots_per_node} slot(s) per node, "
                f"autoscale {'on' if info.autoscale else 'off'}"
            )
            for warning in info.warnings:
                self.logger.warning(warning)
            self.pools[key] = info
        return self.pools[key]
