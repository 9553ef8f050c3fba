"""Python clients for the ringkv HTTP API: `Client` (blocking) and `AsyncClient` (asyncio).

Both take one or more endpoints ("http://127.0.0.1:7001" or "127.0.0.1:7001"; a single
string may list several, comma separated). A request goes to the endpoint that answered
last; when an endpoint cannot be reached (refused, reset, timed out) the next one is
tried. An HTTP error answer is not retried: it is raised as a `RingkvError` -- except `507
insufficient_storage` (that node's disk is full; nothing was written), which is tried on the
next endpoint.

    with Client("http://127.0.0.1:7001") as kv:
        ctx = kv.put("greeting", b"hello")
        res = kv.get("greeting")          # GetResult(found=True, value=b"hello", ...)
        kv.put("greeting", b"hi", context=res.context)
        kv.delete("greeting", context=kv.get("greeting").context)

`Client` keeps a small pool of keep-alive `http.client` connections per endpoint and may
be shared by a few threads. `AsyncClient` uses one pooled `aiohttp.ClientSession`. Both take
the same arguments and have the same methods (awaitable on `AsyncClient`): what they send
and how they read the answers is one sans-I/O core, `ringkv.client_core`; this module holds
only the two transports.

Token-aware routing (`token_aware=True`): the client fetches the ring (`GET /v1/ring`) and
sends each key-value request straight to a live replica of the key, so a node that does not
hold the key never has to forward a write, and reads start on a node holding a copy. Each
key's requests go to one of its replicas chosen by the key's hash (as nodes spread a key's
reads over its replicas), then the others. The endpoints given to the constructor stay the
fallback. A node served by several shards (`ringkv node --shards S`) lists each shard's own
port in `/v1/ring`: the request goes to the port of the shard holding the key, so no shard
hands it to another. The ring is fetched again every `ring_refresh` seconds and whenever a
replica cannot be reached. `ssl_context` is used for https endpoints (None: the system's defaults).
"""

from __future__ import annotations

import functools
import http.client
import inspect
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import aiohttp
import yarl

from ringkv.client_cache import CacheMetrics, ClientCache, make_cache
from ringkv.client_core import (
    CONTEXT_HEADER,
    TTL_HEADER,
    Answer,
    BadRequest,
    Call,
    ClientCore,
    ConnectionFailed,
    GetResult,
    K,
    Key,
    Level,
    PreconditionFailed,
    Reply,
    Request,
    RingkvError,
    RingView,
    Timeout,
    Unavailable,
    Unreachable,
    _Endpoint,
    _get_result,
    _lower,
    error_from_response,
    kv_path,
    parse_endpoints,
    with_query,
    write_headers,
)

__all__ = [
    "CONTEXT_HEADER",
    "TTL_HEADER",
    "AsyncClient",
    "BadRequest",
    "CacheMetrics",
    "Client",
    "ClientCache",
    "ConnectionFailed",
    "GetResult",
    "K",
    "Key",
    "Level",
    "PreconditionFailed",
    "RingView",
    "RingkvError",
    "Timeout",
    "Unavailable",
    "_get_result",
    "error_from_response",
    "kv_path",
    "parse_endpoints",
    "with_query",
    "write_headers",
]

_POOL_SIZE = 8  # idle connections kept per endpoint by the sync client

P = ParamSpec("P")
T = TypeVar("T")
V = TypeVar("V")


class _OfCore(Generic[V]):
    """A client attribute that is the core's: reading or setting it on the client reads or
    sets it on the core."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, client: _Base | None, owner: type | None = None) -> V:
        if client is None:  # on the class (help, inspect): the descriptor itself
            return self  # type: ignore[return-value]
        return getattr(client._core, self.name)  # type: ignore[no-any-return]

    def __set__(self, client: _Base, value: V) -> None:
        setattr(client._core, self.name, value)


class _Base:
    """What both clients hold: their arguments and the core (`ringkv.client_core`)."""

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
        # A bearer token for clusters with --auth-tokens-file (default: $RINGKV_TOKEN).
        token = token if token is not None else os.environ.get("RINGKV_TOKEN") or None
        self._core = ClientCore(
            parse_endpoints(endpoints),
            token=token,
            token_aware=token_aware,
            ring_refresh=ring_refresh,
            cache=make_cache(cache),  # see ringkv.client_cache
            clock=time.monotonic,
        )
        self.timeout = timeout
        self.ssl_context = ssl_context  # for https endpoints; None: the system's defaults
        self._open()

    def _open(self) -> None:
        """The transport's own state (connection pools)."""
        raise NotImplementedError

    endpoints: _OfCore[list[_Endpoint]] = _OfCore()
    cache: _OfCore[ClientCache | None] = _OfCore()
    token_aware: _OfCore[bool] = _OfCore()
    ring_refresh: _OfCore[float] = _OfCore()

    @property
    def cache_metrics(self) -> CacheMetrics | None:
        """The cache's counters (hits, revalidations, not_modified, misses, evictions)."""
        return self._core.cache.metrics if self._core.cache is not None else None


