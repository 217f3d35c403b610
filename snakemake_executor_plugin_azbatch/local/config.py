"""Configuration of the local Batch service: account, pools, application packages, fault injection."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# Fixed development credentials, documented in the README (like Azurite's devstoreaccount1). Not a secret: the
# service only listens on loopback. Override with --account-name / --account-key.
DEV_ACCOUNT_NAME = "localbatch"
DEV_ACCOUNT_KEY = "bG9jYWxiYXRjaC1kZXZlbG9wbWVudC1rZXktbm90LWEtc2VjcmV0LTAwMDAwMDAwMDAwMDAwMDA="

# Azurite's well-known development storage account.
AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(ValueError):
    """A bad option: the message is one actionable line."""


@dataclass(frozen=True)
class PoolSpec:
    id: str
    nodes: int
    slots: int

    @classmethod
    def parse(cls, text: str) -> "PoolSpec":
        """Parse `ID[:NODES[:SLOTS]]`; missing parts default to one node with the machine's cores as slots."""
        parts = text.split(":")
        if len(parts) > 3 or not _ID_RE.match(parts[0]):
            raise ConfigError(
                f"--pool {text!r}: expected ID[:NODES[:SLOTS]] with an ID of letters, digits, '-' or '_' (≤ 64)"
            )
        try:
            nums = [int(p) for p in parts[1:]]
        except ValueError:
            raise ConfigError(f"--pool {text!r}: NODES and SLOTS must be whole numbers, e.g. --pool big:2:4") from None
        if any(n < 0 for n in nums) or (len(nums) == 2 and nums[1] < 1):
            raise ConfigError(f"--pool {text!r}: NODES must be ≥ 0 and SLOTS ≥ 1")
        nodes = nums[0] if nums else 1
        slots = nums[1] if len(nums) > 1 else default_slots()
        return cls(parts[0], nodes, slots)


def default_slots() -> int:
    return max(1, os.cpu_count() or 1)


def default_pools() -> list[PoolSpec]:
    """One pool `local` whose nodes × slots use the machine's cores: two nodes when there are enough cores."""
    cores = default_slots()
    if cores >= 2:
        return [PoolSpec("local", 2, max(1, cores // 2))]
    return [PoolSpec("local", 1, 1)]


@dataclass(frozen=True)
class AppPackageSpec:
    name: str
    version: str
    zip_path: Path

    @classmethod
    def parse(cls, text: str) -> "AppPackageSpec":
        """Parse `NAME:VERSION=ZIP`."""
        m = re.match(r"^([A-Za-z0-9_.-]{1,64}):([A-Za-z0-9_.-]{1,64})=(.+)$", text)
        if not m:
            raise ConfigError(f"--app-package {text!r}: expected NAME:VERSION=PATH_TO_ZIP, e.g. tools:1.0=tools.zip")
        path = Path(m.group(3)).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"--app-package {text!r}: no such zip file {path}")
        return cls(m.group(1), m.group(2), path)


@dataclass
class StorageEndpoint:
    blob_url: str  # http://127.0.0.1:PORT/devstoreaccount1 (through the counting proxy)
    account_name: str = AZURITE_ACCOUNT_NAME
    account_key: str = AZURITE_ACCOUNT_KEY

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_url};"
        )


@dataclass
class ServiceConfig:
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    pools: list[PoolSpec] = field(default_factory=default_pools)
    account_name: str = DEV_ACCOUNT_NAME
    account_key: str = DEV_ACCOUNT_KEY
    app_packages: list[AppPackageSpec] = field(default_factory=list)
    fail_fraction: float = 0.0
    fail_status: int = 503
    preempt_fraction: float = 0.0
    seed: int = 0
    simulate: float | None = None  # seconds each task "runs" on simulated nodes (no process); None: real processes
    simulate_fail: float = 0.0  # fraction of simulated tasks that fail (exit code 1), chosen by seed and task
    # Filled in by LocalService once ports are bound.
    account_url: str = ""
    storage: StorageEndpoint | None = None

    def validate(self) -> None:
        if self.host not in LOOPBACK_HOSTS:
            raise ConfigError(f"host {self.host!r}: the local service listens on loopback only; use 127.0.0.1")
        if not 0.0 <= self.fail_fraction <= 1.0 or not 0.0 <= self.preempt_fraction <= 1.0:
            raise ConfigError("--fail-fraction and --preempt-fraction must be between 0 and 1")
        if self.simulate is not None and not 0.0 <= self.simulate < float("inf"):
            raise ConfigError(f"--simulate {self.simulate}: give the seconds each task takes, 0 or more")
        if not 0.0 <= self.simulate_fail <= 1.0:
            raise ConfigError(f"--simulate-fail {self.simulate_fail}: give a fraction between 0 and 1")
        if self.simulate_fail and self.simulate is None:
            raise ConfigError("--simulate-fail needs --simulate SECONDS (it applies to simulated tasks only)")
        if self.fail_status not in (429, 500, 503):
            raise ConfigError(f"--fail-status {self.fail_status}: choose 500, 503 or 429")
        ids = [p.id.lower() for p in self.pools]
        if len(set(ids)) != len(ids):
            raise ConfigError("--pool: pool ids must be unique (case-insensitive)")
