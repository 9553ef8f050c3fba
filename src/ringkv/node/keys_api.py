"""``GET /v1/keys?prefix=&limit=&cursor=&encoding=&r=``: one page of the key listing
(``ringkv.node.listing``)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ringkv.core.listing import START, MalformedCursor, decode_cursor, encode_cursor, parse_limit
from ringkv.core.quorum import Quorum, level_count
from ringkv.node.api_errors import ApiError, _call
from ringkv.node.http import Request, Response, json_response
from ringkv.node.kv_api import MAX_KEY_BYTES, counted

if TYPE_CHECKING:
    from ringkv.node.node import Node

_PARAMS = ("prefix", "limit", "cursor", "encoding", "r")


@counted("list_keys")
async def handle_keys(node: Node, request: Request) -> Response:
    query: dict[str, Any] = {}
    # prefix is percent-decoded to bytes (any key bytes); the others are plain text
    for part in request.query_string.split("&") if request.query_string else []:
        name, _, raw = part.partition("=")
        if name not in _PARAMS:
            raise ApiError(400, "bad_request", f"unknown parameter {name!r}; allowed: "
                           f"{list(_PARAMS)}")  # fmt: skip
        if name in query:
            raise ApiError(400, "bad_request", f"parameter {name!r} given more than once")
        query[name] = unquote_to_bytes(raw.replace("+", " "))
    prefix = query.get("prefix", b"")
    if len(prefix) > MAX_KEY_BYTES:
        raise ApiError(400, "bad_request", f"prefix is longer than {MAX_KEY_BYTES} bytes")
    encoding = query.get("encoding", b"utf-8").decode("utf-8", "replace")
    if encoding not in ("utf-8", "base64"):
        raise ApiError(400, "bad_request", "encoding must be utf-8 or base64")
    try:
        limit = parse_limit(query["limit"].decode("ascii", "replace") if "limit" in query
                            else None)  # fmt: skip
        cursor = decode_cursor(query["cursor"].decode("ascii", "replace")) if query.get(
            "cursor") else START  # fmt: skip
        quorum = None
        if "r" in query:
            n = node.config.replication_factor
            quorum = Quorum(n, level_count(query["r"].decode("ascii", "replace"), n, "r"))
    except (ValueError, MalformedCursor) as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    keys, next_cursor = await _call(node.lister.page(prefix, limit, cursor, quorum))
    if encoding == "base64":
        shown = [base64.b64encode(k).decode("ascii") for k in keys]
    else:
        shown = [k.decode("utf-8", "backslashreplace") for k in keys]
    return json_response(
        {"keys": shown, "cursor": encode_cursor(next_cursor) if next_cursor else None}
    )
