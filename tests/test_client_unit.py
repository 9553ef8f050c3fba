"""The client's own behaviour (request encoding, answer and error parsing, endpoint
failover, connection reuse) against a tiny aiohttp server run in a thread. Real nodes are
exercised in tests/node/test_cli_client.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from ringkv import cli
from ringkv.client import (
    AsyncClient,
    BadRequest,
    Client,
    ConnectionFailed,
    GetResult,
    RingkvError,
    Timeout,
    Unavailable,
    parse_endpoints,
)
from tests.cluster import free_ports, wait_until
from tests.fake_http import ThreadedApp

Reply = Callable[[web.Request], web.Response]


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"X-Ringkv-Context": "ctx-new"})


def error(status: int, **body: Any) -> Reply:
    return lambda request: web.json_response(body, status=status)


class FakeNode:
    """Records every request and answers with `self.reply`."""

    def __init__(self, keepalive_timeout: float = 75.0) -> None:
        self.reply: Reply = no_content
        self.seen: list[Seen] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = ThreadedApp(app, keepalive_timeout=keepalive_timeout)
        self.url = self._server.url

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body, peer))
        return self.reply(request)

    def open_connections(self) -> int:
        server = self._server.runner.server
        return len(server.connections) if server is not None else 0

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def fake() -> Iterator[FakeNode]:
    node = FakeNode()
    yield node
    node.close()


@pytest.fixture
def closed_url() -> str:
    """A URL nobody listens on."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


# --------------------------------------------------------------------------- encoding


def test_endpoint_forms() -> None:
    eps = parse_endpoints("127.0.0.1:7001, http://localhost:7002,https://h")
    assert [str(e) for e in eps] == [
        "http://127.0.0.1:7001",
        "http://localhost:7002",
        "https://h:443",
    ]
    assert [str(e) for e in parse_endpoints(["a:1", "http://b:2/"])] == ["http://a:1", "http://b:2"]
    for bad in ("", "ftp://x:1", ","):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("plain", "/v1/kv/plain"),
        ("a/b c?d#e%", "/v1/kv/a%2Fb%20c%3Fd%23e%25"),
        ("é", "/v1/kv/%C3%A9"),
        (b"\x00\xff/", "/v1/kv/%00%FF%2F"),
    ],
)
def test_key_is_percent_encoded(fake: FakeNode, key: str | bytes, path: str) -> None:
    with Client(fake.url) as client:
        client.put(key, b"v")
        client.delete(key)
    assert [s.raw_path for s in fake.seen] == [path, path]


def test_put_sends_value_context_and_only_given_parameters(fake: FakeNode) -> None:
    with Client(fake.url) as client:
        assert client.put("k", b"\x00value", context="ctx-old", w=2, strict=True) == "ctx-new"
        client.put("k", b"", consistency="strong")
        client.delete("k", context="c1", w="all")
        client.delete("k")
    put1, put2, del1, del2 = fake.seen
    assert (put1.method, put1.raw_path, put1.body) == (
        "PUT",
        "/v1/kv/k?w=2&strict=true",
        b"\x00value",
    )
    assert put1.headers["X-Ringkv-Context"] == "ctx-old"
    assert (put2.raw_path, put2.body) == ("/v1/kv/k?consistency=strong", b"")
    assert "X-Ringkv-Context" not in put2.headers
    assert (del1.method, del1.raw_path, del1.headers["X-Ringkv-Context"]) == (
        "DELETE",
        "/v1/kv/k?w=all",
        "c1",
    )
    assert del2.raw_path == "/v1/kv/k"


def test_get_parameters(fake: FakeNode) -> None:
    fake.reply = lambda request: web.Response(body=b"v", headers={"X-Ringkv-Context": "c"})
    with Client(fake.url) as client:
        client.get("k", r="quorum")
        client.get("k", r=1, consistency="eventual", strict=False)
        client.get("k")
    assert [s.raw_path for s in fake.seen] == [
        "/v1/kv/k?r=quorum",
        "/v1/kv/k?r=1&consistency=eventual&strict=false",
        "/v1/kv/k",
    ]


# --------------------------------------------------------------------------- answers


def test_get_value(fake: FakeNode) -> None:
    fake.reply = lambda request: web.Response(body=b"\x01\x02", headers={"x-ringkv-context": "c9"})
    with Client(fake.url) as client:
        assert client.get("k") == GetResult(True, b"\x01\x02", [b"\x01\x02"], "c9")


def test_get_siblings(fake: FakeNode) -> None:
    values = [b"a", b"\xffb"]
    document = {"siblings": [{"value": base64.b64encode(v).decode()} for v in values]}
    fake.reply = lambda request: web.json_response(
        document, status=300, headers={"X-Ringkv-Context": "merged"}
    )
    with Client(fake.url) as client:
        assert client.get("k") == GetResult(True, None, values, "merged")


