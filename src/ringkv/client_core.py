"""The clients' sans-I/O core: what `Client` and `AsyncClient` send and what they make of the
answers, with no sockets, event loop or clock of its own (as h11 is for HTTP).

- Errors: `RingkvError` and its subclasses; `error_from_response` is the one mapping of an
  HTTP error answer to an exception.
- Requests: paths, query parameters and headers of every call (`kv_path`, `with_query`,
  `write_headers`, the batch and key-listing encodings).
- Answers: `GetResult` and the other results, parsed from (status, headers, body).
- Routing: `RingView` (which live nodes replicate a key, and which of them coordinates it)
  and `ClientCore.exchange` (which endpoint a request goes to, which next when one cannot be
  reached, when the ring is fetched again).
- Calls: every client method is a generator method of `ClientCore` that yields
  ``(endpoint, Request)`` and is sent back the `Answer` or `Unreachable`; it returns the
  method's result or raises its error. The read-cache decisions (`ClientCache`: plan, serve,
  complete, invalidate) are taken here too.

A transport only drives the calls (`ringkv.client`: `Client` over pooled `http.client`
connections, `AsyncClient` over an aiohttp session), so both clients send the same requests
and read the answers the same way.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from ringkv.client_cache import ClientCache, ReadPlan
from ringkv.core.batching import MAX_BATCH_KEYS
from ringkv.core.errors import INSUFFICIENT_STORAGE, reason_of
from ringkv.core.json_input import parse_json
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring, key_hash
from ringkv.core.sharding import shard_of

CONTEXT_HEADER = "X-Ringkv-Context"
TTL_HEADER = "X-Ringkv-TTL"
_CONTEXT = CONTEXT_HEADER.lower()  # key in the lower-cased response headers
_JSON_HEADERS = {"Content-Type": "application/json"}

Key = bytes | str
K = TypeVar("K", bound=bytes | str)  # the key type a batch was called with, in its answer
T = TypeVar("T")
Level = int | str | None


def _raw_key(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else key


# --------------------------------------------------------------------------- errors


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


class _QuorumError(RingkvError):
    """A quorum was not reached; `.required`: the replicas the request needed."""

    @property
    def required(self) -> int | None:
        return self.body.get("required")


class Unavailable(_QuorumError):
    """503: fewer replicas reachable than the request needs; nothing was written."""

    @property
    def alive(self) -> int | None:
        return self.body.get("alive")


class Timeout(_QuorumError):
    """504: replicas did not answer in time; a write may be partly applied."""

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


# --------------------------------------------------------------------------- the exchange


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


class Request(NamedTuple):
    """One HTTP request as a transport sends it (headers include the credentials). A named
    tuple: made for every call, and cheaper to make than a frozen dataclass."""

    method: str
    path: str  # already percent-encoded, with its query
    body: bytes | None
    headers: Mapping[str, str]


#: An answer: status, headers with lower-cased names, body.
Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True, slots=True)
class Unreachable:
    """What a transport sends back for an endpoint it could not reach (refused, reset, timed
    out, TLS refused): the call moves on to the next endpoint. An HTTP answer, even an error,
    is never `Unreachable`."""

    reason: str

    @classmethod
    def of(cls, error: BaseException) -> Unreachable:
        return cls(str(error) or type(error).__name__)


Send = tuple[_Endpoint, Request]
Reply = Answer | Unreachable
#: A client method in progress: yields what to send, is sent the reply, returns the result.
Call = Generator[Send, Reply, T]


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
        # a node served by several shards: each shard's own port, by shard (``/v1/ring``)
        self.shard_endpoints: dict[str, list[_Endpoint]] = {}
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
                shard_ports = [str(a).rpartition(":") for a in node.get("shard_addresses") or ()]
                if len(shard_ports) > 1 and all(h and p.isdigit() for h, _, p in shard_ports):
                    self.shard_endpoints[node_id] = [
                        _Endpoint(scheme, h.strip("[]"), int(p)) for h, _, p in shard_ports
                    ]
        self.ring = Ring(tokens, zones) if tokens else Ring.empty()

    def replicas(self, key: Key) -> list[_Endpoint]:
        """The live replicas' endpoints for a key, its preference-list order."""
        return self._live(self._preference(key), key_hash(_raw_key(key)))

    def coordinators(self, key: Key) -> list[_Endpoint]:
        """The live replicas in the order a token-aware client tries them: starting at the
        replica chosen by the key's hash, as a node spreads a key's reads and forwarded writes
        over its replicas, so that coordinating is spread like the replica load rather than
        falling on each key's first replica. The choice is made over the whole preference
        list, so a key keeps its coordinator (and its connections) while another of its
        replicas is down."""
        nodes = self._preference(key)
        h = key_hash(_raw_key(key))
        if nodes:
            turn = h % len(nodes)
            nodes = nodes[turn:] + nodes[:turn]
        return self._live(nodes, h)

    def _preference(self, key: Key) -> list[str]:
        if not len(self.ring):
            return []
        return [r.node for r in preference_list(self.ring, key_hash(_raw_key(key)), self.n)]

    def _live(self, nodes: Iterable[str], h: int) -> list[_Endpoint]:
        """The nodes' endpoints; for a node served by several shards, the port of the shard
        holding token ``h`` (no hand-over between its shards)."""
        found = []
        for node in nodes:
            endpoint = self.endpoints.get(node)
            if endpoint is None:
                continue
            shards = self.shard_endpoints.get(node)
            found.append(endpoint if shards is None else shards[shard_of(h, len(shards))])
        return found