# --------------------------------------------------------------------------- sync client


def _blocking(
    call: Callable[Concatenate[ClientCore, P], Call[T]],
) -> Callable[Concatenate[Client, P], T]:
    """`Client`'s method for a core call: same signature and documentation, run to its end."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(call(self._core, *args, **kwargs))

    _adopt(method, call)
    return method


def _adopt(method: Callable[..., Any], call: Callable[..., Any]) -> None:
    """Give a client's method the core call's name, documentation and signature, with the
    call's result as its return type."""
    functools.update_wrapper(method, call)
    signature = inspect.signature(call)
    returns = str(signature.return_annotation).removeprefix("Call[").removesuffix("]")
    setattr(method, "__signature__", signature.replace(return_annotation=returns))  # noqa: B010


class Client(_Base):
    """Blocking client with keep-alive connections pooled per endpoint."""

    def _open(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[_Endpoint, list[http.client.HTTPConnection]] = {
            e: [] for e in self.endpoints
        }

    put = _blocking(ClientCore.put)
    get = _blocking(ClientCore.get)
    delete = _blocking(ClientCore.delete)
    # batches (POST /v1/batch/*): one request per MAX_BATCH_KEYS keys
    get_many = _blocking(ClientCore.get_many)
    put_many = _blocking(ClientCore.put_many)
    delete_many = _blocking(ClientCore.delete_many)
    # key listing (an administrative scan: GET /v1/keys)
    keys = _blocking(ClientCore.keys)
    # cluster information and administration
    status = _blocking(ClientCore.status)
    ring = _blocking(ClientCore.ring)
    progress = _blocking(ClientCore.progress)
    plan = _blocking(ClientCore.plan)
    admin = _blocking(ClientCore.admin)
    cleanup = _blocking(ClientCore.cleanup)
    health = _blocking(ClientCore.health)
    # any route, the answer as it is (ringkv.backup)
    _request = _blocking(ClientCore.raw)

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

    def _run(self, call: Call[T]) -> T:
        """Send what the call asks for until it returns (or raises)."""
        try:
            endpoint, request = next(call)
            while True:
                reply: Reply
                try:
                    reply = self._send(endpoint, *request)
                except (OSError, http.client.HTTPException) as exc:
                    reply = Unreachable.of(exc)
                except BaseException:
                    call.close()  # its cache bookkeeping (ringkv.client_cache) ends too
                    raise
                endpoint, request = call.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _send(
        self,
        endpoint: _Endpoint,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> Answer:
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


def _awaitable(
    call: Callable[Concatenate[ClientCore, P], Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """`AsyncClient`'s method for a core call: same signature and documentation, awaitable."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(call(self._core, *args, **kwargs))

    _adopt(method, call)
    return method


class AsyncClient(_Base):
    """asyncio client over one pooled aiohttp session; the same arguments and methods as
    `Client` (token-aware routing, TLS context, cache), awaitable."""

    def _open(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    put = _awaitable(ClientCore.put)
    get = _awaitable(ClientCore.get)
    delete = _awaitable(ClientCore.delete)
    get_many = _awaitable(ClientCore.get_many)
    put_many = _awaitable(ClientCore.put_many)
    delete_many = _awaitable(ClientCore.delete_many)
    keys = _awaitable(ClientCore.keys)
    status = _awaitable(ClientCore.status)
    ring = _awaitable(ClientCore.ring)
    progress = _awaitable(ClientCore.progress)
    plan = _awaitable(ClientCore.plan)
    admin = _awaitable(ClientCore.admin)
    cleanup = _awaitable(ClientCore.cleanup)
    health = _awaitable(ClientCore.health)
    _request = _awaitable(ClientCore.raw)

    async def iter_keys(
        self, prefix: Key | None = None, page_size: int | None = None, r: Level = None
    ) -> AsyncIterator[bytes]:
        """Every key (with that prefix), page after page."""
        cursor: str | None = None
        while True:
            keys, cursor = await self.keys(prefix, page_size, cursor, r)
            for key in keys:
                yield key
            if cursor is None:
                return

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, call: Call[T]) -> T:
        """Send what the call asks for until it returns (or raises)."""
        try:
            endpoint, request = next(call)
            while True:
                reply: Reply
                try:
                    reply = await self._send(endpoint, request)
                except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
                    reply = Unreachable.of(exc)
                except BaseException:  # also a cancelled task
                    call.close()  # its cache bookkeeping (ringkv.client_cache) ends too
                    raise
                endpoint, request = call.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _send(self, endpoint: _Endpoint, request: Request) -> Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        url = yarl.URL(f"{endpoint}{request.path}", encoded=True)  # the key is already quoted
        tls = self.ssl_context if self.ssl_context is not None else True
        async with self._session.request(
            request.method, url, data=request.body, headers=request.headers, ssl=tls
        ) as response:
            data = await response.read()
            return response.status, _lower(response.headers.items()), data
