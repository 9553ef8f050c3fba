"""Python clients for the ringkv HTTP API: `Client` (blocking) and `AsyncClient` (asyncio).

Both take one or more endpoints ("http://127.0.0.1:7001" or "127.0.0.1:7001"; a single
string may list several, comma separated). A request goes to the endpoint that answered
last; when an endpoint cannot be reached (refused, reset, timed out) the next one is
tried. An HTTP error answer is never retried: it is raised as a `RingkvError`.

    with Client("http://127.0.0.1:7001") as kv:
        ctx = kv.put("greeting", b"hello")
        res = kv.get("greeting")          # GetResult(found=True, value=b"hello", ...)
        kv.put("greeting", b"hi", context=res.context)
        kv.delete("greeting", context=kv.get("greeting").context)

`Client` keeps a small pool of keep-alive `http.client` connections per endpoint and may
be shared by a few threads. `AsyncClient` uses one pooled `aiohttp.ClientSession`.

Token-aware routing (`token_aware=True`): the client fetches the ring (`GET /v1/ring`) and
sends each key-value request straight to a live replica of the key (the key's first live
replica first, then the others), so a node that does not hold the key never has to forward a
write, and reads start on a node holding a copy. The endpoints given to the constructor stay
the fallback. The ring is fetched again every `ring_refresh` seconds and whenever a replica
cannot be reached.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import yarl

from ringkv.client_cache import CacheMetrics, ClientCache, ReadPlan, make_cache
from ringkv.core.batching import MAX_BATCH_KEYS
from ringkv.core.errors import reason_of
from ringkv.core.json_input import parse_json
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring, key_hash

__all__ = [
    "AsyncClient",
    "BadRequest",
    "CacheMetrics",
    "Client",
    "ClientCache",
    "ConnectionFailed",
    "GetResult",
    "PreconditionFailed",
    "RingkvError",
    "Timeout",
    "Unavailable",
]

CONTEXT_HEADER = "X-Ringkv-Context"
TTL_HEADER = "X-Ringkv-TTL"
_CONTEXT = CONTEXT_HEADER.lower()  # key in the lower-cased response headers
_POOL_SIZE = 8  # idle connections kept per endpoint by the sync client

Key = bytes | str
K = TypeVar("K", bound=bytes | str)  # the key type a batch was called with, in its answer
Level = int | str | None


def _raw_key(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else key


# --------------------------------------------------------------------------- errors


_JSON_HEADERS = {"Content-Type": "application/json"}


class RingkvError(Exception):
    """An error answer from a node (or, for `ConnectionFailed`, no answer at all)."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{message} (HTTP {status} {code})" if status else message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class BadRequest(RingkvError):
    """400 bad_request, 413 value_too_large or 414 key_too_long."""


class Unavailable(RingkvError):
    """503: fewer replicas reachable than the request needs; nothing was written."""

    @property
    def required(self) -> int | None:
        return self.body.get("required")

    @property
    def alive(self) -> int | None:
        return self.body.get("alive")


class Timeout(RingkvError):
    """504: replicas did not answer in time; a write may be partly applied."""

    @property
    def required(self) -> int | None:
        return self.body.get("required")

    @property
    def acks(self) -> int | None:
        return self.body.get("acks")


class PreconditionFailed(RingkvError):
    """412: a conditional write's condition did not hold; nothing was written. `.context`
    covers what the node saw (read again, or write with it)."""

    @property
    def context(self) -> str | None:
        return self.body.get("context")


