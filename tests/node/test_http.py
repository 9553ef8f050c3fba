"""Behaviour of the node's small HTTP/1.1 server (ringkv.node.http), spoken to over raw sockets.

Every test starts an ``HttpServer`` in-process on an ephemeral port and talks to it with
``asyncio.open_connection`` so the bytes on the wire are exactly the ones written here. Each
test runs twice: on the default asyncio loop and on uvloop (what the node runs on).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from ringkv.node.http import (
    Handler,
    HttpServer,
    Request,
    Response,
    Router,
    error_response,
    json_response,
)

TIMEOUT = 5.0  # generous bound on anything that should happen promptly; never slept on

Run = Callable[[Coroutine[Any, Any, Any]], Any]


# -- server side ----------------------------------------------------------------------------


async def passthrough(request: Request, handler: Handler) -> Response:
    return await handler(request)


@dataclass
class Calls:
    """What handlers saw, for assertions."""

    requests: list[Request] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.requests)


def echo(calls: Calls) -> Handler:
    """A handler echoing what it received as JSON."""

    async def handler(request: Request) -> Response:
        calls.requests.append(request)
        return json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "body_len": len(request.body),
            }
        )

    return handler


@asynccontextmanager
async def serving(
    router: Router,
    wrap: Callable[[Request, Handler], Awaitable[Response]] = passthrough,
    **limits: Any,
) -> AsyncIterator[tuple[HttpServer, int]]:
    limits.setdefault("max_body", 1 << 20)
    server = HttpServer(router, wrap=wrap, **limits)
    await server.start("127.0.0.1", 0)
    port = server.port
    try:
        yield server, port
    finally:
        await server.shutdown(timeout=1.0)


# -- client side ----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # lower-cased names, in order
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)


async def read_reply(
    reader: asyncio.StreamReader, *, head_only: bool = False, timeout: float = TIMEOUT
) -> Reply:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = []
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            assert sep, f"malformed header line {line!r}"
            headers.append((name.strip().lower(), value.strip()))
    reply = Reply(int(status), headers, b"", raw)
    if reply.status >= 200 and not head_only:
        length = reply.header("content-length")
        assert length is not None, f"no Content-Length in {raw!r}"
        reply.body = await asyncio.wait_for(reader.readexactly(int(length)), timeout)
    return reply


async def request(
    port: int, data: bytes, *, head_only: bool = False
) -> tuple[Reply, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await connect(port)
    writer.write(data)
    await writer.drain()
    return await read_reply(reader, head_only=head_only), reader, writer


async def expect_closed(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> None:
    """The server closes the connection (EOF or reset) with nothing more sent."""
    try:
        rest = await asyncio.wait_for(reader.read(), timeout)
    except (ConnectionResetError, BrokenPipeError):
        return
    assert rest == b"", f"unexpected bytes before close: {rest[:200]!r}"


async def nothing_more(reader: asyncio.StreamReader, wait: float = 0.3) -> None:
    """The connection stays open and the server sends nothing more within ``wait``."""
    try:
        data = await asyncio.wait_for(reader.read(1), wait)
    except TimeoutError:
        return
    raise AssertionError(f"expected silence, got {data!r}")


def close(writer: asyncio.StreamWriter) -> None:
    writer.close()


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: t", *extra, "", ""]
    return "\r\n".join(lines).encode()


def simple_router(calls: Calls) -> Router:
    router = Router()

    async def hello(request: Request) -> Response:
        calls.requests.append(request)
        return Response(200, b"hello world", content_type="text/plain")

    router.add("GET", "/hello", hello)
    router.add("PUT", "/echo", echo(calls))
    router.add("POST", "/echo", echo(calls))
    router.add_prefix("GET", "/v1/kv/", echo(calls))
    router.add_prefix("PUT", "/v1/kv/", echo(calls))
    return router


# -- 1. routing -----------------------------------------------------------------------------


def test_exact_get_route_answers_200_with_body_and_content_length(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, _, writer = await request(port, get("/hello"))
            close(writer)
        assert reply.status == 200
        assert reply.body == b"hello world"
        assert reply.header("content-length") == str(len(b"hello world"))
        assert reply.header("content-type") == "text/plain"
        assert reply.header("date")
        assert len(calls) == 1

    run(main())


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("http://t:7001/v1/kv/a%2Fb?r=one", "/v1/kv/a%2Fb", "r=one"),
        ("HTTPS://node.example/v1/kv/k", "/v1/kv/k", ""),
        ("http://t/v1/kv/k#frag", "/v1/kv/k", ""),
    ],
)
def test_absolute_form_targets_are_served_by_their_path(
    run: Run, target: str, path: str, query: str
) -> None:
    """RFC 9112, 3.2.2: a server must accept absolute-form request targets (proxies send
    them); the scheme and authority are dropped, the path and query route as usual."""
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, _, writer = await request(port, get(target))
            close(writer)
        assert reply.status == 200, reply.body
        assert (reply.json()["path"], reply.json()["query"]) == (path, query)

    run(main())


@pytest.mark.parametrize("target", ["http://t", "http://t?x=1", "*", "ftp://t/v1/kv/k"])
def test_targets_without_a_known_path_are_404(run: Run, target: str) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, _, writer = await request(port, get(target))
            close(writer)
        assert reply.status in (400, 404), reply.body  # "*" may be refused by the parser
        assert len(calls) == 0

    run(main())


def test_connections_over_the_limit_get_503_and_are_closed(run: Run) -> None:
    calls = Calls()
    refused: list[int] = []

    async def main() -> None:
        limits = {"max_connections": 2, "on_refused": lambda: refused.append(1)}
        async with serving(simple_router(calls), **limits) as (server, port):
            first, second = await request(port, get("/hello")), await request(port, get("/hello"))
            assert first[0].status == second[0].status == 200
            reply, reader, _ = await request(port, get("/hello"))
            assert reply.status == 503
            assert reply.json()["error"] == "too_many_connections"
            assert reply.header("retry-after") == "1"
            assert reply.header("connection") == "close"
            await expect_closed(reader)
            assert len(server.connections) == 2 and refused == [1]
            # the ones inside the limit still work, and a freed place is taken again
            first[2].write(get("/hello"))
            assert (await read_reply(first[1])).status == 200
            close(second[2])
            await expect_closed(second[1])
            deadline = time.monotonic() + TIMEOUT
            while len(server.connections) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            again = await request(port, get("/hello"))
            assert again[0].status == 200
            close(first[2])
            close(again[2])
        assert len(calls) == 4

    run(main())


def test_unknown_path_is_404_json(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, _, writer = await request(port, get("/nope"))
            close(writer)
        assert reply.status == 404
        assert (reply.header("content-type") or "").startswith("application/json")
        assert reply.json()["error"] == "not_found"
        assert reply.header("content-length") == str(len(reply.body))
        assert len(calls) == 0

    run(main())


def test_wrong_method_is_405_with_allow(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, reader, writer = await request(
                port, b"DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            # on a prefix route too, on the same (still open) connection
            writer.write(b"DELETE /v1/kv/k HTTP/1.1\r\nHost: t\r\n\r\n")
            prefix_reply = await read_reply(reader)
            close(writer)
        assert reply.status == 405
        assert reply.json()["error"] == "method_not_allowed"
        assert reply.header("allow") == "GET"
        assert prefix_reply.status == 405
        assert prefix_reply.header("allow") == "GET, PUT"
        assert len(calls) == 0

    run(main())


def test_head_on_exact_get_route_gives_headers_and_no_body(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, reader, writer = await request(
                port, b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n", head_only=True
            )
            # no body bytes follow: the next thing on the connection is the next answer
            writer.write(get("/hello"))
            follow = await read_reply(reader)
            close(writer)
        assert reply.status == 200
        assert reply.header("content-length") == str(len(b"hello world"))
        assert follow.status == 200
        assert follow.body == b"hello world"
        assert [r.method for r in calls.requests] == ["HEAD", "GET"]

    run(main())


def test_prefix_route_gets_raw_path_and_query_string(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, _, writer = await request(port, get("/v1/kv/a%2Fb%20c%25?x=1&y=%20z&e="))
            close(writer)
        assert reply.status == 200
        assert reply.json()["path"] == "/v1/kv/a%2Fb%20c%25"
        assert reply.json()["query"] == "x=1&y=%20z&e="
        assert calls.requests[0].query() == [("x", "1"), ("y", " z"), ("e", "")]

    run(main())


# -- 2. request parsing ---------------------------------------------------------------------


def test_headers_are_lower_cased_and_repeats_counted(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, _, writer = await request(
                port,
                get("/hello", "X-Mixed-CASE: Value One", "X-Twice: a", "x-twice: b"),
            )
            close(writer)
        assert reply.status == 200
        seen = calls.requests[0]
        assert seen.headers["x-mixed-case"] == "Value One"
        assert "X-Mixed-CASE" not in seen.headers
        assert seen.header_count("x-twice") == 2
        assert seen.header_count("x-mixed-case") == 1
        assert seen.header_count("host") == 1
        assert seen.header_count("x-absent") == 0

    run(main())


BODY = bytes(range(256)) * 400  # 100 KiB, sent in several writes
PIECES = [p for p in (b"first-", b"x" * 5000, b"", b"-last") if p]  # a 0-size chunk ends it


@pytest.mark.parametrize(
    ("framing", "writes", "body"),
    [
        pytest.param(
            b"Content-Length: %d" % len(BODY),
            [BODY[i : i + 30000] for i in range(0, len(BODY), 30000)],
            BODY,
            id="content-length",
        ),
        pytest.param(
            b"Transfer-Encoding: chunked",
            [b"%x\r\n%s\r\n" % (len(p), p) for p in PIECES] + [b"0\r\n\r\n"],
            b"".join(PIECES),
            id="chunked",
        ),
    ],
)
def test_put_body_sent_in_pieces_arrives_whole(
    run: Run, framing: bytes, writes: list[bytes], body: bytes
) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reader, writer = await connect(port)
            writer.write(b"PUT /echo HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % framing)
            for data in writes:
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(0.01)  # let the server read separate pieces
            reply = await read_reply(reader)
            close(writer)
        assert reply.status == 200
        assert reply.json()["body_len"] == len(body)
        assert calls.requests[0].body == body

    run(main())


# -- 3. keep-alive --------------------------------------------------------------------------


def test_two_requests_on_one_connection(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            first, reader, writer = await request(port, get("/hello"))
            assert first.header("connection") is None
            writer.write(b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
            second = await read_reply(reader)
            await nothing_more(reader, 0.1)  # still open
            close(writer)
        assert first.status == 200
        assert second.status == 200
        assert second.json()["body_len"] == 3
        assert len(calls) == 2

    run(main())


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(get("/hello", "Connection: close"), id="connection-close"),
        pytest.param(b"GET /hello HTTP/1.0\r\n\r\n", id="http10-without-keep-alive"),
    ],
)
def test_request_not_kept_alive_is_answered_then_closed(run: Run, data: bytes) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reply, reader, writer = await request(port, data)
            await expect_closed(reader)
            close(writer)
        assert reply.status == 200
        assert reply.body == b"hello world"
        assert reply.header("connection") == "close"

    run(main())


def test_idle_keep_alive_connection_is_closed_after_timeout(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls), keepalive_timeout=0.3, body_timeout=0.4) as (
            _,
            port,
        ):
            reply, reader, writer = await request(port, get("/hello"))
            started = time.monotonic()
            await expect_closed(reader, timeout=3.0)
            elapsed = time.monotonic() - started
            close(writer)
        assert reply.status == 200
        assert 0.25 <= elapsed < 2.0

    run(main())


# -- 4. pipelining --------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(run: Run) -> None:
    finished: list[str] = []

    async def slow_first(request: Request) -> Response:
        n = request.query()[0][1]
        if n == "0":
            await asyncio.sleep(0.2)
        finished.append(n)
        return Response(200, f"answer-{n}".encode())

    router = Router()
    router.add("GET", "/p", slow_first)

    async def main() -> None:
        async with serving(router) as (_, port):
            reader, writer = await connect(port)
            writer.write(get("/p?n=0") + get("/p?n=1") + get("/p?n=2"))
            replies = [await read_reply(reader) for _ in range(3)]
            close(writer)
        assert [r.status for r in replies] == [200, 200, 200]
        assert [r.body for r in replies] == [b"answer-0", b"answer-1", b"answer-2"]
        assert finished == ["0", "1", "2"]

    run(main())


# -- 5. limits and timeouts -----------------------------------------------------------------


async def feed(
    writer: asyncio.StreamWriter,
    writes: tuple[bytes, ...],
    stop: asyncio.Event,
    piece: bytes = b"",
    every: float = 0.0,
    most: int = 0,
) -> int:
    """Write ``writes`` one after the other, then ``piece`` every ``every`` s until ``stop`` is
    set or ``most`` pieces have gone; return how many bytes of pieces were written. The server
    closing the connection meanwhile ends the feed quietly."""
    sent = 0
    try:
        for data in writes:
            writer.write(data)
        await writer.drain()
        for _ in range(most):
            if stop.is_set():
                break
            writer.write(piece)
            sent += len(piece)
            await writer.drain()
            await asyncio.sleep(every)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return sent


@pytest.mark.parametrize(
    ("limits", "data", "body_len", "header_count"),
    [
        pytest.param(
            {"max_body": 1000},
            b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"y" * 1000,
            1000,
            2,
            id="content-length-at-max-body",
        ),
        pytest.param(
            {"max_header_bytes": 4096},
            get("/v1/kv/k", *[f"X-Header-{i}: {'v' * 64}" for i in range(40)]),  # ~3 KiB
            0,
            41,
            id="headers-just-under-max-header-bytes",
        ),
    ],
)
def test_request_within_the_limits_is_accepted(
    run: Run, limits: dict[str, Any], data: bytes, body_len: int, header_count: int
) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls), **limits) as (_, port):
            reply, _, writer = await request(port, data)
            close(writer)
        assert reply.status == 200
        assert reply.json()["body_len"] == body_len
        assert len(calls.requests[0].headers) == header_count

    run(main())


@dataclass(frozen=True)
class Refusal:
    """A request the server must refuse: what the client sends, and the answer it gets."""

    status: int
    error: str
    writes: tuple[bytes, ...]  # written one after the other, before the answer is read
    limits: dict[str, Any] = field(default_factory=dict)  # for this case's HttpServer
    trickle: bytes = b""  # then written every 0.1 s (4 s at most) until the answer comes
    not_before: float = 0.0  # seconds: an answer sooner than this is a failure


CHUNK_OF_400 = b"190\r\n" + b"z" * 400 + b"\r\n"

REFUSALS = [
    pytest.param(
        Refusal(414, "uri_too_long", (get("/v1/kv/" + "a" * 2000),), {"max_url": 1024}),
        id="414-url-longer-than-max-url",
    ),
    pytest.param(
        Refusal(
            431,
            "headers_too_large",
            (get("/hello", *[f"X-Header-{i}: {'v' * 64}" for i in range(100)]),),  # ~7.5 KiB
            {"max_header_bytes": 4096},
        ),
        id="431-too-many-header-bytes",
    ),
    pytest.param(
        Refusal(
            413,
            "value_too_large",
            (
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
                b"y" * 500,  # the client is still sending when the answer comes
            ),
            {"max_body": 1000},
        ),
        id="413-content-length-over-max-body",
    ),
    pytest.param(
        Refusal(
            413,
            "value_too_large",
            (
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
                *[CHUNK_OF_400] * 3,  # 3 x 400 bytes > 1000
            ),
            {"max_body": 1000},
        ),
        id="413-chunked-body-over-max-body",
    ),
    pytest.param(
        # 413 rather than 100 Continue: the client is not asked for a body that is refused
        Refusal(
            413,
            "value_too_large",
            (
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n"
                b"Expect: 100-continue\r\n\r\n",
            ),
            {"max_body": 10},
        ),
        id="413-expect-100-continue-with-too-large-body",
    ),
    pytest.param(Refusal(400, "bad_request", (b"NOT HTTP\r\n\r\n",)), id="400-garbage"),
    pytest.param(
        Refusal(
            408,
            "request_timeout",
            (b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc",),
            {"body_timeout": 0.5},
            not_before=0.45,
        ),
        id="408-stalled-body",
    ),
    pytest.param(
        # Slowloris: a head that keeps trickling in is cut off by a deadline, not an idle timer.
        Refusal(
            408,
            "request_timeout",
            (b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: ",),
            {"body_timeout": 0.5},
            trickle=b"s",
            not_before=0.45,
        ),
        id="408-trickled-headers",
    ),
]


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_request_is_answered_then_closed_and_handler_not_called(
    run: Run, case: Refusal
) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls), **case.limits) as (_, port):
            reader, writer = await connect(port)
            stop = asyncio.Event()
            started = time.monotonic()
            feeder = asyncio.create_task(
                feed(writer, case.writes, stop, case.trickle, 0.1, most=40 if case.trickle else 0)
            )
            reply = await read_reply(reader, timeout=3.0)
            elapsed = time.monotonic() - started
            stop.set()
            await feeder
            await expect_closed(reader)
            close(writer)
        assert reply.status == case.status
        assert reply.json()["error"] == case.error
        assert reply.header("connection") == "close"
        assert elapsed >= case.not_before, f"{case.status} after only {elapsed:.2f} s"
        assert len(calls) == 0

    run(main())


def test_endless_header_value_sent_in_pieces_is_bounded(run: Run) -> None:
    """A header that never ends must not be buffered without bound: 431 (or a close)."""
    calls = Calls()
    limit = 4096 + 1024

    async def main() -> None:
        async with serving(simple_router(calls), max_header_bytes=4096, max_url=1024) as (
            _,
            port,
        ):
            reader, writer = await connect(port)
            stop = asyncio.Event()
            head = b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Endless: "
            feeder = asyncio.create_task(
                feed(writer, (head,), stop, b"a" * 512, every=0.002, most=50 * limit // 512)
            )
            try:
                reply: Reply | None = await read_reply(reader, timeout=3.0)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                reply = None  # closed without an answer: also bounded
            stop.set()
            sent = await feeder
            close(writer)
        if reply is not None:
            assert reply.status == 431
            assert reply.json()["error"] == "headers_too_large"
        assert sent < 50 * limit, "the server kept buffering the header"
        assert len(calls) == 0

    run(main())


# -- 6. Expect: 100-continue ----------------------------------------------------------------


def test_expect_100_continue(run: Run) -> None:
    calls = Calls()

    async def main() -> None:
        async with serving(simple_router(calls)) as (_, port):
            reader, writer = await connect(port)
            writer.write(
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await read_reply(reader)  # before any body byte is sent
            writer.write(b"hello")
            final = await read_reply(reader)
            close(writer)
        assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert final.status == 200
        assert calls.requests[0].body == b"hello"

    run(main())


# -- 7. handler errors ----------------------------------------------------------------------


def test_handler_exception_is_500_and_server_keeps_serving(run: Run) -> None:
    calls = Calls()
    router = simple_router(calls)

    async def boom(request: Request) -> Response:
        raise RuntimeError("unexpected")

    router.add("GET", "/boom", boom)

    async def main() -> None:
        async with serving(router) as (_, port):
            reply, reader, writer = await request(port, get("/boom"))
            # the same connection keeps working, and so do new ones
            writer.write(get("/hello"))
            same = await read_reply(reader)
            other, _, other_writer = await request(port, get("/hello"))
            close(writer)
            close(other_writer)
        assert reply.status == 500
        assert reply.json()["error"] == "internal"
        assert same.status == 200
        assert other.status == 200

    run(main())


# -- 8. graceful shutdown -------------------------------------------------------------------


def test_graceful_shutdown(run: Run) -> None:
    calls = Calls()
    router = simple_router(calls)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def waiting(request: Request) -> Response:
        entered.set()
        await release.wait()
        return Response(200, b"done")

    router.add("GET", "/wait", waiting)

    async def main() -> None:
        server = HttpServer(router, wrap=passthrough, max_body=1000)
        await server.start("127.0.0.1", 0)
        port = server.port

        idle_reply, idle_reader, idle_writer = await request(port, get("/hello"))
        assert idle_reply.status == 200
        busy_reader, busy_writer = await connect(port)
        busy_writer.write(get("/wait"))
        await asyncio.wait_for(entered.wait(), TIMEOUT)

        shutdown = asyncio.create_task(server.shutdown(timeout=5))
        await expect_closed(idle_reader)  # the idle keep-alive connection is closed
        with pytest.raises(OSError):  # new connections are refused
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
        await asyncio.sleep(0.1)  # shutdown keeps waiting for the in-flight request
        assert not shutdown.done()

        started = time.monotonic()
        release.set()
        reply = await read_reply(busy_reader)
        assert reply.status == 200
        assert reply.body == b"done"
        assert reply.header("connection") == "close"
        await expect_closed(busy_reader)
        await asyncio.wait_for(shutdown, TIMEOUT)
        assert time.monotonic() - started < 2.0
        assert not server.connections
        idle_writer.close()
        busy_writer.close()

    run(main())


# -- 9. large response ----------------------------------------------------------------------


def test_large_response_arrives_intact(run: Run) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def big(request: Request) -> Response:
        return Response(200, payload, content_type="application/octet-stream")

    router = Router()
    router.add("GET", "/big", big)

    async def main() -> None:
        async with serving(router) as (_, port):
            reply, reader, writer = await request(port, get("/big"))
            writer.write(get("/big"))  # and the connection is still usable
            again = await read_reply(reader)
            close(writer)
        assert reply.status == 200
        assert reply.header("content-length") == str(len(payload))
        assert reply.body == payload
        assert again.body == payload

    run(main())


# -- 10. the wrap hook ----------------------------------------------------------------------


def test_wrap_is_called_around_each_routed_handler(run: Run) -> None:
    calls = Calls()
    log: list[str] = []

    async def wrap(request: Request, handler: Handler) -> Response:
        log.append(f"before {request.method} {request.path}")
        response = await handler(request)
        log.append(f"after {response.status}")
        response.headers.append(("X-Wrapped", "yes"))
        return response

    async def main() -> None:
        async with serving(simple_router(calls), wrap=wrap) as (_, port):
            first, reader, writer = await request(port, get("/hello"))
            writer.write(get("/v1/kv/k"))
            second = await read_reply(reader)
            writer.write(get("/missing"))  # resolved by the router: no handler, no wrap
            missing = await read_reply(reader)
            close(writer)
        assert log == ["before GET /hello", "after 200", "before GET /v1/kv/k", "after 200"]
        assert first.header("x-wrapped") == "yes"
        assert second.header("x-wrapped") == "yes"
        assert missing.status == 404
        assert len(calls) == 2

    run(main())


def test_wrap_can_refuse_without_calling_the_handler(run: Run) -> None:
    calls = Calls()

    async def auth(request: Request, handler: Handler) -> Response:
        if "authorization" not in request.headers:
            return error_response(401, "unauthorized", "no credentials")
        return await handler(request)

    async def main() -> None:
        async with serving(simple_router(calls), wrap=auth) as (_, port):
            refused, reader, writer = await request(port, get("/hello"))
            writer.write(get("/hello", "Authorization: Bearer x"))
            allowed = await read_reply(reader)
            close(writer)
        assert refused.status == 401
        assert refused.json()["error"] == "unauthorized"
        assert allowed.status == 200
        assert len(calls) == 1

    run(main())


# -- problems found while writing these tests ---------------------------------------------


async def next_reply(reader: asyncio.StreamReader, what: str, timeout: float = TIMEOUT) -> Reply:
    try:
        return await read_reply(reader, timeout=timeout)
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        raise AssertionError(f"the connection was closed before {what}") from exc
    except TimeoutError as exc:
        raise AssertionError(f"no answer for {what} within {timeout} s") from exc


def slow_router(calls: Calls) -> Router:
    router = simple_router(calls)

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query()[0][1]))
        return Response(200, b"slow")

    router.add("GET", "/slow", slow)
    return router


def test_pipelined_put_body_then_split_next_head_is_not_431(run: Run) -> None:
    """A PUT body and the start of the next pipelined request can arrive in one read; the
    body bytes must not count against the next request's header limit."""
    calls = Calls()
    body = b"b" * 8000  # well under max_body, bigger than max_header_bytes + max_url

    async def main() -> None:
        async with serving(simple_router(calls), max_header_bytes=2048, max_url=512) as (
            _,
            port,
        ):
            reader, writer = await connect(port)
            put = b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            writer.write(put + body + b"GET /hello HTTP/1.1\r\nHo")  # one write
            first = await next_reply(reader, "the PUT")
            writer.write(b"st: t\r\n\r\n")
            second = await next_reply(reader, "the GET whose head was split")
            close(writer)
        assert first.status == 200
        assert first.json()["body_len"] == len(body)
        assert second.status == 200, second.body
        assert second.body == b"hello world"

    run(main())


