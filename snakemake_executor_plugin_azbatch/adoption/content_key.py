"""A task's content key: what it computes, as one sha256 over a canonical encoding, so a later run can tell that a
task an earlier (dead) run left on Batch computes exactly what one of its own jobs would (adoption).

What goes in: the rule (or, for a group job, every member), its wildcards, params, shell command or `run:` source,
script / notebook file content, wrapper, conda environment file content, container images (Snakemake's and the
task's), threads and resources (but `runtime`, `tmpdir` and Snakemake's own `_`-prefixed ones, which change how
long or where, not what), the sha256 of every input's content, the pool, the storage account and staging container, and Snakemake's version. The encoding is
JSON with sorted keys and no free-form joins, versioned, so two different descriptions never encode the same.

A value that cannot be encoded faithfully (a function, an object whose text is its memory address) makes the job
`Unkeyable`: it gets no key, so it is never adopted and its task is never taken for another's — stricter, never
looser. Pure: no network; files are read through `read_file`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from typing import Any, Callable, Mapping

KEY_VERSION = "azbatch-content-key/1"
# 192 bits of the sha256 in base64url (as the node-side input check), the last word of the task's display name
# (task_spec.display_name): Batch tasks have no metadata, and an environment setting would cost 130 bytes of every
# task definition.
KEY_BYTES = 24
KEY_LENGTH = 32
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# Resources that change how long a task may run or where its scratch space is, never what it writes.
NEUTRAL_RESOURCES = frozenset({"runtime", "tmpdir", "azbatch_pool", "azbatch_container_image"})
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Unkeyable(Exception):
    """The job holds something the key cannot encode faithfully; the message says what."""


def canonical(value: Any, where: str = "value") -> Any:
    """`value` as plain JSON data (dicts with string keys, lists, strings, numbers, booleans, null); tuples and
    lists stay lists, sets are sorted, bytes become their sha256, Snakemake's named lists become
    {"items": [...], "names": {...}}. Raises Unkeyable for what has no faithful text."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}  # repr round-trips; nan and inf included
    if isinstance(value, (bytes, bytearray)):
        return {"bytes-sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, list) and hasattr(value, "_names"):  # Snakemake's Namedlist (params, input, ...)
        names = {str(name): list(span) if isinstance(span, tuple) else span
                 for name, span in dict(getattr(value, "_names", {}) or {}).items()}
        return {"items": [canonical(v, where) for v in value], "names": canonical(names, where)}
    if isinstance(value, Mapping):
        return {"map": sorted(([canonical(k, where), canonical(v, where)] for k, v in value.items()), key=_encode)}
    if isinstance(value, (list, tuple)):
        return [canonical(v, where) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((canonical(v, where) for v in value), key=_encode)}
    if callable(value):
        raise Unkeyable(f"{where} holds a function ({getattr(value, '__name__', type(value).__name__)})")
    text = repr(value)
    if _ADDRESS.search(text):
        raise Unkeyable(f"{where} holds a {type(value).__name__} without a stable text")
    return {"repr": f"{type(value).__module__}.{type(value).__qualname__}", "text": text}


def _encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def key_of(description: Mapping[str, Any]) -> str:
    """sha256 of the versioned canonical encoding of `description` (its first 192 bits, base64url)."""
    data = _encode([KEY_VERSION, canonical(description, "the job")])
    return base64.urlsafe_b64encode(hashlib.sha256(data.encode("ascii")).digest()[:KEY_BYTES]).decode("ascii")


def _file_digest(path: str, read_file: Callable[[str], bytes], what: str) -> str:
    try:
        return hashlib.sha256(read_file(path)).hexdigest()
    except OSError as e:
        raise Unkeyable(f"its {what} {path} cannot be read ({e.strerror or e})") from None


def _source_path(job: Any, name: str) -> str | None:
    """The job's script or notebook file, as Snakemake resolves it (wildcards and params filled in, relative to
    the Snakefile that declares the rule)."""
    value = getattr(job.rule, name, None)
    if value is None:
        return None
    resolve = getattr(job, "_path_to_source_file", None)  # Snakemake's own resolution, where it has one
    if resolve is not None:
        return str(resolve(value).get_path_or_uri(secret_free=True))
    path = str(value)
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.join(str(getattr(job.rule, "basedir", "") or ""), path)


def rule_description(job: Any, read_file: Callable[[str], bytes]) -> dict[str, Any]:
    """What one (non-group) job computes, without its inputs."""
    rule = job.rule
    where = f"rule {job.name}"
    description: dict[str, Any] = {
        "rule": job.name,
        "wildcards": canonical(dict(getattr(job, "wildcards_dict", {}) or {}), f"{where}'s wildcards"),
        "params": canonical(getattr(job, "params", None), f"{where}'s params"),
        "shell": getattr(rule, "shellcmd", None),
        "run": getattr(rule, "run_func_src", None),
        "wrapper": str(getattr(rule, "wrapper", None) or "") or None,
        "threads": canonical(getattr(job, "threads", None), f"{where}'s threads"),
        "resources": canonical({k: v for k, v in dict(getattr(job, "resources", {}) or {}).items()
                                if not str(k).startswith("_") and k not in NEUTRAL_RESOURCES},
                               f"{where}'s resources"),
        "container": str(getattr(job, "container_img_url", None) or "") or None,
        "outputs": sorted(str(f) for f in getattr(job, "output", ()) or ()),
    }
    for name in ("script", "notebook"):
        path = _source_path(job, name)
        if path is not None:
            if "://" in path:
                raise Unkeyable(f"{where}'s {name} {path} is remote")
            description[name] = _file_digest(path, read_file, name)
    conda = getattr(job, "conda_env", None)
    if conda is not None:
        content = getattr(conda, "content", None)
        if not isinstance(content, (bytes, str)):
            raise Unkeyable(f"{where}'s conda environment has no file content")
        description["conda"] = hashlib.sha256(content if isinstance(content, bytes) else content.encode()).hexdigest()
    return description


def job_content_key(job: Any, *, inputs: Mapping[str, str], pool_id: str, image: str | None,
                    snakemake_version: str, storage: str = "",
                    read_file: Callable[[str], bytes] | None = None) -> str:
    """The key of a (group) job's task: `inputs` maps each input path (as the job names it) to the sha256 of its
    content; `storage` is where runs' containers are (account endpoint and staging container: a dead run's
    outputs are read from there). Raises Unkeyable."""
    read_file = read_file or _read_bytes
    members = list(job.jobs) if job.is_group() else [job]
    described = sorted((rule_description(m, read_file) for m in members), key=_encode)
    return key_of({
        "group": str(job.groupid) if job.is_group() else None,
        "members": described,
        "inputs": {str(path): digest for path, digest in inputs.items()},
        "pool": pool_id.lower(),
        "image": image,
        "snakemake": snakemake_version,
        "storage": storage,
    })


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def key_from_display_name(name: str | None) -> str | None:
    """The key a task's display name ends with, None without a well-formed one."""
    _, _, word = str(name or "").rpartition(" ")
    return word if len(word) == KEY_LENGTH and set(word) <= _KEY_CHARS else None
