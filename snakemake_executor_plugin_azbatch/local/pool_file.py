"""Pools beyond `--pool`: a small pool file (JSON or YAML), `--container-pool` and `--start-task`.

A pool file holds a list of pools (or `{"pools": [...]}`), each with Batch's own names where Batch has them:

    pools:
      - id: tools                      # required
        nodes: 2                       # default 1
        slots: 1                       # taskSlotsPerNode; default: this machine's cores
        vmSize: standard_d2s_v3        # what the REST view reports
        containerConfiguration:        # container-enabled (BatchContainerConfiguration)
          type: dockerCompatible
          containerImageNames: [localhost/azbatch-node:abc123]
        startTask:                     # BatchStartTask
          commandLine: /bin/sh -c "apt-get install -y python3-venv"
          userIdentity: {autoUser: {scope: pool, elevationLevel: admin}}
          waitForSuccess: true
          maxTaskRetryCount: 1
          resourceFiles: [{httpUrl: ..., filePath: ...}]
          environmentSettings: [{name: A, value: b}]

Every mistake is one line naming the file, the pool and the property. Batch pools take no container registries
here (nodes never pull: images come from the local podman store), so `containerRegistries` is refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .service_config import ConfigError, PoolSpec, default_slots

POOL_KEYS = ("id", "nodes", "slots", "vmSize", "containerConfiguration", "startTask")
START_TASK_KEYS = (
    "commandLine", "resourceFiles", "environmentSettings", "userIdentity", "waitForSuccess", "maxTaskRetryCount",
    "containerSettings",
)  # fmt: skip
CONTAINER_TYPES = ("dockerCompatible", "criCompatible")
ELEVATION_LEVELS = ("nonadmin", "admin")
AUTO_USER_SCOPES = ("pool", "task")


def load_pool_file(path: Path) -> list[PoolSpec]:
    """The pools of a JSON or YAML pool file (YAML is a superset of JSON, so one parser reads both)."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--pool-file {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"--pool-file {path}: not valid JSON or YAML{line}") from None
    if isinstance(data, dict) and set(data) == {"pools"}:
        data = data["pools"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"--pool-file {path}: expected a list of pools (or {{pools: [...]}}), each with an id")
    return [_pool(entry, f"--pool-file {path}: pool {index + 1}") for index, entry in enumerate(data)]