@pytest.mark.parametrize(
    ("delay", "pipelined", "limits", "status", "error"),
    [
        pytest.param(
            0.2,
            b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
            {"max_body": 1000},
            413,
            "value_too_large",
            id="413-behind-in-flight",
        ),
        pytest.param(
            # garbage behind a valid request that takes longer than the 1 s a refused
            # connection is kept open for: the valid request still gets its answer
            1.3,
            b"NOT HTTP\r\n\r\n",
            {},
            400,
            "bad_request",
            id="400-garbage-behind-slow-in-flight",
        ),
    ],
)
def test_refusal_pipelined_behind_an_in_flight_request_waits_for_its_answer(
    run: Run, delay: float, pipelined: bytes, limits: dict[str, Any], status: int, error: str
) -> None:
    """The in-flight request is answered, then the refusal of the one behind it, then close."""
    calls = Calls()

    async def main() -> None:
        async with serving(slow_router(calls), **limits) as (_, port):
            reader, writer = await connect(port)
            writer.write(get(f"/slow?d={delay}") + pipelined)
            first = await next_reply(reader, f"the in-flight GET (handler takes {delay} s)")
            second = await next_reply(reader, f"the {status} for the pipelined request")
            await expect_closed(reader)
            close(writer)
        assert first.status == 200
        assert first.body == b"slow"
        assert second.status == status
        assert second.json()["error"] == error

    run(main())


