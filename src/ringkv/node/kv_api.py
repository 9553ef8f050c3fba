"""The single-key endpoints ``GET``/``PUT``/``DELETE /v1/kv/{key}``, and the request parts
every data endpoint reads the same way: the key, the quorum parameters, the context header and
the request metrics."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from ringkv.core.clock_bounds import ClockSkew
from ringkv.core.expiry import live_versions
from ringkv.core.quorum import Operation, Quorum, QuorumError, resolve
from ringkv.core.validators import (
    IfNoneMatch,
    MalformedCondition,
    etag_of,
    has_value,
    not_modified,
    parse_if_none_match,
)
from ringkv.core.versions import (
    MalformedContext,
    VClock,
    context_of,
    decode_context,
    encode_context,
)
from ringkv.node.api_errors import ApiError, _call
from ringkv.node.conditional import conditional_put
from ringkv.node.guards import ClockGuard
from ringkv.node.http import Request, Response, json_response
from ringkv.node.kv_options import BadWriteOptions, sibling_json, ttl_headers, write_options

if TYPE_CHECKING:
    from ringkv.node.node import Node

#: A data endpoint's handler: ``(node, request) -> response``.
KvHandler = Callable[["Node", Request], Awaitable[Response]]

KV_PREFIX = "/v1/kv/"
MAX_KEY_BYTES = 256
CONTEXT_HEADER = "X-Ringkv-Context"
_PARAMS = {
    "GET": {"r", "consistency", "strict"},
    "PUT": {"w", "consistency", "strict", "ttl"},
    "DELETE": {"w", "consistency", "strict"},
}


def _key(request: Request) -> bytes:
    raw = request.path
    if not raw.startswith(KV_PREFIX):
        raise ApiError(400, "bad_request", "key path must be /v1/kv/{key}")
    key = unquote_to_bytes(raw[len(KV_PREFIX) :])
    if not key:
        raise ApiError(400, "bad_request", "key must not be empty")
    if len(key) > MAX_KEY_BYTES:
        raise ApiError(
            414, "key_too_long", f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}"
        )
    return key


_QUORUMS: dict[tuple[str, str, int, str], Quorum | ApiError] = {}


def request_quorum(request: Request, node: Node, method: str | None = None) -> Quorum:
    """The request's quorum. The answer depends only on the method, the query string and the
    node's settings, so it is cached (clients send the same few query strings over and over).
    ``method``: the single-key method whose parameters apply (batches are POSTs)."""
    config = node.config
    method = method or request.method
    cache_key = (
        method,
        request.query_string,
        config.replication_factor,
        config.default_consistency,
    )
    cached = _QUORUMS.get(cache_key)
    if cached is None:
        try:
            cached = _parse_quorum(request, node, method)
        except ApiError as exc:
            cached = exc
        if len(_QUORUMS) >= 1024:
            _QUORUMS.clear()
        _QUORUMS[cache_key] = cached
    if isinstance(cached, ApiError):
        raise ApiError(cached.status, cached.code, cached.message, **cached.extra)
    return cached


def _parse_quorum(request: Request, node: Node, method: str) -> Quorum:
    allowed = _PARAMS[method]
    query: dict[str, str] = {}
    for name, value in request.query():
        if name not in allowed:
            raise ApiError(
                400, "bad_request",
                f"unknown parameter {name!r} for {method}; allowed: {sorted(allowed)}",
            )  # fmt: skip
        if name in query:
            raise ApiError(400, "bad_request", f"parameter {name!r} given more than once")
        query[name] = value
    op: Operation = "read" if method == "GET" else "write"
    level = query.get("r" if op == "read" else "w")
    try:
        return resolve(
            op,
            node.config.replication_factor,
            level=level,
            consistency=query.get("consistency"),
            strict=query.get("strict"),
            default_consistency=node.config.default_consistency,
        )
    except QuorumError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


_CONTEXT = CONTEXT_HEADER.lower()


def _context(request: Request, node: Node) -> VClock:
    count = request.header_count(_CONTEXT)
    if count > 1:
        raise ApiError(400, "bad_request", f"{CONTEXT_HEADER} given more than once")
    if not count:
        return VClock.empty()
    return checked_context(
        request.headers[_CONTEXT],
        node.coordinator.clock_guard,
        malformed=f"malformed {CONTEXT_HEADER}: ",
        refused=f"{CONTEXT_HEADER} refused: ",
    )


def checked_context(text: str, guard: ClockGuard, *, malformed: str, refused: str) -> VClock:
    """A context from a client, decoded, and refused when its clock runs too far ahead (a
    forged clock must not move ours); ``malformed``/``refused`` start the error message."""
    try:
        clock = decode_context(text)
        guard.check_context(clock)
    except MalformedContext as exc:
        raise ApiError(400, "bad_request", f"{malformed}{exc}") from None
    except ClockSkew as exc:
        raise ApiError(400, "bad_request", f"{refused}{exc}") from None
    return clock


def counted(op: str) -> Callable[[KvHandler], KvHandler]:
    """Counts each request of the handler as ``op`` in the request metrics: its outcome (the
    answer's status, or ``error`` for an unexpected failure) and its latency."""

    def wrap(handler: KvHandler) -> KvHandler:
        @functools.wraps(handler)
        async def counted_handler(node: Node, request: Request) -> Response:
            started = time.perf_counter()
            outcome = "error"
            try:
                response = await handler(node, request)
                outcome = str(response.status)
                return response
            except ApiError as exc:
                outcome = str(exc.status)
                raise
            finally:
                node.metrics.request_count(op, outcome).inc()
                node.metrics.request_latency_of(op).observe(time.perf_counter() - started)

        return counted_handler

    return wrap


_OCTETS = "application/octet-stream"


def _if_none_match(request: Request) -> IfNoneMatch | None:
    """The read's If-None-Match (repeated field lines arrive joined, RFC 9110 §5.3)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return None
    try:
        return parse_if_none_match(header)
    except MalformedCondition as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def cache_control(max_age: int) -> str:
    """What a read allows caches: revalidate every time, unless the cluster allows an age."""
    return f"max-age={max_age}" if max_age > 0 else "no-cache"


@counted("get")
async def handle_get(node: Node, request: Request) -> Response:
    key = _key(request)
    quorum = request_quorum(request, node)
    condition = _if_none_match(request)
    now_ms = int(time.time() * 1000)  # expiry is judged against this node's clock
    versions = None
    if condition is not None:  # a revalidation: the replicas send digests, not values
        etag, found, load = await _call(node.coordinator.get_digest(key, quorum, now_ms))
        if not_modified(condition, etag, found):
            return Response(304, b"", _validators(node, etag))
        versions = load() if load is not None else None
    if versions is None:
        versions = await _call(node.coordinator.get(key, quorum))
    etag = etag_of(versions, now_ms)
    if not_modified(condition, etag, has_value(versions, now_ms)):
        return Response(304, b"", _validators(node, etag))
    live = live_versions(versions, now_ms)  # expired values read as absent
    if len(live) == 1:
        node.metrics.response_size.labels("get").observe(len(live[0].value or b""))
        context = encode_context(context_of(versions))
        headers = [(CONTEXT_HEADER, context), *ttl_headers(live[0], now_ms)]
        headers += _validators(node, etag)
        return Response(200, live[0].value or b"", headers, _OCTETS)
    headers = [(CONTEXT_HEADER, encode_context(context_of(versions)))] if versions else []
    headers += _validators(node, etag)
    if not live:
        return json_response({"error": "not_found", "message": "key not found"}, 404, headers)
    body = {"siblings": [sibling_json(v, now_ms) for v in live]}
    return json_response(body, 300, headers)


def _validators(node: Node, etag: str) -> list[tuple[str, str]]:
    return [("ETag", etag), ("Cache-Control", cache_control(node.config.cache_max_age))]


async def _write(node: Node, request: Request, op: str, value: bytes | None) -> Response:
    """PUT (a value) and DELETE (None): one versioned write through the coordinator."""
    key = _key(request)
    quorum = request_quorum(request, node)
    context = _context(request, node)
    try:
        condition, ttl = write_options(
            request, node.config, bool(context), value is None, node.coordinator.clock_guard
        )
    except BadWriteOptions as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if value is not None:
        node.metrics.request_size.labels(op).observe(len(value))
    if condition is not None:
        write = conditional_put(node.coordinator, key, value, condition, quorum, ttl)
    else:
        write = node.coordinator.put(key, value, context, quorum, ttl=ttl)
    clock = await _call(write)
    return Response(204, b"", [(CONTEXT_HEADER, encode_context(clock))])


@counted("put")
async def handle_put(node: Node, request: Request) -> Response:
    # The server read the whole body and refused one above the limit (413) already.
    return await _write(node, request, "put", request.body)


@counted("delete")
async def handle_delete(node: Node, request: Request) -> Response:
    return await _write(node, request, "delete", None)