def _pool(entry: Any, where: str) -> PoolSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with id, nodes, slots, vmSize, ...")
    if isinstance(entry.get("id"), str):
        where = f"{where.rsplit(': pool ', 1)[0]}: pool {entry['id']!r}"
    unknown = sorted(set(entry) - set(POOL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown property {unknown[0]!r}; a pool takes {', '.join(POOL_KEYS)}")
    spec = PoolSpec.parse(str(entry.get("id", "")), option=f"{where}: id")
    nodes = _whole(entry.get("nodes", 1), f"{where}: nodes", minimum=0)
    slots = _whole(entry.get("slots", default_slots()), f"{where}: slots", minimum=1)
    vm_size = entry.get("vmSize")
    if vm_size is not None and (not isinstance(vm_size, str) or not vm_size):
        raise ConfigError(f"{where}: vmSize must be a VM size name such as standard_d2s_v3")
    containers = entry.get("containerConfiguration")
    start = entry.get("startTask")
    return PoolSpec(
        spec.id, nodes, slots, vm_size,
        container_configuration(containers, f"{where}: containerConfiguration") if containers is not None else None,
        start_task(start, f"{where}: startTask") if start is not None else None,
    )  # fmt: skip


def _whole(value: Any, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}: must be a whole number ≥ {minimum}, not {value!r}")
    return value


def container_configuration(body: Any, where: str) -> dict[str, Any]:
    """A BatchContainerConfiguration as the pool reports it."""
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping with type (dockerCompatible) and containerImageNames")
    if body.get("containerRegistries"):
        raise ConfigError(f"{where}: containerRegistries are not supported (local nodes never pull; load images "
                          "into the podman store instead)")
    unknown = sorted(set(body) - {"type", "containerImageNames", "containerRegistries"})
    if unknown:
        raise ConfigError(f"{where}: unknown property {unknown[0]!r}; it takes type and containerImageNames")
    kind = body.get("type", "dockerCompatible")
    if kind not in CONTAINER_TYPES:
        raise ConfigError(f"{where}: type {kind!r}: choose {' or '.join(CONTAINER_TYPES)}")
    names = body.get("containerImageNames") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where}: containerImageNames must be a list of image names")
    return {"type": kind, "containerImageNames": list(names)}


def start_task(body: Any, where: str) -> dict[str, Any]:
    """A BatchStartTask with Batch's defaults (waitForSuccess true, no retries, the non-admin pool auto-user)."""
    if isinstance(body, str):
        body = {"commandLine": body}
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping with commandLine (and userIdentity, waitForSuccess, ...)")
    unknown = sorted(set(body) - set(START_TASK_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown property {unknown[0]!r}; a start task takes {', '.join(START_TASK_KEYS)}")
    if not isinstance(body.get("commandLine"), str) or not body["commandLine"].strip():
        raise ConfigError(f"{where}: commandLine is required")
    task = dict(body)
    task["waitForSuccess"] = task.get("waitForSuccess", True)
    if not isinstance(task["waitForSuccess"], bool):
        raise ConfigError(f"{where}: waitForSuccess must be true or false")
    retries = task.get("maxTaskRetryCount", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < -1:
        raise ConfigError(f"{where}: maxTaskRetryCount must be a whole number ≥ -1 (-1: retry without limit)")
    task["maxTaskRetryCount"] = retries
    task["userIdentity"] = _user_identity(task.get("userIdentity"), f"{where}: userIdentity")
    for key in ("resourceFiles", "environmentSettings"):
        _list_of_mappings(task.get(key), f"{where}: {key}")
    for i, setting in enumerate(task.get("environmentSettings") or []):
        if not isinstance(setting.get("name"), str) or not setting["name"]:
            raise ConfigError(f"{where}: environmentSettings[{i}] needs a name")
    for i, rf in enumerate(task.get("resourceFiles") or []):
        if len([k for k in ("httpUrl", "storageContainerUrl") if rf.get(k)]) != 1:
            raise ConfigError(f"{where}: resourceFiles[{i}] needs exactly one of httpUrl or storageContainerUrl")
    return task


def _user_identity(body: Any, where: str) -> dict[str, Any]:
    if body is None:
        return {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    auto = body.get("autoUser") if isinstance(body, dict) else None
    if not isinstance(auto, dict) or set(body) != {"autoUser"}:
        raise ConfigError(f"{where}: only autoUser identities exist on local nodes, e.g. "
                          "{autoUser: {scope: pool, elevationLevel: admin}}")
    scope = str(auto.get("scope", "pool")).lower()
    level = str(auto.get("elevationLevel", "nonadmin")).lower()
    if scope not in AUTO_USER_SCOPES or level not in ELEVATION_LEVELS:
        raise ConfigError(f"{where}: scope must be pool or task and elevationLevel nonadmin or admin")
    return {"autoUser": {"scope": scope, "elevationLevel": level}}


def _list_of_mappings(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)):
        raise ConfigError(f"{where}: expected a list of mappings")


def with_start_task(pools: list[PoolSpec], text: str) -> list[PoolSpec]:
    """Apply `--start-task POOL=COMMAND` (Batch's defaults: waitForSuccess, non-admin; the pool file for more)."""
    pool_id, sep, command = text.partition("=")
    matches = [p for p in pools if p.id.lower() == pool_id.lower()]
    if not sep or not command.strip():
        raise ConfigError(
            f"--start-task {text!r}: expected POOL=COMMAND_LINE, e.g. --start-task local='/bin/sh -c ...'"
        )
    if not matches:
        raise ConfigError(f"--start-task {text!r}: no pool {pool_id!r}; define it with --pool, --container-pool "
                          "or --pool-file")
    task = start_task({"commandLine": command}, f"--start-task {pool_id}")
    return [dataclasses.replace(p, start_task=task) if p.id.lower() == pool_id.lower() else p for p in pools]


def container_pool(text: str) -> PoolSpec:
    """`--container-pool ID[:NODES[:SLOTS]]`: a container-enabled pool (dockerCompatible, no images listed)."""
    return PoolSpec.parse(text, option="--container-pool",
                          container_configuration={"type": "dockerCompatible", "containerImageNames": []})