def test_100_continue_is_not_sent_ahead_of_an_earlier_answer(run: Run) -> None:
    """Pipelined: answers (interim ones included) go out in request order."""
    calls = Calls()

    async def main() -> None:
        async with serving(slow_router(calls)) as (_, port):
            reader, writer = await connect(port)
            writer.write(
                get("/slow?d=0.3") + b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            first = await next_reply(reader, "the GET")
            writer.write(b"hi")
            rest = [await next_reply(reader, "the PUT")]
            if rest[0].status == 100:
                rest.append(await next_reply(reader, "the PUT"))
            close(writer)
        assert first.status == 200, f"got {first.raw_head!r} before the GET's answer"
        assert first.body == b"slow"
        assert rest[-1].status == 200

    run(main())


def test_unencodable_response_header_does_not_wedge_the_connection(run: Run) -> None:
    """A handler bug that only shows while writing the answer (a header value that is not
    latin-1) must end like any unexpected error: a 500, or at least a closed connection."""
    calls = Calls()
    router = simple_router(calls)

    async def bad_header(request: Request) -> Response:
        return Response(200, b"x", headers=[("X-Key", "snow\u2603man")])

    router.add("GET", "/bad-header", bad_header)

    async def main() -> None:
        async with serving(router) as (server, port):
            reader, writer = await connect(port)
            writer.write(get("/bad-header"))
            try:
                reply: Reply | None = await read_reply(reader, timeout=1.5)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                reply = None  # closed: acceptable
            except TimeoutError:
                busy = [c.busy for c in server.connections]
                raise AssertionError(
                    f"no answer and no close within 1.5 s (connections busy: {busy})"
                ) from None
            finally:
                close(writer)
                await asyncio.sleep(0.05)  # let the server see the close before shutting down
        if reply is not None:
            assert reply.status == 500
            assert reply.json()["error"] == "internal"

    run(main())