class ConnectionFailed(RingkvError):
    """No endpoint could be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "connection_failed", message, {})


def error_from_response(status: int, body: bytes) -> RingkvError:
    """Build the exception for an error answer, parsing its JSON body when there is one."""
    try:
        parsed = parse_json(body) if body else {}
    except ValueError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    code = str(parsed.get("error") or f"http_{status}")
    message = str(parsed.get("message") or body.decode("utf-8", "replace").strip() or code)
    # The class is named by the node's error table (ringkv.core.errors): by code, else status.
    reason = reason_of(status, code)
    classes = {c.__name__: c for c in (BadRequest, Unavailable, Timeout, PreconditionFailed)}
    cls = classes.get(reason.client, RingkvError) if reason is not None else RingkvError
    return cls(status, code, message, parsed)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class GetResult:
    """The answer to a read. `siblings` holds every concurrent value (just one when the
    key has a single version); `context` is what a follow-up write should send."""

    found: bool
    value: bytes | None
    siblings: list[bytes] = field(default_factory=list)
    context: str | None = None
    #: Seconds until the value expires (None: it never does); for siblings, the soonest.
    ttl: int | None = None
    #: The answer's ETag (its version set), for If-None-Match.
    etag: str | None = None
    #: Served by the client's cache (`ClientCache`); `age`: seconds since a node confirmed it.
    from_cache: bool = False
    age: float = 0.0
    #: `get(..., if_none_match=...)` answered 304: the named version is still current.
    not_modified: bool = False


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_endpoints(endpoints: str | Sequence[str]) -> list[_Endpoint]:
    """Turn "http://h:p", "h:p" or a comma separated list of them into endpoints."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    result = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        url = urlsplit(item if "://" in item else f"http://{item}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"bad endpoint {item!r}: expected http://HOST:PORT or HOST:PORT")
        port = url.port or (443 if url.scheme == "https" else 80)
        result.append(_Endpoint(url.scheme, url.hostname, port))
    if not result:
        raise ValueError("no endpoint given")
    return result


class RingView:
    """Which endpoints hold a key, from a node's `GET /v1/ring` answer."""

    def __init__(self, answer: dict[str, Any], scheme: str = "http") -> None:
        self.version = str(answer.get("version", ""))
        self.n = int(answer.get("replication_factor", 3))
        tokens: dict[str, list[int]] = {}
        zones: dict[str, str] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        for node in answer.get("nodes", []):
            node_id = str(node["id"])
            if node.get("tokens"):
                tokens[node_id] = [int(t) for t in node["tokens"]]
                zones[node_id] = str(node.get("zone") or "default")
            address = node.get("address")
            if address and node.get("alive", True):
                host, _, port = str(address).rpartition(":")
                if host and port.isdigit():
                    self.endpoints[node_id] = _Endpoint(scheme, host.strip("[]"), int(port))
        self.ring = Ring(tokens, zones) if tokens else Ring.empty()

    def replicas(self, key: Key) -> list[_Endpoint]:
        """The live replicas' endpoints for a key, its preference-list order."""
        if not len(self.ring):
            return []
        raw = _raw_key(key)
        found = []
        for replica in preference_list(self.ring, key_hash(raw), self.n):
            endpoint = self.endpoints.get(replica.node)
            if endpoint is not None:
                found.append(endpoint)
        return found


def kv_path(key: Key) -> str:
    return "/v1/kv/" + quote(_raw_key(key), safe="")


def with_query(path: str, **params: Level | bool) -> str:
    """Append the parameters that are not None (booleans as true/false)."""
    pairs = [
        (name, str(value).lower() if isinstance(value, bool) else str(value))
        for name, value in params.items()
        if value is not None
    ]
    return f"{path}?{urlencode(pairs)}" if pairs else path


