"""Per-request options of the key-value API beyond the quorum: the write's condition
(``If-None-Match`` / ``If-Match``) and TTL (``ttl=``, else ``--default-ttl``), and how expiry
shows in read answers (``X-Ringkv-TTL``, a sibling's ``ttl``)."""

from __future__ import annotations

import math
from base64 import b64encode
from typing import Any

from ringkv.core.clock_bounds import ClockSkew
from ringkv.core.conditions import Condition, MalformedCondition
from ringkv.core.expiry import parse_ttl, remaining_ms
from ringkv.core.versions import Version
from ringkv.node.conditional import condition_of
from ringkv.node.config import NodeConfig
from ringkv.node.guards import ClockGuard
from ringkv.node.http import Request

#: Response header of a read: whole seconds until the value expires (absent: it never does).
TTL_HEADER = "X-Ringkv-TTL"


class BadWriteOptions(ValueError):
    """A condition or TTL the request cannot have (HTTP 400)."""


def write_options(
    request: Request,
    config: NodeConfig,
    has_context: bool,
    deleting: bool,
    guard: ClockGuard | None = None,
) -> tuple[Condition | None, int]:
    """(condition, ttl seconds) of a PUT or DELETE; ``BadWriteOptions`` when invalid.
    ``guard``: refuses an ``If-Match`` context with a clock too far ahead, as it does an
    ``X-Ringkv-Context`` (the write is made with that context)."""
    try:
        condition = condition_of(request.headers, request.repeated, has_context)
        if guard is not None and condition is not None and condition.kind == "matches":
            guard.check_context(condition.context)
    except MalformedCondition as exc:
        raise BadWriteOptions(str(exc)) from None
    except ClockSkew as exc:
        raise BadWriteOptions(f"If-Match refused: {exc}") from None
    if deleting:
        if condition is not None and condition.kind == "absent":
            raise BadWriteOptions("If-None-Match: * applies to PUT only")
        return condition, 0
    ttl = config.default_ttl
    if "ttl=" in request.query_string:
        for name, value in request.query():
            if name == "ttl":
                try:
                    ttl = parse_ttl(value)
                except ValueError as exc:
                    raise BadWriteOptions(str(exc)) from None
    return condition, ttl


def ttl_seconds(version: Version, now_ms: int) -> int | None:
    """Whole seconds left (rounded up, so a live value never shows 0); None: no expiry."""
    left = remaining_ms(version, now_ms)
    return None if left is None else max(1, math.ceil(left / 1000))


def ttl_headers(version: Version, now_ms: int) -> list[tuple[str, str]]:
    seconds = ttl_seconds(version, now_ms)
    return [] if seconds is None else [(TTL_HEADER, str(seconds))]


def sibling_json(version: Version, now_ms: int) -> dict[str, Any]:
    """One sibling of a ``300`` answer: its value in base64, and its ``ttl`` when it expires."""
    entry: dict[str, Any] = {"value": b64encode(version.value or b"").decode("ascii")}
    seconds = ttl_seconds(version, now_ms)
    if seconds is not None:
        entry["ttl"] = seconds
    return entry