# --------------------------------------------------------------------------- requests


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
    return {CONTEXT_HEADER: context} if context is not None else {}


def _read_headers(plan: ReadPlan | None, if_none_match: str | None) -> dict[str, str]:
    if if_none_match is not None:
        return {"If-None-Match": if_none_match}
    return dict(plan.headers) if plan is not None and plan.headers else {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    """Split into batches of at most MAX_BATCH_KEYS (a node refuses larger ones)."""
    return [items[i : i + MAX_BATCH_KEYS] for i in range(0, len(items), MAX_BATCH_KEYS)]


BatchWrite = dict[str, Any]  # one item of POST /v1/batch/put or /delete, before encoding


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


# --------------------------------------------------------------------------- answers


def _check(status: int, body: bytes) -> None:
    if not 200 <= status < 300:
        raise error_from_response(status, body)


def _json(status: int, body: bytes) -> dict[str, Any]:
    _check(status, body)
    document = parse_json(body)
    if not isinstance(document, dict):
        raise RingkvError(status, "bad_response", "expected a JSON object", {})
    return document


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


def _keys_page(status: int, body: bytes) -> tuple[list[bytes], str | None]:
    document = _json(status, body)
    return [base64.b64decode(k) for k in document.get("keys", [])], document.get("cursor")


# --------------------------------------------------------------------------- the calls


class ClientCore:
    """The state and calls shared by both clients: the endpoints and which answered last,
    the ring for token-aware routing, the read cache, the credentials.

    ``clock`` gives the time (seconds, monotonic) for the ring refresh; ``token`` is the
    bearer token (None: no Authorization header). The methods named like the clients' are
    `Call` generators with the clients' signatures and documentation."""

    def __init__(
        self,
        endpoints: Sequence[_Endpoint],
        *,
        token: str | None = None,
        token_aware: bool = False,
        ring_refresh: float = 10.0,
        cache: ClientCache | None = None,
        clock: Callable[[], float],
    ) -> None:
        if not endpoints:
            raise ValueError("no endpoint given")
        self.endpoints = list(endpoints)
        self.token_aware = token_aware
        self.ring_refresh = ring_refresh
        self.cache = cache
        self.clock = clock
        self.ring_view: RingView | None = None
        self.ring_fetched = -float("inf")
        self.preferred = 0  # index of the endpoint that answered last
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    # -- routing

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        if headers and self._auth:
            headers = {**self._auth, **headers}
        return Request(method, path, body, headers or self._auth)

    def exchange(self, request: Request, key: Key | None = None) -> Call[Answer]:
        """Send ``request``: first to the live replicas of ``key`` when routing token-aware,
        then to the configured endpoints starting with the one that answered last, moving on
        while an endpoint cannot be reached. An HTTP answer, even an error, ends it -- except
        ``507 insufficient_storage`` (that node's disk is full, nothing was written): the next
        endpoint is tried, and the 507 is the answer only when every endpoint gave one."""
        full: Answer | None = None  # a 507 answer, kept while other endpoints are tried
        replicas: list[_Endpoint] = []
        if key is not None and self.token_aware:
            if self._ring_due():
                # A failure is retried after ring_refresh; the endpoints serve meanwhile.
                with contextlib.suppress(ConnectionFailed):
                    self._learn_ring((yield from self.exchange(self.request("GET", "/v1/ring"))))
            if self.ring_view is not None:
                replicas = self.ring_view.coordinators(key)
        failures = []
        for endpoint in replicas:
            reply = yield endpoint, request
            if not isinstance(reply, Unreachable):
                if reply[0] != INSUFFICIENT_STORAGE.status:
                    return reply
                full = reply
                continue
            failures.append(f"{endpoint}: {reply.reason}")
            self.ring_fetched = -float("inf")  # the ring may have changed: fetch it again
        count = len(self.endpoints)
        for step in range(count):
            index = (self.preferred + step) % count
            endpoint = self.endpoints[index]
            reply = yield endpoint, request
            if not isinstance(reply, Unreachable):
                if reply[0] == INSUFFICIENT_STORAGE.status and step + 1 < count:
                    full = reply
                    continue
                self.preferred = index
                return reply
            failures.append(f"{endpoint}: {reply.reason}")
        if full is not None:
            return full
        raise ConnectionFailed("no endpoint reachable: " + "; ".join(failures))

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Call[Answer]:
        """Any request to the endpoints, with the credentials and failover; the answer as it
        is (an HTTP error is not raised). For tools that speak routes of their own."""
        return (yield from self.exchange(self.request(method, path, body, headers)))

    def _ring_due(self) -> bool:
        now = self.clock()
        if now - self.ring_fetched < self.ring_refresh:
            return False
        # also when the fetch fails (an older node, none reachable): tried after ring_refresh
        self.ring_fetched = now
        return True

    def _learn_ring(self, answer: Answer) -> None:
        try:
            view = RingView(_json(answer[0], answer[2]), self.endpoints[0].scheme)
        except (RingkvError, ValueError, KeyError, TypeError):
            return  # a node without /v1/ring, or an answer we cannot use: keep what we have
        self.ring_view = view

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        key: Key | None = None,
    ) -> Call[Answer]:
        return self.exchange(self.request(method, path, body, headers), key)

    def _document(self, method: str, path: str, payload: Any = None) -> Call[dict[str, Any]]:
        """A JSON request (``payload`` None: no body) whose answer is a JSON object."""
        if payload is None:
            status, _, body = yield from self._call(method, path)
        else:
            data = json.dumps(payload).encode()
            status, _, body = yield from self._call(method, path, data, _JSON_HEADERS)
        return _json(status, body)

    def _invalidate(self, key: Key) -> None:
        if self.cache is not None:
            self.cache.invalidate(_raw_key(key))

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
    ) -> Call[str]:
        """Write; returns the new version's context. `ttl`: seconds until it expires.
        `if_none_match`: only if the key has no live value; `if_match`: only if the key is
        still at that context; `replace`: supersede whatever is there (no sibling). A failed
        condition raises `PreconditionFailed`."""
        headers = write_headers(context, if_match, if_none_match, replace)
        path = with_query(kv_path(key), w=w, consistency=consistency, strict=strict, ttl=ttl)
        try:
            status, answer_headers, body = yield from self._call("PUT", path, value, headers, key)
        finally:
            self._invalidate(key)
        _check(status, body)
        return answer_headers.get(_CONTEXT, "")

    def get(
        self,
        key: Key,
        *,
        r: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        max_staleness: float | None = None,
        if_none_match: str | None = None,
    ) -> Call[GetResult]:
        """Read a key. With a cache: revalidated, or served from it within ``max_staleness``
        seconds (default: the cache's; a weaker read, see ringkv.client_cache).
        ``if_none_match``: an ETag (list) for a conditional read of your own, bypassing the
        cache; a 304 answer is a result with ``not_modified=True``."""
        path = with_query(kv_path(key), r=r, consistency=consistency, strict=strict)
        cache = self.cache
        plan = None
        if cache is not None and if_none_match is None:
            plan = cache.plan(_raw_key(key), max_staleness)
            if plan.serve:
                return cache.cached(plan)  # type: ignore[no-any-return]
        headers = _read_headers(plan, if_none_match)
        try:
            status, answer_headers, body = yield from self._call("GET", path, None, headers, key)
            if cache is None or plan is None:
                return _get_result(status, answer_headers, body)
            revalidated = status == 304 and plan.entry is not None
            result = None if revalidated else _get_result(status, answer_headers, body)
        except BaseException:  # also GeneratorExit: the transport gave up on the call
            if plan is not None:
                cache.abandon(plan)  # type: ignore[union-attr]
            raise
        return cache.complete(plan, status, answer_headers.get("etag"), result)  # type: ignore[no-any-return]

    def delete(
        self,
        key: Key,
        *,
        context: str | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
        if_match: str | None = None,
    ) -> Call[None]:
        """Delete. `if_match`: only if the key is still at that context (else
        `PreconditionFailed`)."""
        path = with_query(kv_path(key), w=w, consistency=consistency, strict=strict)
        headers = write_headers(context, if_match)
        try:
            status, _, body = yield from self._call("DELETE", path, None, headers, key)
        finally:
            self._invalidate(key)
        _check(status, body)

    # -- batches (POST /v1/batch/*): one request per MAX_BATCH_KEYS keys

    def get_many(
        self,
        keys: Sequence[K],
        *,
        r: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> Call[dict[K, GetResult | RingkvError]]:
        """Read many keys; each maps to its `GetResult`, or the error of that key alone
        (`Unavailable`, `Timeout`, ...), so a partial failure can be retried per key."""
        path = with_query("/v1/batch/get", r=r, consistency=consistency, strict=strict)
        out: dict[K, GetResult | RingkvError] = {}
        for chunk in _chunks(list(keys)):
            payload = {"keys": [_b64(_raw_key(k)) for k in chunk], "encoding": "base64"}
            data = json.dumps(payload).encode()
            status, _, body = yield from self._call("POST", path, data, _JSON_HEADERS)
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
    ) -> Call[dict[K, str | RingkvError]]:
        """Write many keys; each maps to its new context, or the error of that key alone
        (`PreconditionFailed`, `Unavailable`, ...). Options as for `put`, per key for
        `contexts` and `if_match`."""
        keys = list(values)
        items = _write_items(keys, values, contexts, if_match, if_none_match, replace, ttl)
        return (yield from self._write_many("put", keys, items, w, consistency, strict))

    def delete_many(
        self,
        keys: Sequence[K],
        *,
        contexts: Mapping[K, str] | None = None,
        if_match: Mapping[K, str] | None = None,
        w: Level = None,
        consistency: str | None = None,
        strict: bool | None = None,
    ) -> Call[dict[K, str | RingkvError]]:
        """Delete many keys; each maps to the tombstone's context, or its own error."""
        keys = list(keys)
        items = _write_items(keys, None, contexts, if_match, False, False, None)
        return (yield from self._write_many("delete", keys, items, w, consistency, strict))

    def _write_many(
        self,
        op: str,
        keys: list[K],
        items: list[BatchWrite],
        w: Level,
        consistency: str | None,
        strict: bool | None,
    ) -> Call[dict[K, str | RingkvError]]:
        path = with_query(f"/v1/batch/{op}", w=w, consistency=consistency, strict=strict)
        out: dict[K, str | RingkvError] = {}
        for chunk in _chunks(list(zip(keys, items, strict=True))):
            data = json.dumps({"items": [item for _, item in chunk], "encoding": "base64"})
            try:
                status, _, body = yield from self._call("POST", path, data.encode(), _JSON_HEADERS)
            finally:  # the batch's keys drop their cache entries, as put and delete do
                for key, _ in chunk:
                    self._invalidate(key)
            results = _batch_results(status, body, len(chunk))
            for (key, _), entry in zip(chunk, results, strict=True):
                out[key] = _batch_write_outcome(entry)
        return out

    # -- key listing (an administrative scan: GET /v1/keys)

    def keys(
        self,
        prefix: Key | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        r: Level = None,
    ) -> Call[tuple[list[bytes], str | None]]:
        """One page of keys in ring order, and the cursor of the next page (None: done).
        `r`: merge R replicas per range and keep the keys live at a read at R."""
        status, _, body = yield from self._call("GET", _keys_path(prefix, limit, cursor, r))
        return _keys_page(status, body)

    # -- cluster information and administration

    def status(self) -> Call[dict[str, Any]]:
        """This node and its cluster (GET /v1/status)."""
        return (yield from self._document("GET", "/v1/status"))

    def ring(self) -> Call[dict[str, Any]]:
        """The ring layout (GET /v1/ring); raises RingkvError(404) on nodes without it."""
        return (yield from self._document("GET", "/v1/ring"))

    def progress(self) -> Call[dict[str, Any]]:
        """Ring changes under way and recently finished (GET /v1/admin/progress)."""
        return (yield from self._document("GET", "/v1/admin/progress"))

    def plan(self, op: str, node: str) -> Call[dict[str, Any]]:
        """What a ring change would move, without running it (POST /v1/admin/plan)."""
        return (yield from self._document("POST", "/v1/admin/plan", {"op": op, "node": node}))

    def admin(self, action: str, node: str | None = None) -> Call[dict[str, Any]]:
        """Start a ring change: join, decommission, replace, remove; or cancel the running one."""
        payload = {} if node is None else {"node": node}
        return (yield from self._document("POST", f"/v1/admin/{action}", payload))

    def cleanup(self, node: str | None = None) -> Call[dict[str, Any]]:
        """Clean the ranges a node gave away now, on ``node`` or every ring member
        (POST /v1/admin/cleanup); progress in ``progress()["cleanup"]``."""
        payload = {} if node is None else {"node": node}
        return (yield from self._document("POST", "/v1/admin/cleanup", payload))

    def health(self) -> Call[bool]:
        """True when a node answers 200 on /health/ready."""
        try:
            status, _, _ = yield from self._call("GET", "/health/ready")
        except ConnectionFailed:
            return False
        return status == 200
