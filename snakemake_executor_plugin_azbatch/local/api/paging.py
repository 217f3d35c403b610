"""Lists as Batch answers them: `$filter`, `$select`, `maxresults`, a stable order and `odata.nextLink` paging.

Lists are ordered by (creationTime, id) — or id / name where there is no creationTime — and `odata.nextLink`
carries `$skiptoken` = the last key returned, so a link stays valid while entities come and go. String
comparisons in `$filter` ignore case (IDs are case-insensitive on Batch).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from ..model.errors import OutOfRangeQueryParameterValue
from ..model.timestamps import parse_iso
from .http_messages import Request, Response, json_response, query_error
from .odata import ODataError, apply_select, parse_filter, parse_select

MAX_RESULTS = 1000


def sort_key(item: dict[str, Any]) -> list[str]:
    created_text = str(item.get("creationTime", ""))
    if len(created_text) == 27 and created_text[-1] == "Z" and created_text[10] == "T":
        stamp = created_text[:-1]  # the service's own shape (iso_now) is already the key: no parsing per item
    else:
        created = parse_iso(created_text)
        stamp = created.strftime("%Y-%m-%dT%H:%M:%S.%f") if created else ""
    ident = (
        item.get("id") or item.get("name") or item.get("nodeId") or item.get("poolId")
        or item.get("nodeAgentSKUId") or ""
    )
    return [stamp, str(ident).lower()]


def select_names(select: str) -> list[str]:
    try:
        return parse_select(select)
    except ODataError as exc:
        raise query_error("$select", select, str(exc)) from None


EXPANDABLE = ("stats",)  # what Batch's $expand accepts: statistics only


def expanded_names(request: Request) -> set[str]:
    """The `$expand` clause's names; anything but `stats` is refused (stricter than Batch, which may ignore it)."""
    text = request.query.get("$expand")
    if text is None:
        return set()
    names = {part.strip() for part in text.split(",")}
    unknown = sorted(n for n in names if n not in EXPANDABLE)
    if unknown:
        raise query_error("$expand", text, f"only {', '.join(EXPANDABLE)} can be expanded, not {unknown[0]!r}")
    return names


def projected(item: dict[str, Any], request: Request, names: list[str] | None) -> dict[str, Any]:
    """An entity as a list or get answers it: `$select` applied (`stats` kept only when selected); without
    `$select`, `stats` only with `$expand=stats`, as Batch documents its statistics."""
    expand = expanded_names(request)
    if names:
        return apply_select(item, names)
    if "stats" in item and "stats" not in expand:
        return {k: v for k, v in item.items() if k != "stats"}
    return item


def _max_results(request: Request) -> int:
    raw = request.query.get("maxresults")
    if raw is None:
        return MAX_RESULTS
    try:
        value = int(raw)
    except ValueError:
        raise query_error("maxresults", raw, "must be a whole number from 1 to 1000") from None
    if not 1 <= value <= MAX_RESULTS:
        raise query_error("maxresults", raw, "must be from 1 to 1000", OutOfRangeQueryParameterValue)
    return value


def cut_page(request: Request, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The page a list request asks for — `$filter`, order, `$skiptoken`, `maxresults` — and whether more follow.
    Only reads the items, so a model can cut a page from its live records and copy just that page."""
    max_results = _max_results(request)
    filter_text = request.query.get("$filter")
    predicate = None
    if filter_text:
        try:
            predicate = parse_filter(filter_text)
        except ODataError as exc:
            raise query_error("$filter", filter_text, str(exc)) from None
    select = request.query.get("$select")
    if select:
        select_names(select)  # checked before $skiptoken, so errors come in the same order on every page
    expanded_names(request)
    token = request.query.get("$skiptoken")
    after = decode_token(token) if token else None
    # The cheaper cut first: past the $skiptoken (later pages get cheaper), else the $filter (a status poll
    # for the few tasks that changed computes few keys).
    if after is not None:
        keyed = [(key, item) for item in items if (key := sort_key(item)) > after]
        if predicate is not None:
            keyed = [pair for pair in keyed if predicate(pair[1])]
    else:
        keyed = [(sort_key(item), item) for item in items if predicate is None or predicate(item)]
    keyed.sort(key=lambda pair: pair[0])
    return [item for _, item in keyed[:max_results]], len(keyed) > max_results


def listing(request: Request, items: list[dict[str, Any]], metadata_name: str) -> Response:
    """Filter, order, page and project a list; `odata.nextLink` is absolute and carries `$skiptoken`."""
    return render_page(request, *cut_page(request, items), metadata_name)


def render_page(request: Request, page: list[dict[str, Any]], more: bool, metadata_name: str) -> Response:
    """A page from `cut_page` as the list response: `$select` applied, `odata.nextLink` when more follow."""
    select = request.query.get("$select")
    names = select_names(select) if select else None
    payload: dict[str, Any] = {
        "odata.metadata": request.metadata(metadata_name),
        "value": [projected(item, request, names) for item in page],
    }
    if more:
        payload["odata.nextLink"] = next_link(request, encode_token(sort_key(page[-1])))
    return json_response(200, payload)


def encode_token(key: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode("utf-8")).decode("ascii").rstrip("=")


def decode_token(token: str) -> list[str]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise query_error("$skiptoken", token, "not a continuation token from odata.nextLink; restart the listing")
    return key


def next_link(request: Request, token: str) -> str:
    params = [(name, value) for name, value in parse_qs(request.raw_query, keep_blank_values=False).items()]
    kept = [(name, values[0]) for name, values in params if name.lower() != "$skiptoken"]
    kept.append(("$skiptoken", token))
    return f"{request.base_url}{request.raw_path}?{urlencode(kept, quote_via=quote)}"
