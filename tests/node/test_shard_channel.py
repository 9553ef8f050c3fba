"""The local channel between the shards of one node (ringkv.node.shard_channel), in-process.

Two shards' channel ends run on one event loop, each with its own router and wrapper; the
first serves HTTP (an ``HttpServer`` whose ``divert`` hands ``/s1/...`` to the second), and
the tests speak raw HTTP to it, so what a client sees after a handover is exactly what is
asserted. The multi-process behaviour (a real worker killed mid-request) is in test_shards.py.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ringkv.node.http import Handler, HttpServer, Request, Response, Router, json_response
from ringkv.node.shard_channel import ShardChannel, socket_name
from ringkv.node.shards import ShardLayout
from tests.node.test_http import TIMEOUT, Run, close, connect, expect_closed, get, read_reply


@dataclass
class Shard:
    """One shard's side: its router, what its wrapper saw, and its channel end."""

    index: int
    data_dir: str
    router: Router = field(default_factory=Router)
    wrapped: list[Request] = field(default_factory=list)
    server: HttpServer | None = None
    channel: ShardChannel | None = None

    async def wrap(self, request: Request, handler: Handler) -> Response:
        """As ``Api.wrap`` does: the only place a request is authenticated."""
        self.wrapped.append(request)
        if request.headers.get("authorization") != "Bearer good":
            return json_response({"error": "unauthorized"}, 401)
        return await handler(request)


def make_shard(index: int, data_dir: str, request_timeout: float = 2.0) -> Shard:
    shard = Shard(index, data_dir)
    layout = ShardLayout(2, index, "127.0.0.1", 0, data_dir)
    node = SimpleNamespace(layout=layout, config=SimpleNamespace(request_timeout=request_timeout))

    def divert(conn: Any, request: Request) -> bool:
        if not request.path.startswith("/s1/") or index == 1:
            return False
        assert shard.channel is not None
        shard.channel.hand_over_raw(conn, request, 1)
        return True

    shard.server = HttpServer(shard.router, wrap=shard.wrap, max_body=1 << 20, divert=divert)
    api = SimpleNamespace(node=node, router=shard.router, wrap=shard.wrap, server=shard.server)
    shard.channel = ShardChannel(api, data_dir)  # type: ignore[arg-type]
    return shard


@asynccontextmanager
async def two_shards(
    data_dir: Path, *, start_second: bool = True
) -> AsyncIterator[tuple[Shard, Shard, int]]:
    first, second = make_shard(0, str(data_dir)), make_shard(1, str(data_dir))
    assert first.server and first.channel and second.channel
    await first.channel.start()
    if start_second:
        await second.channel.start()
    await first.server.start("127.0.0.1", 0)
    try:
        yield first, second, first.server.port
    finally:
        await first.server.shutdown(timeout=1.0)
        await first.channel.close(1.0)
        await second.channel.close(1.0)


def echo_route(shard: Shard) -> None:
    async def echo(request: Request) -> Response:
        for _ in range(random.randrange(4)):  # answers come back out of order
            await asyncio.sleep(0)
        return json_response(
            {"shard": shard.index, "path": request.path, "query": request.query_string,
             "body": request.body.decode()},
            headers=[("X-Served-By", str(shard.index))],
        )  # fmt: skip

    for method in ("GET", "HEAD", "PUT"):
        shard.router.add_prefix(method, "/s1/", echo)


def put(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"PUT {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *extra, "", ""]
    return "\r\n".join(head).encode() + body


AUTH = "Authorization: Bearer good"


def test_many_concurrent_handovers_each_get_their_own_answer(run: Run, tmp_path: Path) -> None:
    async def go() -> None:
        async with two_shards(tmp_path) as (first, second, port):
            echo_route(second)

            async def client(c: int) -> None:
                reader, writer = await connect(port)
                try:
                    for i in range(0, 8, 2):  # two pipelined requests at a time
                        writer.write(put(f"/s1/k{c}-{i}?w=1", f"v{c}-{i}".encode(), AUTH)
                                     + get(f"/s1/k{c}-{i + 1}?r=1", AUTH))  # fmt: skip
                        for n, method in ((i, "PUT"), (i + 1, "GET")):
                            reply = await read_reply(reader)
                            assert reply.status == 200
                            assert reply.header("x-served-by") == "1"
                            answer = reply.json()
                            assert answer["path"] == f"/s1/k{c}-{n}"
                            assert answer["body"] == (f"v{c}-{n}" if method == "PUT" else "")
                            assert reply.header("connection") is None  # kept alive
                finally:
                    close(writer)

            await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(40))), 4 * TIMEOUT)
            # served by the owning shard's wrapper, once each; the first shard wrapped none
            assert len(second.wrapped) == 40 * 8 and first.wrapped == []

    run(go())


