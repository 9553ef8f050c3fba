"""The batch endpoints: ``POST /v1/batch/get``, ``/v1/batch/put`` and ``/v1/batch/delete``.

The request is one JSON object: ``keys`` (get) or ``items`` (put, delete), up to
``MAX_BATCH_KEYS``, the whole body at most ``--max-value-bytes``; the quorum parameters are the
query string of the single-key request (``r``/``w``, ``consistency``, ``strict``; ``ttl`` on
put). Keys are JSON strings (their UTF-8 bytes), or base64 with ``"encoding": "base64"``;
values are always base64. A malformed request is refused as a whole (nothing is read or
written); otherwise the answer is ``200`` with one result per key, in request order, each
with the status and body fields the single-key request would have answered.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any

from ringkv.core.batching import MAX_BATCH_KEYS, BatchError, check_keys
from ringkv.core.clock_bounds import ClockSkew
from ringkv.core.conditions import MalformedCondition, parse_condition
from ringkv.core.expiry import live_versions, parse_ttl
from ringkv.core.versions import VClock, context_of, encode_context
from ringkv.node.api_errors import _WRITE_ERRORS, ApiError, api_error, json_object
from ringkv.node.batch import WriteItem
from ringkv.node.guards import ClockGuard
from ringkv.node.http import Request, Response, json_response
from ringkv.node.kv_api import MAX_KEY_BYTES, checked_context, counted, request_quorum
from ringkv.node.kv_options import sibling_json

if TYPE_CHECKING:
    from ringkv.node.node import Node

_GET_FIELDS = {"keys", "encoding"}
_ITEM_FIELDS = {
    "put": {"key", "value", "context", "if_match", "if_none_match", "replace", "ttl", "delete"},
    "delete": {"key", "context", "if_match"},
}


def _body(request: Request, fields: set[str]) -> dict[str, Any]:
    body = json_object(request, "the body must be a JSON object")
    unknown = set(body) - fields
    if unknown:
        raise ApiError(400, "bad_request", f"unknown fields {sorted(unknown)}; allowed: "
                       f"{sorted(fields)}")  # fmt: skip
    if body.get("encoding", "utf-8") not in ("utf-8", "base64"):
        raise ApiError(400, "bad_request", 'encoding must be "utf-8" or "base64"')
    return body


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ApiError(400, "bad_request", f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_request", f"{what} is not valid base64") from None


def _key(raw: object, encoding: str, index: int) -> bytes:
    if encoding == "base64":
        key = _b64(raw, f"key {index}")
    elif isinstance(raw, str):
        key = raw.encode("utf-8", "surrogatepass")
    else:
        raise ApiError(400, "bad_request", f"key {index} must be a string")
    if not key:
        raise ApiError(400, "bad_request", f"key {index} is empty")
    if len(key) > MAX_KEY_BYTES:
        raise ApiError(414, "key_too_long", f"key {index} is {len(key)} bytes; the limit is "
                       f"{MAX_KEY_BYTES}")  # fmt: skip
    return key


def _shown(key: bytes, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(key).decode("ascii")
    return key.decode("utf-8", "surrogatepass")


def _checked(keys: list[bytes], unique: bool) -> None:
    try:
        check_keys(keys, MAX_BATCH_KEYS, unique=unique)
    except BatchError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def _error(exc: Exception) -> dict[str, Any]:
    error = api_error(exc)
    return {"status": error.status, "error": error.code, "message": error.message, **error.extra}


@counted("batch_get")
async def handle_batch_get(node: Node, request: Request) -> Response:
    quorum = request_quorum(request, node, "GET")
    body = _body(request, _GET_FIELDS)
    encoding = body.get("encoding", "utf-8")
    raw_keys = body.get("keys")
    if not isinstance(raw_keys, list):
        raise ApiError(400, "bad_request", 'the body must be {"keys": [key, ...]}')
    keys = [_key(k, encoding, i) for i, k in enumerate(raw_keys)]
    _checked(keys, unique=False)
    outcomes = await node.batches.get_many(keys, quorum)
    now_ms = int(time.time() * 1000)
    results = []
    for key, versions in zip(keys, outcomes, strict=True):
        entry: dict[str, Any] = {"key": _shown(key, encoding)}
        if isinstance(versions, Exception):
            entry.update(_error(versions))
            results.append(entry)
            continue
        live = live_versions(versions, now_ms)
        if versions:
            entry["context"] = encode_context(context_of(versions))
        if len(live) == 1:
            entry.update(sibling_json(live[0], now_ms), status=200)
        elif live:
            entry.update(status=300, siblings=[sibling_json(v, now_ms) for v in live])
        else:
            entry.update(status=404, error="not_found")
        results.append(entry)
    return json_response({"results": results})


def _write_item(
    raw: object, index: int, op: str, encoding: str, default_ttl: int, guard: ClockGuard
) -> WriteItem:
    if not isinstance(raw, dict):
        raise ApiError(400, "bad_request", f"item {index} must be a JSON object")
    unknown = set(raw) - _ITEM_FIELDS[op]
    if unknown:
        raise ApiError(400, "bad_request", f"item {index}: unknown fields {sorted(unknown)}")
    key = _key(raw.get("key"), encoding, index)
    deleting = op == "delete" or raw.get("delete") is True  # a put batch may delete keys too
    if deleting and ("value" in raw or "ttl" in raw or "if_none_match" in raw):
        raise ApiError(400, "bad_request", f"item {index}: a delete takes no value, ttl or "
                       "if_none_match")  # fmt: skip
    value = None if deleting else _b64(raw.get("value"), f"item {index} value")
    context = VClock.empty()
    if raw.get("context") is not None:
        if not isinstance(raw["context"], str):
            raise ApiError(400, "bad_request", f"item {index}: context must be a string")
        context = checked_context(
            raw["context"], guard, malformed=f"item {index}: ",
            refused=f"item {index}: context refused: ",
        )  # fmt: skip
    if_match = raw.get("if_match")
    if raw.get("replace") is True:
        if if_match is not None:
            raise ApiError(400, "bad_request", f"item {index}: replace and if_match exclude "
                           "each other")  # fmt: skip
        if_match = "*"
    if if_match is not None and not isinstance(if_match, str):
        raise ApiError(400, "bad_request", f"item {index}: if_match must be a string")
    if_none_match = "*" if raw.get("if_none_match") is True else None
    try:
        condition = parse_condition(if_none_match, if_match)
        if condition is not None and condition.kind == "matches":
            guard.check_context(condition.context)  # the write is made with it
    except MalformedCondition as exc:
        raise ApiError(400, "bad_request", f"item {index}: {exc}") from None
    except ClockSkew as exc:
        raise ApiError(400, "bad_request", f"item {index}: if_match refused: {exc}") from None
    if condition is not None and raw.get("context") is not None:
        raise ApiError(400, "bad_request", f"item {index}: a condition replaces the context")
    ttl = default_ttl
    if raw.get("ttl") is not None:
        if type(raw["ttl"]) is not int:
            raise ApiError(400, "bad_request", f"item {index}: ttl must be whole seconds")
        try:
            ttl = parse_ttl(str(raw["ttl"]))
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"item {index}: {exc}") from None
    return WriteItem(key, value, context, condition, ttl)


async def _handle_batch_write(node: Node, request: Request, op: str) -> Response:
    quorum = request_quorum(request, node, "PUT" if op == "put" else "DELETE")
    body = _body(request, {"items", "encoding"} | ({"keys"} if op == "delete" else set()))
    encoding = body.get("encoding", "utf-8")
    raw_items = body.get("items")
    if op == "delete" and "keys" in body:  # {"keys": [...]}: delete each, no context
        if raw_items is not None or not isinstance(body["keys"], list):
            raise ApiError(400, "bad_request", 'give "items" or a list of "keys", not both')
        raw_items = [{"key": key} for key in body["keys"]]
    if not isinstance(raw_items, list):
        raise ApiError(400, "bad_request", 'the body must be {"items": [{"key": ...}, ...]}')
    default_ttl = node.config.default_ttl
    for name, value in request.query():
        if name == "ttl":
            try:
                default_ttl = parse_ttl(value)
            except ValueError as exc:
                raise ApiError(400, "bad_request", str(exc)) from None
    guard = node.coordinator.clock_guard
    items = [_write_item(r, i, op, encoding, default_ttl, guard) for i, r in enumerate(raw_items)]
    _checked([item.key for item in items], unique=True)
    outcomes = await node.batches.put_many(items, quorum)
    results = []
    for item, result in zip(items, outcomes, strict=True):
        entry: dict[str, Any] = {"key": _shown(item.key, encoding)}
        if isinstance(result, _WRITE_ERRORS):
            entry.update(_error(result))
        else:
            entry.update(status=204, context=encode_context(result))
        results.append(entry)
    return json_response({"results": results})


@counted("batch_put")
async def handle_batch_put(node: Node, request: Request) -> Response:
    return await _handle_batch_write(node, request, "put")


@counted("batch_delete")
async def handle_batch_delete(node: Node, request: Request) -> Response:
    return await _handle_batch_write(node, request, "delete")
