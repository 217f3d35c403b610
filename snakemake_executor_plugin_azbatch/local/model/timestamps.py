"""Time in the shapes Batch uses: ISO-8601 entity times, RFC 1123 HTTP dates, ISO-8601 durations, and eTags."""

from __future__ import annotations

import email.utils
import itertools
import re
import threading
from datetime import datetime, timezone

from .errors import InvalidHeaderValue

_ISO_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$", re.IGNORECASE)
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNLIMITED_SECONDS = 10 * 365 * 86400
# Batch's "no limit" (TimeSpan.MaxValue), the default for wall clock constraints.
UNLIMITED_DURATION = "P10675199DT2H48M5.4775807S"


def is_duration(value: object) -> bool:
    """Whether `value` is an ISO-8601 duration the service reads (PnDTnHnMnS)."""
    return isinstance(value, str) and bool(_DURATION.match(value))


def iso_now() -> str:
    """ISO-8601 UTC with 'Z', microsecond precision (Batch uses 7 digits; clients accept any)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_etag_counter = itertools.count(0x8DC000000000000)
_etag_lock = threading.Lock()


def new_etag() -> str:
    with _etag_lock:
        return f"0x{next(_etag_counter):X}"


def parse_iso(value: str) -> datetime | None:
    m = _ISO_RE.match(value or "")
    if not m:
        return None
    fraction = (m.group(2) or ".0")[:7].ljust(2, "0")
    zone = (m.group(3) or "Z").upper().replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(m.group(1) + fraction + zone).astimezone(timezone.utc)
    except ValueError:
        return None


def http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise InvalidHeaderValue(f"The date header value {value[:64]!r} is not an RFC 1123 date.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def duration_seconds(text: str | None) -> float | None:
    """ISO-8601 duration (PnDTnHnMnS) in seconds; None when absent or effectively unlimited."""
    if not text:
        return None
    m = _DURATION.match(text)
    if not m:
        return None
    secs = (
        float(m.group("d") or 0) * 86400
        + float(m.group("h") or 0) * 3600
        + float(m.group("m") or 0) * 60
        + float(m.group("s") or 0)
    )
    return None if secs >= _UNLIMITED_SECONDS else secs