def test_get_missing(fake: FakeNode) -> None:
    fake.reply = error(404, error="not_found", message="no such key")
    with Client(fake.url) as client:
        result = client.get("k")
    assert not result.found
    assert result.value is None
    assert result.siblings == []


def test_status_ring_health(fake: FakeNode) -> None:
    fake.reply = lambda request: web.json_response({"path": request.path})
    with Client(fake.url) as client:
        assert client.status() == {"path": "/v1/status"}
        assert client.ring() == {"path": "/v1/ring"}
        assert client.health()
        fake.reply = error(503, error="unavailable", message="starting")
        assert not client.health()
        fake.reply = error(404, error="not_found", message="no ring here")
        with pytest.raises(RingkvError) as info:
            client.ring()
        assert info.value.status == 404


def test_health_false_when_unreachable(closed_url: str) -> None:
    with Client(closed_url, timeout=1) as client:
        assert not client.health()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", BadRequest),
        (413, "value_too_large", BadRequest),
        (414, "key_too_long", BadRequest),
        (409, "conflict", RingkvError),
    ],
)
def test_error_answers(fake: FakeNode, status: int, code: str, cls: type[RingkvError]) -> None:
    fake.reply = error(status, error=code, message="nope", extra=1)
    with Client(fake.url) as client, pytest.raises(cls) as info:
        client.put("k", b"v")
    assert type(info.value) is cls
    assert (info.value.status, info.value.code, info.value.message) == (status, code, "nope")
    assert info.value.body == {"error": code, "message": "nope", "extra": 1}
    assert "nope" in str(info.value)


def test_unavailable_and_timeout_details(fake: FakeNode) -> None:
    with Client(fake.url) as client:
        fake.reply = error(503, error="unavailable", message="2 of 3 alive", required=3, alive=2)
        with pytest.raises(Unavailable) as unavailable:
            client.get("k", r="all")
        assert (unavailable.value.required, unavailable.value.alive) == (3, 2)

        fake.reply = error(504, error="timeout", message="slow", required=2, acks=1)
        with pytest.raises(Timeout) as timeout:
            client.delete("k")
        assert (timeout.value.required, timeout.value.acks) == (2, 1)


def test_error_without_json_body(fake: FakeNode) -> None:
    fake.reply = lambda request: web.Response(status=500, text="boom")
    with Client(fake.url) as client, pytest.raises(RingkvError) as info:
        client.get("k")
    assert (info.value.status, info.value.code, info.value.message) == (500, "http_500", "boom")


# --------------------------------------------------------------------------- endpoints


def test_fails_over_to_the_next_endpoint(fake: FakeNode, closed_url: str) -> None:
    with Client([closed_url, fake.url], timeout=2) as client:
        assert client.put("k", b"v") == "ctx-new"
        assert client.put("k", b"v") == "ctx-new"  # goes straight to the endpoint that worked
    assert len(fake.seen) == 2


def test_http_errors_are_not_retried_elsewhere(closed_url: str) -> None:
    first, second = FakeNode(), FakeNode()
    try:
        first.reply = error(503, error="unavailable", message="x", required=3, alive=1)
        with Client([first.url, second.url]) as client, pytest.raises(Unavailable):
            client.put("k", b"v")
        assert (len(first.seen), len(second.seen)) == (1, 0)
    finally:
        first.close()
        second.close()


def test_no_endpoint_reachable(closed_url: str) -> None:
    with (
        Client([closed_url, closed_url], timeout=1) as client,
        pytest.raises(ConnectionFailed) as e,
    ):
        client.get("k")
    assert e.value.status == 0
    assert e.value.code == "connection_failed"
    assert closed_url in str(e.value)


def test_keep_alive_connection_is_reused(fake: FakeNode) -> None:
    with Client(fake.url) as client:
        for _ in range(5):
            client.put("k", b"v")
    assert len({s.peer for s in fake.seen}) == 1


def test_recovers_when_the_server_closes_an_idle_connection() -> None:
    node = FakeNode(keepalive_timeout=0.05)
    try:
        with Client(node.url) as client:
            client.put("k", b"v")
            wait_until(lambda: node.open_connections() == 0, 5, message="idle connection closed")
            assert client.put("k", b"v") == "ctx-new"
        assert len({s.peer for s in node.seen}) == 2
    finally:
        node.close()


def test_threads_share_a_client(fake: FakeNode) -> None:
    fake.reply = lambda request: web.Response(body=request.raw_path.encode())
    with Client(fake.url) as client, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: client.get(f"k{i}").value, range(40)))
    assert results == [f"/v1/kv/k{i}".encode() for i in range(40)]


# --------------------------------------------------------------------------- async client


