"""HTTP: a small HTTP/1.1 server for the node's client API (asyncio.Protocol + httptools).

Why not aiohttp's server: a ringkv request is small and its handler is short, so the web
framework around it (request and response objects, router, middleware, header multidicts,
stream writer) cost more CPU than the key-value work itself: most of what aiohttp spends on a
trivial GET, several times a bare protocol's cost (the measurements are in
docs/performance.md). This module parses with ``httptools`` (llhttp, the parser of Node.js and
uvicorn) and keeps only what the node's API uses:

- ``Request``: method, raw path, query string, lower-cased headers, the whole body.
- ``Response``: status, body, extra headers; ``json_response`` builds the usual JSON ones.
- ``HttpServer``: routes by exact path (plus one prefix route per method for keys and admin
  actions), answers pipelined requests in order, and enforces the limits a public endpoint
  needs -- URL and header sizes, body size (413 from Content-Length before reading, or while
  reading a chunked body), a deadline for headers or a body that do not arrive (408, so a
  "slowloris" client cannot hold a connection open), an idle keep-alive timeout, backpressure
  when a client does not read its answers -- and a graceful shutdown that stops accepting,
  lets in-flight requests finish and then closes every connection.

Handlers are ``async def handler(request) -> Response``; one task runs per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import httptools

from ringkv.core.json_input import parse_json

log = logging.getLogger(__name__)

Handler = Callable[["Request"], Awaitable["Response"]]

MAX_PIPELINED = 16  # requests queued on one connection before we stop reading from it
_REASONS = {s.value: s.phrase for s in HTTPStatus}
#: Request headers whose repeated field lines are joined into one comma-separated list.
_LIST_HEADERS = frozenset({"if-none-match"})


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query_string", "repeated")

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        repeated: set[str] | None,
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path  # raw: still percent-encoded
        self.query_string = query_string
        self.headers = headers  # lower-cased names
        self.repeated = repeated  # lower-cased names given more than once
        self.body = body
        self.keep_alive = keep_alive

    def header_count(self, name: str) -> int:
        """How many times a header (lower-case name) was given."""
        if name not in self.headers:
            return 0
        return 2 if self.repeated is not None and name in self.repeated else 1

    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query_string, keep_blank_values=True)

    def json(self) -> Any:
        return parse_json(self.body) if self.body else {}


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)
        if content_type is not None:
            self.headers.append(("Content-Type", content_type))


def json_response(
    data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return Response(status, body, headers, "application/json; charset=utf-8")


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    return json_response({"error": code, "message": message, **extra}, status)


def serialize(response: Response, head_only: bool, keep_alive: bool, date: bytes) -> list[bytes]:
    """The bytes of an HTTP/1.1 answer: one part, or the head and a large body apart."""
    status = response.status
    body = response.body
    head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Unknown").encode()), date]
    for name, value in response.headers:
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if status >= 200 and status not in (204, 304):
        head.append(b"Content-Length: %d\r\n" % len(body))
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    if head_only or status in (204, 304) or not body:
        return [b"".join(head)]
    if len(body) <= 16384:
        head.append(body)
        return [b"".join(head)]
    return [b"".join(head), body]


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.header = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.header


def _origin_form(url: str) -> str:
    """The path and query of an absolute-form request target (``http://host:port/path?q``),
    which an HTTP/1.1 server must accept (RFC 9112, 3.2.2), as proxies send it. Any other
    form (``*``, authority-form) comes back as it was and is answered 404."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return url
    slash = rest.find("/")
    query = rest.find("?")
    if slash < 0 or 0 <= query < slash:  # no path: http://host or http://host?q
        return "/" + rest[query:] if query >= 0 else "/"
    return rest[slash:]


class Router:
    """Exact paths, plus per-method prefix routes (the key space, admin actions)."""

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.prefixes: list[tuple[str, dict[str, Handler]]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.exact.setdefault(path, {})[method] = handler

    def add_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        for known, methods in self.prefixes:
            if known == prefix:
                methods[method] = handler
                return
        self.prefixes.append((prefix, {method: handler}))

    def resolve(self, method: str, path: str) -> Handler | Response:
        methods = self.exact.get(path)
        if methods is None:
            for prefix, by_method in self.prefixes:
                if path.startswith(prefix):
                    methods = by_method
                    break
        if methods is None:
            return error_response(404, "not_found", f"no such endpoint: {path}")
        handler = methods.get(method)
        if handler is None and method == "HEAD" and path in self.exact:
            handler = methods.get("GET")  # HEAD of a plain resource: its GET without the body
        if handler is None:
            allowed = ", ".join(sorted(methods))
            response = error_response(
                405, "method_not_allowed", f"{method} is not allowed here; allowed: {allowed}"
            )
            response.headers.append(("Allow", allowed))
            return response
        return handler


class HttpServer:
    """Serves a ``Router`` on one listening socket.

    ``wrap`` is called around every routed handler call (``wrap(request, handler)``): the node
    uses it for authentication and its overload limit, the role middleware had in aiohttp.
    """

    def __init__(
        self,
        router: Router,
        *,
        wrap: Callable[[Request, Handler], Awaitable[Response]],
        max_body: int,
        max_url: int = 8190,
        max_header_bytes: int = 65536,
        body_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
        max_connections: int = 4096,
        on_refused: Callable[[], None] | None = None,
        divert: Callable[[_Connection, Request], bool] | None = None,
    ) -> None:
        self.router = router
        # Takes a request elsewhere before it is routed here (True: taken; it answers through
        # the connection's ``answer`` or ``answer_raw``): a shard's hand-over to its sibling.
        self.divert = divert
        self.max_connections = max_connections
        self.on_refused = on_refused  # called for each connection refused over the limit
        self.wrap = wrap
        self.max_body = max_body
        self.max_url = max_url
        self.max_header_bytes = max_header_bytes
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        self.clock = _Clock()
        self._server: asyncio.Server | None = None
        self._also: list[asyncio.Server] = []
        self.port = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self.closing = False
        self._unflushed: list[_Connection] = []  # connections with answers to write out

    def want_flush(self, conn: _Connection) -> None:
        """Write ``conn``'s answers at the end of this event-loop turn, with everyone else's:
        the turn's work is done before the first answer wakes a client (whose wake-up would
        otherwise preempt this process in the middle of it)."""
        if not self._unflushed:
            conn.loop.call_soon(self._flush)
        self._unflushed.append(conn)

    def _flush(self) -> None:
        conns, self._unflushed = self._unflushed, []
        for conn in conns:
            conn.flush()

    async def start(
        self,
        host: str,
        port: int,
        ssl: Any = None,
        reuse_port: bool = False,
        also: Sequence[int] = (),
    ) -> None:
        """Listen on ``port`` (shared with sibling processes when ``reuse_port``) and on the
        ports ``also`` (a shard's own port)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self), host, port, ssl=ssl, reuse_address=True, backlog=1024,
            reuse_port=reuse_port or None,
        )  # fmt: skip
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])  # the one bound, for port 0
        for other in also:
            self._also.append(await loop.create_server(
                lambda: _Connection(self), host, other, ssl=ssl, reuse_address=True, backlog=1024
            ))  # fmt: skip
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(5.0, self.body_timeout / 2), self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive timeout and bodies that stalled."""
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self._schedule_sweep()

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, finish in-flight requests (up to ``timeout``), close the rest."""
        self.closing = True
        for server in (self._server, *self._also):
            if server is not None:
                server.close()
        for conn in list(self.connections):
            if conn.idle():
                conn.close()
        deadline = time.monotonic() + timeout
        while any(not c.idle() for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in (self._server, *self._also):
            if server is not None:
                await server.wait_closed()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | Response] = deque()  # a Response: an error answer, last
        self.busy = False  # a request of this connection is being handled
        self.last_active = time.monotonic()
        self.body_deadline = 0.0  # while a body is being read
        self.paused_writing = False
        self.reading_paused = False
        self.discarding = False  # an error was answered; drop the rest, then close
        self.in_head = False  # between the start of a request and the end of its headers
        self.message_began = False  # a request started during the current data_received
        self.head_started = 0.0
        self.head_bytes = 0
        self.out: list[bytes] = []  # answers not yet written (see HttpServer.want_flush)
        self.continue_pending = False  # a "100 Continue" to send once the earlier answers are
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.repeated: set[str] | None = None
        self.in_trailers = False  # past the head: header fields now are a chunked trailer
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.loop = asyncio.get_running_loop()  # kept: each lookup is a getpid() call on 3.11
        server = self.server
        if len(server.connections) >= server.max_connections:
            # Over the limit: answer 503 to whatever the client sends first, and close. The
            # connection is not counted; it closes by itself (see _finish_with).
            if server.on_refused is not None:
                server.on_refused()
            self.discarding = True
            refusal = error_response(
                503, "too_many_connections",
                f"this node serves at most {server.max_connections} client connections",
            )  # fmt: skip
            refusal.headers.append(("Retry-After", "1"))
            self._finish_with(refusal)
            return
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self.queue.clear()
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.discarding:
            return
        try:
            was_in_head, self.message_began = self.in_head, False
            self.parser.feed_data(data)
            if was_in_head and self.in_head and not self.message_began:
                # All of this read belongs to one unfinished head, which httptools buffers
                # until a header is complete: bound it (the read where a head starts is not
                # counted, so a head may hold up to one read more than the limit).
                self.head_bytes += len(data)
                if self.head_bytes > self.server.max_header_bytes + self.server.max_url:
                    message = "the request headers are too large"
                    self._fail(error_response(431, "headers_too_large", message))
        except httptools.HttpParserUpgrade:
            self._fail(error_response(400, "bad_request", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self.discarding:
                self._fail(error_response(400, "bad_request", f"malformed HTTP request: {exc}"))

    def pause_writing(self) -> None:
        self.paused_writing = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.paused_writing = False
        if len(self.queue) < MAX_PIPELINED:
            self._resume_reading()

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        self.in_head = True
        self.message_began = True
        self.head_started = time.monotonic()
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.server.max_url:
            self._fail(error_response(414, "uri_too_long", "the request line is too long"))
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > self.server.max_header_bytes:
            message = "the request headers are too large"
            self._fail(error_response(431, "headers_too_large", message))
            raise httptools.HttpParserError("headers too large")
        if self.in_trailers:
            # A chunked body's trailer: never merged into the header fields (RFC 9110 6.5.1),
            # or a trailer "Authorization" would pass where a proxy checked the head.
            return
        key = name.decode("latin-1").lower()
        if key in _LIST_HEADERS and key in self.headers:  # one list, RFC 9110 §5.3
            self.headers[key] += ", " + value.decode("latin-1")
            return
        if key in self.headers:
            if self.repeated is None:
                self.repeated = set()
            self.repeated.add(key)
            return
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.in_trailers = True
        self.head_bytes = 0
        if self._upgrade_requested():
            # The parser would end the message here and hand the rest of the connection over
            # as another protocol: the request would run without its body. Refuse it whole.
            self._fail(error_response(400, "bad_request", "protocol upgrades are not supported"))
            raise httptools.HttpParserError("upgrade refused")
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            limit = self.server.max_body
            message = f"value is {int(length)} bytes; the limit is {limit}"
            self._fail(error_response(413, "value_too_large", message))
            raise httptools.HttpParserError("body too large")
        if length not in (None, "0") or "transfer-encoding" in self.headers:
            self.body_deadline = time.monotonic() + self.server.body_timeout
            if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
                if self.busy or self.queue:
                    self.continue_pending = True  # after the answers before it (see _next)
                else:
                    self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.server.max_body:
            self._fail(
                error_response(
                    413, "value_too_large", f"value exceeds the {self.server.max_body} byte limit"
                )
            )
            raise httptools.HttpParserError("body too large")
        self.body.append(body)

    def _upgrade_requested(self) -> bool:
        """CONNECT, or any ``Upgrade`` header: with ``Connection: upgrade`` (in any of the
        Connection fields) llhttp stops parsing HTTP after the head, and this API speaks
        nothing else, so every upgrade attempt is refused."""
        return "upgrade" in self.headers or self.parser.get_method() == b"CONNECT"

    def on_message_complete(self) -> None:
        if self.discarding:
            return  # refused already (see _fail): never run a request that was refused
        self.body_deadline = 0.0
        self.continue_pending = False
        url = self.url.decode("latin-1")
        if url[:1] != "/":
            url = _origin_form(url)
        path, _, query = url.partition("?")
        path = path.partition("#")[0]
        method = self.parser.get_method().decode("ascii", "replace")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = Request(
            method, path, query, self.headers, self.repeated, body, self.parser.should_keep_alive()
        )
        self._reset()
        if self.busy:
            self.queue.append(request)
            if len(self.queue) >= MAX_PIPELINED:
                self._pause_reading()
        else:
            self._start(request)

    # -- handling -------------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self.busy = True
        divert = self.server.divert
        if divert is not None and divert(self, request):
            return
        routed = self.server.router.resolve(request.method, request.path)
        if isinstance(routed, Response):
            self._answer(request, routed)
            return
        self.loop.create_task(self._run(request, routed))

    async def _run(self, request: Request, handler: Handler) -> None:
        try:
            response = await self.server.wrap(request, handler)
        except asyncio.CancelledError:
            self.close()
            raise
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            response = error_response(500, "internal", "internal error; see the node log")
        self._answer(request, response)

    def answer(self, request: Request, response: Response) -> None:
        """Answer a request taken by ``HttpServer.divert``."""
        self._answer(request, response)

    def answer_raw(self, data: bytes, keep_alive: bool) -> None:
        """Answer a request taken by ``HttpServer.divert`` with an HTTP response already
        serialized (by a sibling shard, with ``keep_alive`` as it was told)."""
        if self.transport is None:
            return
        self._send(data)
        self._answered(keep_alive and not self.server.closing)

    def _answer(self, request: Request, response: Response) -> None:
        transport = self.transport
        if transport is None:
            return
        keep_alive = request.keep_alive and not self.server.closing
        try:
            parts = self._serialize(response, request.method == "HEAD", keep_alive)
        except Exception:  # a handler's header that HTTP cannot carry
            log.exception("cannot send the answer to %s %s", request.method, request.path)
            keep_alive = False
            internal = error_response(500, "internal", "internal error; see the node log")
            parts = self._serialize(internal, False, keep_alive)
        for part in parts:
            self._send(part)
        self._answered(keep_alive)

    def _answered(self, keep_alive: bool) -> None:
        self.busy = False
        self.last_active = time.monotonic()
        if not keep_alive:
            self.close()
            return
        self._next()

    def _next(self) -> None:
        """Start the next queued request (or send the queued error answer)."""
        if self.queue:
            item = self.queue.popleft()
            if isinstance(item, Response):
                self._finish_with(item)
                return
            self._start(item)
        elif self.continue_pending and self.transport is not None:
            # the request whose body is still to come is next: now it may send it
            self.continue_pending = False
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(self.queue) < MAX_PIPELINED and not self.paused_writing:
            self._resume_reading()

    def _serialize(self, response: Response, head_only: bool, keep_alive: bool) -> list[bytes]:
        return serialize(response, head_only, keep_alive, self.server.clock.date())

    def _fail(self, response: Response) -> None:
        """Refuse the request being parsed (malformed, too large, too slow): nothing more is
        read from this connection; the answers to the requests before it still go out, in
        order, then this one."""
        if self.discarding or self.transport is None:
            return
        self.discarding = True
        self.in_head = False
        self.body_deadline = 0.0
        self.continue_pending = False
        if self.busy:
            self.queue.append(response)
        else:
            self._finish_with(response)

    def _finish_with(self, response: Response) -> None:
        """Send a last answer, then close once the client has sent what it was sending
        (closing at once could reset the connection before the client reads the answer)."""
        if self.transport is None:
            return
        self.busy = True  # nothing more is answered on this connection
        self._send(b"".join(self._serialize(response, False, keep_alive=False)))
        self.loop.call_later(1.0, self.close)

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def idle(self) -> bool:
        return not self.busy and not self.queue

    def check_timeouts(self, now: float) -> None:
        if self.in_head and now - self.head_started > self.server.body_timeout and not self.busy:
            message = f"the request headers did not arrive within {self.server.body_timeout} s"
            self._fail(error_response(408, "request_timeout", message))
        elif self.body_deadline and now > self.body_deadline and not self.busy:
            message = f"the request body did not arrive within {self.server.body_timeout} s"
            self._fail(error_response(408, "request_timeout", message))
        elif self.idle() and now - self.last_active > self.server.keepalive_timeout:
            self.close()

    def _send(self, data: bytes) -> None:
        if self.transport is None:
            return
        if not self.out:
            self.server.want_flush(self)
        self.out.append(data)

    def flush(self) -> None:
        out, self.out = self.out, []
        transport = self.transport
        if not out or transport is None or transport.is_closing():
            return
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.writelines(out)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()
