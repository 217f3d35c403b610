"""The outage switch: the Batch API or Blob storage unreachable for a while, as in a regional outage or a network
cut between the submitting machine and Azure.

During a Batch outage every Batch API request is read and then dropped: the connection is closed without an
answer (the client sees "connection aborted").
That is the hardest way an outage looks to a client: azure-core's RetryPolicy allows a dropped connection only its
3 read retries (about 3 s of back-off), where a 503 without Retry-After would be retried up to `retry_total` times
with growing back-off, so a client that survives dropped connections survives 503s too. The control plane alone is
down: nodes keep running their tasks, the scheduler keeps placing them.

During a storage outage the blob proxy drops every request the same way, except the node agent's own resource-file
downloads and output-file uploads (marked with `NODE_USER_AGENT`): the outage is between the submitting machine and
storage, the pool's nodes still reach it. Requests a task itself makes (e.g. the input manifest fetch) are dropped
too. A `nodeStorage` outage is the other half: storage unreachable from the nodes' agent (its resource-file
downloads and output-file uploads are dropped), as when Azurite restarts under running tasks; `storage` and
`nodeStorage` together cut everyone off.

`GET /_local/outage` reads the switch, `POST /_local/outage` with `{"batch": SECONDS, "storage": SECONDS,
"nodeStorage": SECONDS, "after": SECONDS}` sets it (each kind given is down for SECONDS, starting `after` seconds
from now; 0 ends an outage); `azbatch-local --outage KIND:SECONDS[@AFTER]` schedules one from the start. Dropped
requests are not in the metrics (nothing answered them); the switch counts them itself.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..api.http_messages import Response
from ..service_config import NODE_USER_AGENT, ConfigError

KINDS = ("batch", "storage", "nodeStorage")


@dataclass(frozen=True)
class ScheduledOutage:
    """`--outage KIND:SECONDS[@AFTER]`: KIND down for SECONDS, AFTER seconds after the service started."""

    kind: str
    seconds: float
    after: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "ScheduledOutage":
        kind, _, rest = text.partition(":")
        seconds, _, after = rest.partition("@")
        kind = {name.lower(): name for name in KINDS}.get(kind.strip().lower(), kind)
        try:
            outage = cls(kind, float(seconds), float(after or 0))
        except ValueError:
            outage = None
        if outage is None or outage.kind not in KINDS or outage.seconds < 0 or outage.after < 0:
            raise ConfigError(
                f"--outage {text!r}: expected KIND:SECONDS[@AFTER] with KIND batch, storage or nodeStorage, "
                "e.g. --outage batch:60@30"
            )
        return outage


class OutageSwitch:
    """Per kind, the window (monotonic start, end) during which it is down, and how many requests were dropped."""

    def __init__(self, scheduled: tuple[ScheduledOutage, ...] = (), clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, float] | None] = {kind: None for kind in KINDS}
        self._dropped = {kind: 0 for kind in KINDS}
        self._operations: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}  # dropped requests per operation
        for outage in scheduled:
            self.set(outage.kind, outage.seconds, outage.after)

    def set(self, kind: str, seconds: float, after: float = 0.0) -> None:
        start = self._clock() + after
        with self._lock:
            self._windows[kind] = (start, start + seconds) if seconds > 0 else None

    def is_down(self, kind: str) -> bool:
        window = self._windows[kind]
        return window is not None and window[0] <= self._clock() < window[1]

    def drops(self, kind: str, user_agent: str | None = None, operation: str = "Unknown") -> bool:
        """Whether this request (of `operation`: a Batch operationId, a Blob operation) is to be dropped, and
        counted as such. The node agent's storage transfers are dropped by a nodeStorage outage only."""
        if kind == "storage" and NODE_USER_AGENT in (user_agent or ""):
            kind = "nodeStorage"
        if not self.is_down(kind):
            return False
        with self._lock:
            self._dropped[kind] += 1
            self._operations[kind][operation] = self._operations[kind].get(operation, 0) + 1
        return True

    def snapshot(self) -> dict:
        now = self._clock()
        state = {}
        for kind in KINDS:
            window = self._windows[kind]
            starts = max(0.0, window[0] - now) if window and now < window[1] else 0.0
            remaining = max(0.0, window[1] - max(now, window[0])) if window and now < window[1] else 0.0
            state[kind] = {"down": self.is_down(kind), "startsIn": round(starts, 3),
                           "remaining": round(remaining, 3), "dropped": self._dropped[kind],
                           "operations": dict(self._operations[kind])}
        return state


def outage_state(switch: OutageSwitch) -> Response:
    """`GET /_local/outage`: what is down, for how long, requests dropped."""
    return Response(200, json.dumps(switch.snapshot()).encode(), content_type="application/json")


def change_outage(switch: OutageSwitch, body: bytes) -> Response:
    """`POST /_local/outage`: start (or with 0 end) an outage of each kind given; the answer is the new state."""
    try:
        request = json.loads(body or b"{}")
        after = float(request.get("after", 0))
        changes = {kind: float(request[kind]) for kind in KINDS if kind in request}
        if not isinstance(request, dict) or not changes or after < 0 or min(changes.values()) < 0:
            raise ValueError
    except (ValueError, TypeError, AttributeError, RecursionError):
        text = ('{"error":"send {\\"batch\\": SECONDS, \\"storage\\": SECONDS, \\"nodeStorage\\": SECONDS, '
                '\\"after\\": SECONDS}; 0 ends an outage"}')
        return Response(400, text.encode(), content_type="application/json")
    for kind, seconds in changes.items():
        switch.set(kind, seconds, after)
    return outage_state(switch)
