"""Request counters of the local service: per Batch operation (the spec's operationId) and per Blob operation.

Byte counts are body bytes (what was uploaded / downloaded), not headers. Served as JSON at `GET /_local/metrics`
and written to ROOT/metrics.json at shutdown:

    {"operations": {OPERATION_ID: {"count", "statuses": {"200": n, ...}, "requestBytes", "responseBytes"}},
     "storage":    {OPERATION:    {"count", "statuses", "requestBytes", "responseBytes"}},
     "storagePlugin": {...}, "storageOther": {...},
     "injectedFaults": {STATUS: n}}   # Batch requests answered by --fail-fraction (also counted above)

`storage` counts every Blob request; `storagePlugin` those whose User-Agent names the plugin (its own uploads and
downloads), `storageOther` the rest (the nodes' resource and output files, tests, other tools).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class _Counter:
    count: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    request_bytes: int = 0
    response_bytes: int = 0

    def add(self, status: int, request_bytes: int, response_bytes: int) -> None:
        self.count += 1
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        self.request_bytes += max(0, request_bytes)
        self.response_bytes += max(0, response_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "statuses": dict(sorted(self.statuses.items())),
            "requestBytes": self.request_bytes,
            "responseBytes": self.response_bytes,
        }


class Metrics:
    """Thread-safe counters; the HTTP layer records Batch requests, the blob proxy records storage requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch: dict[str, _Counter] = {}
        self._storage: dict[str, _Counter] = {}
        self._storage_by_client: dict[str, dict[str, _Counter]] = {"plugin": {}, "other": {}}
        self._injected: dict[str, int] = {}

    def record_batch(self, operation: str, status: int, request_bytes: int, response_bytes: int,
                     injected: bool = False) -> None:
        with self._lock:
            self._batch.setdefault(operation, _Counter()).add(status, request_bytes, response_bytes)
            if injected:
                self._injected[str(status)] = self._injected.get(str(status), 0) + 1

    def record_storage(
        self, operation: str, status: int, request_bytes: int, response_bytes: int, client: str = "other"
    ) -> None:
        with self._lock:
            self._storage.setdefault(operation, _Counter()).add(status, request_bytes, response_bytes)
            by_client = self._storage_by_client.setdefault(client, {})
            by_client.setdefault(operation, _Counter()).add(status, request_bytes, response_bytes)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "operations": {name: c.as_dict() for name, c in sorted(self._batch.items())},
                "storage": {name: c.as_dict() for name, c in sorted(self._storage.items())},
                **{
                    f"storage{client.capitalize()}": {name: c.as_dict() for name, c in sorted(counters.items())}
                    for client, counters in sorted(self._storage_by_client.items())
                },
                "injectedFaults": dict(sorted(self._injected.items())),
            }

    def write(self, path: Path | str) -> Path:
        """Write the snapshot as JSON atomically (temp file + rename), creating the directory if needed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".metrics-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.snapshot(), handle, indent=2, sort_keys=True)
                handle.write("\n")
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path