def test_the_owning_shards_answer_is_passed_on_as_it_is(run: Run, tmp_path: Path) -> None:
    async def go() -> None:
        async with two_shards(tmp_path) as (_first, second, port):
            echo_route(second)
            reader, writer = await connect(port)
            writer.write(get("/s1/k"))  # no token: refused by the owning shard's wrapper
            assert (await read_reply(reader)).status == 401
            writer.write(get("/s1/", AUTH).replace(b"GET", b"DELETE", 1))
            assert (await read_reply(reader)).status == 405  # the sibling's router says so
            writer.write(get("/s1/k", AUTH).replace(b"GET", b"HEAD", 1))
            head = await read_reply(reader, head_only=True)
            assert head.status == 200 and int(head.header("content-length") or 0) > 0
            writer.write(get("/s1/k", AUTH, "Connection: close"))
            last = await read_reply(reader)  # the HEAD sent no body: this is the next answer
            assert last.status == 200 and last.header("connection") == "close"
            await expect_closed(reader)
            close(writer)

    run(go())


def test_a_sibling_that_is_not_running_is_a_503_naming_it(run: Run, tmp_path: Path) -> None:
    async def go() -> None:
        async with two_shards(tmp_path, start_second=False) as (_first, _second, port):
            reader, writer = await connect(port)
            writer.write(get("/s1/k", AUTH))
            reply = await read_reply(reader)
            assert reply.status == 503 and reply.json()["error"] == "unavailable"
            assert "shard 1 of this node is not running" in reply.json()["message"]
            writer.write(get("/s1/k", AUTH))  # the connection goes on, and so do the refusals
            assert (await read_reply(reader)).status == 503
            close(writer)

    run(go())


def test_a_sibling_gone_mid_request_answers_503_not_a_hang(run: Run, tmp_path: Path) -> None:
    async def go() -> None:
        async with two_shards(tmp_path) as (_first, second, port):
            arrived, gate = asyncio.Event(), asyncio.Event()

            async def slow(request: Request) -> Response:
                arrived.set()
                await gate.wait()
                return json_response({})

            second.router.add_prefix("GET", "/s1/", slow)
            assert second.channel is not None
            readers = []
            for _ in range(3):
                reader, writer = await connect(port)
                writer.write(get("/s1/slow", AUTH))
                readers.append((reader, writer))
            await asyncio.wait_for(arrived.wait(), TIMEOUT)
            for inbound in list(second.channel.inbound):  # what the sibling's death does
                assert inbound.transport is not None
                inbound.transport.abort()
            for reader, writer in readers:
                reply = await read_reply(reader)
                assert reply.status == 503, reply
                message = reply.json()["message"]
                assert "shard 1" in message and "stopped while serving" in message
                close(writer)
            gate.set()

    run(go())


def test_a_sibling_that_stops_answering_is_a_503_after_the_timeout(
    run: Run, tmp_path: Path
) -> None:
    async def go() -> None:
        async with two_shards(tmp_path) as (first, second, port):
            gate = asyncio.Event()

            async def stuck(request: Request) -> Response:
                await gate.wait()
                return json_response({})

            second.router.add_prefix("GET", "/s1/", stuck)
            assert first.channel is not None
            first.channel.timeout = 0.3
            reader, writer = await connect(port)
            writer.write(get("/s1/k", AUTH))
            reply = await read_reply(reader, timeout=TIMEOUT)
            assert reply.status == 503 and "no answer in time" in reply.json()["message"]
            gate.set()
            close(writer)

    run(go())


def test_a_request_handed_over_for_its_parts(run: Run, tmp_path: Path) -> None:
    """``hand_over`` (a batch's part, a node-wide request): status, body and headers back."""

    async def go() -> None:
        async with two_shards(tmp_path) as (first, second, _port):
            echo_route(second)
            assert first.channel is not None
            request = Request("PUT", "/s1/x", "a=1", {"authorization": "Bearer good"},
                              None, b"body", True)  # fmt: skip
            answer = await first.channel.hand_over(request, 1)
            assert answer.status == 200
            assert json.loads(answer.body) == {"shard": 1, "path": "/s1/x", "query": "a=1",
                                               "body": "body"}  # fmt: skip
            assert ("X-Served-By", "1") in answer.headers

    run(go())


def test_a_data_directory_too_long_for_a_socket_path_still_works(run: Run, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / socket_name(1))) > 108

    async def go() -> None:
        async with two_shards(deep) as (_first, second, port):
            echo_route(second)
            reader, writer = await connect(port)
            writer.write(get("/s1/k", AUTH))
            assert (await read_reply(reader)).status == 200
            close(writer)
            assert (deep / socket_name(1)).exists()  # where the node keeps it
        assert not (deep / socket_name(1)).exists()  # and removes it when the shard stops

    run(go())
