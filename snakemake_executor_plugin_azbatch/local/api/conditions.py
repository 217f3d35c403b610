"""Entity headers (ETag, Last-Modified) and HTTP conditional requests (If-Match, If-None-Match, If-*-Since)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..model.errors import ConditionNotMet
from ..model.timestamps import http_date, parse_http_date, parse_iso
from .http_messages import Request, Response


def entity_headers(entity: dict[str, Any], *, created: bool = False) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if entity.get("eTag"):
        headers.append(("ETag", str(entity["eTag"])))
    modified = parse_iso(str(entity.get("lastModified", "")))
    if modified:
        headers.append(("Last-Modified", http_date(modified)))
    if created and entity.get("url"):
        headers += [("DataServiceId", entity["url"]), ("Location", entity["url"])]
    return headers


def check_conditions(request: Request, etag: str | None, modified: datetime | None, *, read: bool) -> Response | None:
    """If-Match / If-None-Match / If-(Un)Modified-Since: 412 ConditionNotMet, or 304 on reads."""
    if_match = request.header("If-Match")
    if if_match and if_match != "*" and if_match.strip('"') != (etag or "").strip('"'):
        raise ConditionNotMet()
    if_none_match = request.header("If-None-Match")
    if if_none_match and (if_none_match == "*" or if_none_match.strip('"') == (etag or "").strip('"')):
        if read:
            return Response(304)
        raise ConditionNotMet()
    modified_s = modified.replace(microsecond=0) if modified else None
    since = parse_http_date(request.header("If-Modified-Since"))
    if since and modified_s and modified_s <= since:
        if read:
            return Response(304)
        raise ConditionNotMet("The resource has not been modified since the given time.")
    unmodified = parse_http_date(request.header("If-Unmodified-Since"))
    if unmodified and modified_s and modified_s > unmodified:
        raise ConditionNotMet("The resource has been modified since the given time.")
    return None


def check_entity_conditions(request: Request, entity: dict[str, Any], *, read: bool) -> Response | None:
    """`check_conditions` against an entity's eTag and lastModified."""
    return check_conditions(request, entity.get("eTag"), parse_iso(str(entity.get("lastModified", ""))), read=read)