def _lower(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _context_headers(context: str | None) -> dict[str, str]:
    return {CONTEXT_HEADER: context} if context is not None else {}


def write_headers(
    context: str | None,
    if_match: str | None = None,
    if_none_match: bool = False,
    replace: bool = False,
) -> dict[str, str]:
    """The headers of a write: its context, or one condition (see docs/api.md)."""
    given = sum((context is not None, if_match is not None, if_none_match, replace))
    if given > 1:
        raise ValueError("give at most one of context, if_match, if_none_match and replace")
    if if_none_match:
        return {"If-None-Match": "*"}
    if replace:
        return {"If-Match": "*"}
    if if_match is not None:
        return {"If-Match": if_match}
    return _context_headers(context)


def _ttl_of(headers: Mapping[str, str]) -> int | None:
    raw = headers.get(TTL_HEADER.lower())
    return int(raw) if raw is not None and raw.isdigit() else None


def _get_result(status: int, headers: Mapping[str, str], body: bytes) -> GetResult:
    """A read's answer from its status, lower-cased headers and body."""
    context, etag = headers.get(_CONTEXT), headers.get("etag")
    if status == 200:
        return GetResult(True, body, [body], context, ttl=_ttl_of(headers), etag=etag)
    if status == 300:
        document = parse_json(body)
        # a deleted sibling carries no value
        entries = [s for s in document.get("siblings", []) if s.get("value") is not None]
        siblings = [base64.b64decode(s["value"]) for s in entries]
        ttls = [int(s["ttl"]) for s in entries if isinstance(s.get("ttl"), int)]
        return GetResult(True, None, siblings, context, ttl=min(ttls) if ttls else None, etag=etag)
    if status == 404:
        return GetResult(False, None, [], context, etag=etag)
    if status == 304:  # only for an explicit if_none_match
        return GetResult(True, None, [], None, etag=etag, not_modified=True)
    raise error_from_response(status, body)


# --------------------------------------------------------------------------- batches

BatchWrite = dict[str, Any]  # one item of POST /v1/batch/put or /delete, before encoding


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    """Split into batches of at most MAX_BATCH_KEYS (a node refuses larger ones)."""
    return [items[i : i + MAX_BATCH_KEYS] for i in range(0, len(items), MAX_BATCH_KEYS)]


def _write_items(
    keys: Sequence[K],
    values: Mapping[K, bytes] | None,
    contexts: Mapping[K, str] | None,
    if_match: Mapping[K, str] | None,
    if_none_match: bool,
    replace: bool,
    ttl: int | None,
) -> list[BatchWrite]:
    items = []
    for key in keys:
        item: BatchWrite = {"key": _b64(_raw_key(key))}
        if values is not None:
            item["value"] = _b64(values[key])
        if contexts and key in contexts:
            item["context"] = contexts[key]
        if if_match and key in if_match:
            item["if_match"] = if_match[key]
        if if_none_match:
            item["if_none_match"] = True
        if replace:
            item["replace"] = True
        if ttl is not None:
            item["ttl"] = ttl
        items.append(item)
    return items


def _batch_results(status: int, body: bytes, count: int) -> list[dict[str, Any]]:
    results = _json(status, body).get("results")
    if not isinstance(results, list) or len(results) != count:
        raise RingkvError(status, "bad_response", "a batch answer must have one result per key", {})
    return results


def _batch_get_outcome(entry: dict[str, Any]) -> GetResult | RingkvError:
    status = int(entry.get("status", 0))
    context = entry.get("context")
    if status == 200:
        value = base64.b64decode(entry["value"])
        return GetResult(True, value, [value], context, ttl=entry.get("ttl"))
    if status in (300, 404):
        headers = {_CONTEXT: context} if context else {}
        return _get_result(status, headers, json.dumps(entry).encode())
    return error_from_response(status, json.dumps(entry).encode())


def _batch_write_outcome(entry: dict[str, Any]) -> str | RingkvError:
    status = int(entry.get("status", 0))
    if status == 204:
        return str(entry.get("context", ""))
    return error_from_response(status, json.dumps(entry).encode())


def _batch_path(op: str, **params: Level | bool) -> str:
    return with_query(f"/v1/batch/{op}", **params)


def _keys_path(prefix: Key | None, limit: int | None, cursor: str | None, r: Level = None) -> str:
    pairs = [("encoding", "base64")]
    if r is not None:
        pairs.append(("r", str(r)))
    if prefix:
        pairs.append(("prefix", quote(_raw_key(prefix), safe="")))
    if limit is not None:
        pairs.append(("limit", str(limit)))
    if cursor:
        pairs.append(("cursor", cursor))
    return "/v1/keys?" + "&".join(f"{name}={value}" for name, value in pairs)


def _keys_page(status: int, body: bytes) -> tuple[list[bytes], str | None]:
    document = _json(status, body)
    return [base64.b64decode(k) for k in document.get("keys", [])], document.get("cursor")


def _read_headers(plan: ReadPlan | None, if_none_match: str | None) -> dict[str, str] | None:
    if if_none_match is not None:
        return {"If-None-Match": if_none_match}
    return dict(plan.headers) if plan is not None and plan.headers else None


def _finish_read(
    cache: ClientCache | None, plan: ReadPlan | None, answer: tuple[int, dict[str, str], bytes]
) -> GetResult:
    status, headers, body = answer
    if cache is None or plan is None:
        return _get_result(status, headers, body)
    try:
        result = None if status == 304 and plan.entry is not None else _get_result(*answer)
    except BaseException:
        cache.abandon(plan)
        raise
    return cache.complete(plan, status, headers.get("etag"), result)  # type: ignore[no-any-return]


def _abandon(cache: ClientCache | None, plan: ReadPlan | None) -> None:
    if cache is not None and plan is not None:
        cache.abandon(plan)


def _plan(
    cache: ClientCache | None, key: Key, max_staleness: float | None, if_none_match: str | None
) -> ReadPlan | None:
    if cache is None or if_none_match is not None:
        return None
    return cache.plan(_raw_key(key), max_staleness)


def _invalidate(cache: ClientCache | None, key: Key) -> None:
    if cache is not None:
        cache.invalidate(_raw_key(key))


def _check(status: int, body: bytes) -> None:
    if not 200 <= status < 300:
        raise error_from_response(status, body)


def _json(status: int, body: bytes) -> dict[str, Any]:
    _check(status, body)
    document = parse_json(body)
    if not isinstance(document, dict):
        raise RingkvError(status, "bad_response", "expected a JSON object", {})
    return document


# --------------------------------------------------------------------------- sync client


class Client:
    """Blocking client with keep-alive connections pooled per endpoint."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 5.0,
        token: str | None = None,
        token_aware: bool = False,
        ring_refresh: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        cache: ClientCache | Mapping[str, Any] | bool | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.cache = make_cache(cache)  # see ringkv.client_cache
        self.timeout = timeout
        self.ssl_context = ssl_context  # for https endpoints; None: the system's defaults
        self.token_aware = token_aware
        self.ring_refresh = ring_refresh
        self._ring: RingView | None = None
        self._ring_fetched = -float("inf")
        # A bearer token for clusters with --auth-tokens-file (default: $RINGKV_TOKEN).
        token = token if token is not None else os.environ.get("RINGKV_TOKEN") or None
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._lock = threading.Lock()
        self._idle: dict[_Endpoint, list[http.client.HTTPConnection]] = {
            e: [] for e in self.endpoints
        }
        self._preferred = 0

    # -- key-value operations

    def put(
        self,
        key: Key,
        value: bytes,
        *,
        context: str | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        ttl: int | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        replace: bool = False,
    ) -> str:
        """Write; returns the new version's context. `ttl`: seconds until it expires.
        `if_none_match`: only if the key has no live value; `if_match`: only if the key is
        still at that context; `replace`: supersede whatever is there (no sibling). A failed
        condition raises `PreconditionFailed`."""
        headers = write_headers(context, if_match, if_none_match, replace)
        path = with_query(kv_path(key), w=w, consistency=consistency, strict=strict, ttl=ttl)
        try:
            status, headers, body = self._request("PUT", path, value, headers, self._replicas(key))
        finally:
            _invalidate(self.cache, key)
        _check(status, body)
        return headers.get(_CONTEXT, "")

    def get(
        self,
        key: Key,
        *,
        r: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        max_staleness: float | None = None,
        if_none_match: str | None = None,
    ) -> GetResult:
        """Read a key. With a cache: revalidated, or served from it within ``max_staleness``
        seconds (default: the cache's; a weaker read, see ringkv.client_cache).
        ``if_none_match``: an ETag (list) for a conditional read of your own, bypassing the
        cache; a 304 answer is a result with ``not_modified=True``."""
        path = with_query(kv_path(key), r=r, consistency=consistency, strict=strict)
        plan = _plan(self.cache, key, max_staleness, if_none_match)
        if plan is not None and plan.serve:
            return self.cache.cached(plan)  # type: ignore[union-attr,no-any-return]
        try:
            answer = self._request(
                "GET", path, None, _read_headers(plan, if_none_match), self._replicas(key)
            )
        except BaseException:
            _abandon(self.cache, plan)
            raise
        return _finish_read(self.cache, plan, answer)

    @property
    def cache_metrics(self) -> CacheMetrics | None:
        """The cache's counters (hits, revalidations, not_modified, misses, evictions)."""
        return self.cache.metrics if self.cache is not None else None

    def delete(
        self,
        key: Key,
        *,
        context: str | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        if_match: str | None = None,
    ) -> None:
        """Delete. `if_match`: only if the key is still at that context (else
        `PreconditionFailed`)."""
        path = with_query(kv_path(key), w=w, consistency=consistency, strict=strict)
        headers = write_headers(context, if_match)
        try:
            status, _, body = self._request("DELETE", path, None, headers, self._replicas(key))
        finally:
            _invalidate(self.cache, key)
        _check(status, body)

    # -- batches (POST /v1/batch/*): one request per MAX_BATCH_KEYS keys

    def get_many(
        self,
        keys: Sequence[K],
        *,
        r: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> dict[K, GetResult | RingkvError]:
        """Read many keys; each maps to its `GetResult`, or the error of that key alone
        (`Unavailable`, `Timeout`, ...), so a partial failure can be retried per key."""
        path = _batch_path("get", r=r, consistency=consistency, strict=strict)
        out: dict[K, GetResult | RingkvError] = {}
        for chunk in _chunks(list(keys)):
            payload = {"keys": [_b64(_raw_key(k)) for k in chunk], "encoding": "base64"}
            status, _, body = self._request("POST", path, json.dumps(payload).encode(),
                                            _JSON_HEADERS)  # fmt: skip
            for key, entry in zip(chunk, _batch_results(status, body, len(chunk)), strict=True):
                out[key] = _batch_get_outcome(entry)
        return out

    def put_many(
        self,
        values: Mapping[K, bytes],
        *,
        contexts: Mapping[K, str] | None = None,
        if_match: Mapping[K, str] | None = None,
        if_none_match: bool = False,
        replace: bool = False,
        ttl: int | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> dict[K, str | RingkvError]:
        """Write many keys; each maps to its new context, or the error of that key alone
        (`PreconditionFailed`, `Unavailable`, ...). Options as for `put`, per key for
        `contexts` and `if_match`."""
        items = _write_items(list(values), values, contexts, if_match, if_none_match, replace,
                             ttl)  # fmt: skip
        return self._write_many("put", list(values), items, w, consistency, strict)

    def delete_many(
        self,
        keys: Sequence[K],
        *,
        contexts: Mapping[K, str] | None = None,
        if_match: Mapping[K, str] | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> dict[K, str | RingkvError]:
        """Delete many keys; each maps to the tombstone's context, or its own error."""
        items = _write_items(list(keys), None, contexts, if_match, False, False, None)
        return self._write_many("delete", list(keys), items, w, consistency, strict)

    def _write_many(
        self,
        op: str,
        keys: list[K],
        items: list[BatchWrite],
        w: Level,
        consistency: str | None,
        strict: bool | None,
    ) -> dict[K, str | RingkvError]:
        path = _batch_path(op, w=w, consistency=consistency, strict=strict)
        out: dict[K, str | RingkvError] = {}
        for chunk in _chunks(list(zip(keys, items, strict=True))):
            payload = {"items": [item for _, item in chunk], "encoding": "base64"}
            try:
                status, _, body = self._request("POST", path, json.dumps(payload).encode(),
                                                _JSON_HEADERS)  # fmt: skip
            finally:  # the batch's keys drop their cache entries, as put and delete do
                for key, _ in chunk:
                    _invalidate(self.cache, key)
            for (key, _), entry in zip(chunk, _batch_results(status, body, len(chunk)),
                                       strict=True):  # fmt: skip
                out[key] = _batch_write_outcome(entry)
        return out

    # -- key listing (an administrative scan: GET /v1/keys)

    def keys(
        self,
        prefix: Key | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        r: Level = None,
    ) -> tuple[list[bytes], str | None]:
        """One page of keys in ring order, and the cursor of the next page (None: done).
        `r`: merge R replicas per range and keep the keys live at a read at R."""
        status, _, body = self._request("GET", _keys_path(prefix, limit, cursor, r))
        return _keys_page(status, body)

    def iter_keys(
        self, prefix: Key | None = None, page_size: int | None = None, r: Level = None
    ) -> Iterator[bytes]:
        """Every key (with that prefix), page after page."""
        cursor: str | None = None
        while True:
            keys, cursor = self.keys(prefix, page_size, cursor, r)
            yield from keys
            if cursor is None:
                return

    # -- token-aware routing

    def _replicas(self, key: Key) -> list[_Endpoint]:
        if not self.token_aware:
            return []
        now = time.monotonic()
        if self._ring is None or now - self._ring_fetched >= self.ring_refresh:
            self._ring_fetched = now  # also after a failure: retry after ring_refresh
            try:
                answer = self.ring()
            except RingkvError:
                return self._ring.replicas(key) if self._ring is not None else []
            self._ring = RingView(answer, self.endpoints[0].scheme)
        return self._ring.replicas(key)

    def _ring_stale(self) -> None:
        self._ring_fetched = -float("inf")

    # -- cluster information

    def status(self) -> dict[str, Any]:
        status, _, body = self._request("GET", "/v1/status")
        return _json(status, body)

    def ring(self) -> dict[str, Any]:
        """The ring layout (GET /v1/ring); raises RingkvError(404) on nodes without it."""
        status, _, body = self._request("GET", "/v1/ring")
        return _json(status, body)

    def progress(self) -> dict[str, Any]:
        """Ring changes under way and recently finished (GET /v1/admin/progress)."""
        status, _, body = self._request("GET", "/v1/admin/progress")
        return _json(status, body)

    def plan(self, op: str, node: str) -> dict[str, Any]:
        """What a ring change would move, without running it (POST /v1/admin/plan)."""
        payload = json.dumps({"op": op, "node": node}).encode()
        status, _, body = self._request("POST", "/v1/admin/plan", payload, _JSON_HEADERS)
        return _json(status, body)

    def admin(self, action: str, node: str | None = None) -> dict[str, Any]:
        """Start a ring change: join, decommission, replace, remove; or cancel the running one."""
        payload = json.dumps({} if node is None else {"node": node}).encode()
        status, _, body = self._request("POST", f"/v1/admin/{action}", payload, _JSON_HEADERS)
        return _json(status, body)

    def cleanup(self, node: str | None = None) -> dict[str, Any]:
        """Clean the ranges a node gave away now, on ``node`` or every ring member
        (POST /v1/admin/cleanup); progress in ``progress()["cleanup"]``."""
        payload = json.dumps({} if node is None else {"node": node}).encode()
        status, _, body = self._request("POST", "/v1/admin/cleanup", payload, _JSON_HEADERS)
        return _json(status, body)

    def health(self) -> bool:
        """True when a node answers 200 on /health/ready."""
        try:
            status, _, _ = self._request("GET", "/health/ready")
        except ConnectionFailed:
            return False
        return status == 200

    # -- connection handling

    def close(self) -> None:
        with self._lock:
            idle = [c for conns in self._idle.values() for c in conns]
            for conns in self._idle.values():
                conns.clear()
        for conn in idle:
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        replicas: Sequence[_Endpoint] = (),
    ) -> tuple[int, dict[str, str], bytes]:
        """Send to the key's replicas (token-aware), then to the preferred endpoint, moving on
        to the next when one is unreachable."""
        failures = []
        all_headers = {**self._auth, **(headers or {})}
        for endpoint in replicas:
            try:
                return self._send(endpoint, method, path, body, all_headers)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{endpoint}: {str(exc) or type(exc).__name__}")
                self._ring_stale()
        start = self._preferred
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                result = self._send(endpoint, method, path, body, all_headers)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{endpoint}: {str(exc) or type(exc).__name__}")
                continue
            self._preferred = index
            return result
        raise ConnectionFailed("no endpoint reachable: " + "; ".join(failures))

    def _send(
        self,
        endpoint: _Endpoint,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        conn, reused = self._acquire(endpoint)
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                if not reused:
                    raise
                # The server closed an idle keep-alive connection: retry once on a new one.
                conn.close()
                conn = self._connect(endpoint)
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
            data = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._release(endpoint, conn)
        return response.status, _lower(response.getheaders()), data

    def _connect(self, endpoint: _Endpoint) -> http.client.HTTPConnection:
        if endpoint.scheme == "https":
            return http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=self.timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=self.timeout)

    def _acquire(self, endpoint: _Endpoint) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.setdefault(endpoint, [])
            if idle:
                return idle.pop(), True
        return self._connect(endpoint), False

    def _release(self, endpoint: _Endpoint, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(endpoint, [])
            if len(idle) < _POOL_SIZE:
                idle.append(conn)
                return
        conn.close()


# --------------------------------------------------------------------------- async client


class AsyncClient:
    """asyncio client over one pooled aiohttp session; same surface as `Client`."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 5.0,
        token: str | None = None,
        token_aware: bool = False,
        ring_refresh: float = 10.0,
        cache: ClientCache | Mapping[str, Any] | bool | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.cache = make_cache(cache)  # see ringkv.client_cache
        self.timeout = timeout
        self.token_aware = token_aware
        self.ring_refresh = ring_refresh
        self._ring: RingView | None = None
        self._ring_fetched = -float("inf")
        # A bearer token for clusters with --auth-tokens-file (default: $RINGKV_TOKEN).
        token = token if token is not None else os.environ.get("RINGKV_TOKEN") or None
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0

    async def put(
        self,
        key: Key,
        value: bytes,
        *,
        context: str | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        ttl: int | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        replace: bool = False,
    ) -> str:
        headers = write_headers(context, if_match, if_none_match, replace)
        path = with_query(kv_path(key), w=w, consistency=consistency, strict=strict, ttl=ttl)
        try:
            status, headers, body = await self._request("PUT", path, value, headers)
        finally:
            _invalidate(self.cache, key)
        _check(status, body)
        return headers.get(_CONTEXT, "")

    async def get(
        self,
        key: Key,
        *,
        r: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        max_staleness: float | None = None,
        if_none_match: str | None = None,
    ) -> GetResult:
        """As `Client.get`."""
        path = with_query(kv_path(key), r=r, consistency=consistency, strict=strict)
        plan = _plan(self.cache, key, max_staleness, if_none_match)
        if plan is not None and plan.serve:
            return self.cache.cached(plan)  # type: ignore[union-attr,no-any-return]
        try:
            answer = await self._request("GET", path, None, _read_headers(plan, if_none_match))
        except BaseException:
            _abandon(self.cache, plan)
            raise
        return _finish_read(self.cache, plan, answer)

    @property
    def cache_metrics(self) -> CacheMetrics | None:
        return self.cache.metrics if self.cache is not None else None

    async def delete(
        self,
        key: Key,
        *,
        context: str | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        if_match: str | None = None,
    ) -> None:
        path = with_query(kv_path(key), w=w, consistency=consistency, strict=strict)
        headers = write_headers(context, if_match)
        try:
            status, _, body = await self._request("DELETE", path, None, headers)
        finally:
            _invalidate(self.cache, key)
        _check(status, body)

    async def get_many(
        self,
        keys: Sequence[K],
        *,
        r: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> dict[K, GetResult | RingkvError]:
        path = _batch_path("get", r=r, consistency=consistency, strict=strict)
        out: dict[K, GetResult | RingkvError] = {}
        for chunk in _chunks(list(keys)):
            payload = {"keys": [_b64(_raw_key(k)) for k in chunk], "encoding": "base64"}
            status, _, body = await self._request("POST", path, json.dumps(payload).encode(),
                                                  _JSON_HEADERS)  # fmt: skip
            for key, entry in zip(chunk, _batch_results(status, body, len(chunk)), strict=True):
                out[key] = _batch_get_outcome(entry)
        return out

    async def put_many(
        self,
        values: Mapping[K, bytes],
        *,
        contexts: Mapping[K, str] | None = None,
        if_match: Mapping[K, str] | None = None,
        if_none_match: bool = False,
        replace: bool = False,
        ttl: int | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> dict[K, str | RingkvError]:
        items = _write_items(list(values), values, contexts, if_match, if_none_match, replace,
                             ttl)  # fmt: skip
        return await self._write_many("put", list(values), items, w, consistency, strict)

    async def delete_many(
        self,
        keys: Sequence[K],
        *,
        contexts: Mapping[K, str] | None = None,
        if_match: Mapping[K, str] | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> dict[K, str | RingkvError]:
        items = _write_items(list(keys), None, contexts, if_match, False, False, None)
        return await self._write_many("delete", list(keys), items, w, consistency, strict)

    async def _write_many(
        self,
        op: str,
        keys: list[K],
        items: list[BatchWrite],
        w: Level,
        consistency: str | None,
        strict: bool | None,
    ) -> dict[K, str | RingkvError]:
        path = _batch_path(op, w=w, consistency=consistency, strict=strict)
        out: dict[K, str | RingkvError] = {}
        for chunk in _chunks(list(zip(keys, items, strict=True))):
            payload = {"items": [item for _, item in chunk], "encoding": "base64"}
            try:
                status, _, body = await self._request("POST", path, json.dumps(payload).encode(),
                                                      _JSON_HEADERS)  # fmt: skip
            finally:  # the batch's keys drop their cache entries, as put and delete do
                for key, _ in chunk:
                    _invalidate(self.cache, key)
            for (key, _), entry in zip(chunk, _batch_results(status, body, len(chunk)),
                                       strict=True):  # fmt: skip
                out[key] = _batch_write_outcome(entry)
        return out

    async def keys(
        self,
        prefix: Key | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        r: Level = None,
    ) -> tuple[list[bytes], str | None]:
        status, _, body = await self._request("GET", _keys_path(prefix, limit, cursor, r))
        return _keys_page(status, body)

    async def iter_keys(
        self, prefix: Key | None = None, page_size: int | None = None, r: Level = None
    ) -> AsyncIterator[bytes]:
        cursor: str | None = None
        while True:
            keys, cursor = await self.keys(prefix, page_size, cursor, r)
            for key in keys:
                yield key
            if cursor is None:
                return

    async def status(self) -> dict[str, Any]:
        status, _, body = await self._request("GET", "/v1/status")
        return _json(status, body)

    async def ring(self) -> dict[str, Any]:
        status, _, body = await self._request("GET", "/v1/ring")
        return _json(status, body)

    async def progress(self) -> dict[str, Any]:
        status, _, body = await self._request("GET", "/v1/admin/progress")
        return _json(status, body)

    async def plan(self, op: str, node: str) -> dict[str, Any]:
        payload = json.dumps({"op": op, "node": node}).encode()
        status, _, body = await self._request("POST", "/v1/admin/plan", payload, _JSON_HEADERS)
        return _json(status, body)

    async def admin(self, action: str, node: str | None = None) -> dict[str, Any]:
        payload = json.dumps({} if node is None else {"node": node}).encode()
        status, _, body = await self._request("POST", f"/v1/admin/{action}", payload, _JSON_HEADERS)
        return _json(status, body)

    async def health(self) -> bool:
        try:
            status, _, _ = await self._request("GET", "/health/ready")
        except ConnectionFailed:
            return False
        return status == 200

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        start = self._preferred
        failures = []
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            endpoint = self.endpoints[index]
            url = yarl.URL(f"{endpoint}{path}", encoded=True)  # the key is already quoted
            try:
                async with self._session.request(
                    method, url, data=body, headers={**self._auth, **(headers or {})}
                ) as response:
                    data = await response.read()
                    result = response.status, _lower(response.headers.items()), data
            except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
                failures.append(f"{endpoint}: {str(exc) or type(exc).__name__}")
                continue
            self._preferred = index
            return result
        raise ConnectionFailed("no endpoint reachable: " + "; ".join(failures))