def test_async_client(fake: FakeNode, closed_url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient([closed_url, fake.url], timeout=2) as client:
            assert await client.put("a/b", b"v", context="c0", w="quorum") == "ctx-new"
            fake.reply = lambda request: web.Response(body=b"v", headers={"X-Ringkv-Context": "c"})
            assert await client.get(b"\xff", r=2) == GetResult(True, b"v", [b"v"], "c")
            fake.reply = error(404, error="not_found", message="gone")
            assert not (await client.get("k")).found
            fake.reply = error(503, error="unavailable", message="m", required=3, alive=1)
            with pytest.raises(Unavailable) as info:
                await client.delete("k", consistency="strong")
            assert info.value.alive == 1
            fake.reply = lambda request: web.json_response({"ok": True})
            assert await client.status() == {"ok": True}
            assert await client.health()

    asyncio.run(scenario())
    assert [s.raw_path for s in fake.seen] == [
        "/v1/kv/a%2Fb?w=quorum",
        "/v1/kv/%FF?r=2",
        "/v1/kv/k",
        "/v1/kv/k?consistency=strong",
        "/v1/status",
        "/health/ready",
    ]
    assert fake.seen[0].headers["X-Ringkv-Context"] == "c0"
    assert fake.seen[0].body == b"v"


def test_async_client_no_endpoint(closed_url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(closed_url, timeout=1) as client:
            assert not await client.health()
            with pytest.raises(ConnectionFailed):
                await client.put("k", b"v")

    asyncio.run(scenario())


# --------------------------------------------------------------------------- CLI without a node


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["get"]) == 2
    assert cli.main(["get", "k", "--bogus"]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["get", "k", "--endpoint", "ftp://x"]) == 2
    assert "ringkv: error:" in capsys.readouterr().err


def test_cli_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out
    assert "--fail-on-siblings" in out


def test_cli_unreachable_exits_3(closed_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["get", "k", "--endpoint", closed_url, "--timeout", "1"]) == 3
    assert capsys.readouterr().err.startswith("ringkv: error: no endpoint reachable")


def test_cli_json_error_mapping(fake: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    fake.reply = error(414, error="key_too_long", message="key is 300 bytes")
    assert cli.main(["put", "k", "v", "--endpoint", fake.url]) == 2
    fake.reply = error(504, error="timeout", message="1 of 2", required=2, acks=1)
    assert cli.main(["delete", "k", "--endpoint", fake.url]) == 3
    fake.reply = lambda request: web.Response(status=500, text="boom")
    assert cli.main(["status", "--endpoint", fake.url]) == 5
    err = capsys.readouterr().err
    assert "ringkv: error: key is 300 bytes" in err
    assert "boom" in err


def test_format_status() -> None:
    status = {
        "node": {"id": "n1", "zone": "z1", "address": "127.0.0.1:7001", "state": "normal"},
        "cluster": {"replication_factor": 3, "conflict_mode": "siblings"},
        "members": [
            {"id": "n1", "zone": "z1", "address": "a:1", "state": "normal", "alive": True,
             "ownership": 0.3333, "phi": None},
            {"id": "n2", "zone": "z2", "address": "a:2", "state": "normal", "alive": False,
             "ownership": 0.6667, "phi": 8.25},
        ],
    }  # fmt: skip
    text = cli.format_status(status)
    assert "replication factor 3" in text
    table = text.splitlines()[-3:]
    assert table[0].split() == ["ID", "ZONE", "ADDRESS", "STATE", "ALIVE", "OWNERSHIP", "PHI"]
    assert table[1].split() == ["n1", "z1", "a:1", "normal", "yes", "33.3%", "-"]
    assert table[2].split() == ["n2", "z2", "a:2", "normal", "no", "66.7%", "8.2"]
    status["members"] = [dict(m, phi=None) for m in status["members"]]  # type: ignore[attr-defined]
    assert "PHI" not in cli.format_status(status)
    assert json.dumps(status)  # the --json form is the document itself


def test_ring_view_routes_keys_to_their_replicas() -> None:
    from ringkv.client import RingView
    from ringkv.core.placement import preference_list
    from ringkv.core.ring import Ring, initial_tokens, key_hash

    tokens = {f"n{i}": initial_tokens(f"n{i}", 16) for i in range(1, 5)}
    zones = {f"n{i}": f"z{i}" for i in range(1, 5)}
    answer = {
        "version": "x",
        "replication_factor": 2,
        "nodes": [
            {
                "id": node,
                "zone": zones[node],
                "address": f"127.0.0.1:{7000 + int(node[1:])}",
                "alive": node != "n4",
                "tokens": [str(t) for t in tokens[node]],
            }
            for node in tokens
        ],
    }
    view = RingView(answer)
    ring = Ring(tokens, zones)
    for i in range(200):
        key = f"key-{i}"
        expected = [
            7000 + int(r.node[1:])
            for r in preference_list(ring, key_hash(key.encode()), 2)
            if r.node != "n4"  # not alive: not routed to
        ]
        assert [e.port for e in view.replicas(key)] == expected
    assert RingView({"nodes": []}).replicas("k") == []
