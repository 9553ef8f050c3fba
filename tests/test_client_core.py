"""ringkv.client_core without sockets: each call is driven by hand (what it asks to send, the
answer fed back), so request encoding, answer parsing, endpoint failover, token-aware routing,
ring refresh and the cache decisions are checked exactly, with a fake clock."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ringkv.client_cache import ClientCache
from ringkv.client_core import (
    Answer,
    BadRequest,
    Call,
    ClientCore,
    ConnectionFailed,
    GetResult,
    PreconditionFailed,
    Reply,
    Request,
    RingkvError,
    RingView,
    Timeout,
    Unavailable,
    Unreachable,
    _Endpoint,
    error_from_response,
    parse_endpoints,
)
from ringkv.core.batching import MAX_BATCH_KEYS
from ringkv.core.placement import preference_list, replica_loads
from ringkv.core.ring import RING_SIZE, Ring, initial_tokens, key_hash
from tests.test_layering import SERVER_LIBRARIES, imported_modules

CORE_FILE = Path(__file__).resolve().parent.parent / "src" / "ringkv" / "client_core.py"

Responder = Callable[[_Endpoint, Request], Reply]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(status: int = 204, body: bytes = b"", **headers: str) -> Answer:
    return status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, body


def json_answer(status: int, document: Any) -> Answer:
    return status, {"content-type": "application/json"}, json.dumps(document).encode()


class Driver:
    """Runs calls of one core, answering every send with ``respond`` and recording them."""

    def __init__(self, core: ClientCore, respond: Responder) -> None:
        self.core = core
        self.respond = respond
        self.sent: list[tuple[str, Request]] = []

    def run(self, call: Call[Any]) -> Any:
        try:
            endpoint, request = next(call)
            while True:
                self.sent.append((str(endpoint), request))
                endpoint, request = call.send(self.respond(endpoint, request))
        except StopIteration as done:
            return done.value


def make_core(endpoints: str = "a:1,b:2", clock: Clock | None = None, **kwargs: Any) -> ClientCore:
    return ClientCore(parse_endpoints(endpoints), clock=clock or Clock(), **kwargs)


def always(reply: Reply) -> Responder:
    return lambda endpoint, request: reply


# --------------------------------------------------------------------------- purity


def test_the_core_does_no_io() -> None:
    """Sans-I/O: no sockets, HTTP libraries, event loop, threads, clock or environment."""
    forbidden = SERVER_LIBRARIES | {"socket", "ssl", "http", "asyncio", "threading", "time",
                                    "os", "yarl", "selectors", "urllib.request"}  # fmt: skip
    bad = [
        f"line {line}: {module}"
        for line, module in imported_modules(CORE_FILE)
        if module.split(".")[0] in forbidden or module in forbidden
    ]
    assert not bad


# --------------------------------------------------------------------------- requests


def test_put_request_and_result() -> None:
    core = make_core("a:1", token="secret")
    drive = Driver(core, always(answer(204, x_ringkv_context="ctx-new")))
    call = core.put("a/b", b"\x00v", context="c0", w=2, strict=True, ttl=60)
    assert drive.run(call) == "ctx-new"
    [(endpoint, request)] = drive.sent
    assert endpoint == "http://a:1"
    assert (request.method, request.path, request.body) == (
        "PUT",
        "/v1/kv/a%2Fb?w=2&strict=true&ttl=60",
        b"\x00v",
    )
    assert request.headers == {"Authorization": "Bearer secret", "X-Ringkv-Context": "c0"}


def test_write_conditions_are_exclusive() -> None:
    core = make_core()
    with pytest.raises(ValueError):
        Driver(core, always(answer())).run(core.put("k", b"v", context="c", replace=True))
    drive = Driver(core, always(answer()))
    drive.run(core.put("k", b"v", if_none_match=True))
    drive.run(core.put("k", b"v", replace=True))
    drive.run(core.delete("k", if_match="c1"))
    assert [r.headers for _, r in drive.sent] == [
        {"If-None-Match": "*"},
        {"If-Match": "*"},
        {"If-Match": "c1"},
    ]


def test_get_answers() -> None:
    core = make_core()
    value = Driver(
        core, always(answer(200, b"v", x_ringkv_context="c", etag='"e"', x_ringkv_ttl="9"))
    )
    assert value.run(core.get("k", r="all")) == GetResult(True, b"v", [b"v"], "c", 9, '"e"')
    assert value.sent[0][1].path == "/v1/kv/k?r=all"
    x, y = (base64.b64encode(v).decode() for v in (b"x", b"y"))
    siblings = {"siblings": [{"value": x, "ttl": 5}, {"value": None}, {"value": y}]}
    many = Driver(core, always(json_answer(300, siblings)))
    assert many.run(core.get("k")) == GetResult(True, None, [b"x", b"y"], None, ttl=5)
    missing = Driver(core, always(json_answer(404, {"error": "not_found", "message": "m"})))
    assert not missing.run(core.get("k")).found
    same = Driver(core, always(answer(304, etag='"e"')))
    assert same.run(core.get("k", if_none_match='"e"')).not_modified
    assert same.sent[0][1].headers == {"If-None-Match": '"e"'}


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (413, BadRequest),
        (414, BadRequest),
        (412, PreconditionFailed),
        (503, Unavailable),
        (504, Timeout),
        (409, RingkvError),
        (500, RingkvError),
    ],
)
def test_error_mapping(status: int, cls: type[RingkvError]) -> None:
    body = {"error": "code", "message": "why", "required": 3, "alive": 1}
    error = error_from_response(status, json.dumps(body).encode())
    assert type(error) is cls
    assert (error.status, error.code, error.message, error.body) == (status, "code", "why", body)
    plain = error_from_response(status, b"just text")
    assert (type(plain), plain.code, plain.message) == (cls, f"http_{status}", "just text")
    core = make_core()
    with pytest.raises(cls):
        Driver(core, always(json_answer(status, body))).run(core.delete("k"))


def test_batches_are_chunked_and_mapped_per_key() -> None:
    core = make_core()
    keys = [f"k{i}" for i in range(MAX_BATCH_KEYS + 5)]

    def respond(endpoint: _Endpoint, request: Request) -> Reply:
        sent = json.loads(request.body or b"")["keys"]
        results = [{"status": 404} if i % 2 else
                   {"status": 200, "value": base64.b64encode(b"v").decode(), "context": "c"}
                   for i in range(len(sent))]  # fmt: skip
        results[0] = {"status": 503, "error": "unavailable", "message": "m", "required": 2}
        return json_answer(200, {"results": results})

    drive = Driver(core, respond)
    out = drive.run(core.get_many(keys, r=1))
    assert [len(json.loads(r.body or b"")["keys"]) for _, r in drive.sent] == [MAX_BATCH_KEYS, 5]
    assert {r.path for _, r in drive.sent} == {"/v1/batch/get?r=1"}
    assert list(out) == keys
    assert isinstance(out["k0"], Unavailable) and out["k0"].required == 2
    assert out["k2"] == GetResult(True, b"v", [b"v"], "c")
    assert out["k1"] == GetResult(False, None, [], None)

    results = [{"status": 204, "context": "c"}, {"status": 412, "error": "precondition_failed"}]
    writes = Driver(core, always(json_answer(200, {"results": results})))
    done = writes.run(core.put_many({"a": b"1", "b": b"2"}, if_none_match=True, ttl=5, w=2))
    assert done["a"] == "c" and isinstance(done["b"], PreconditionFailed)
    [(_, request)] = writes.sent
    assert request.path == "/v1/batch/put?w=2"
    assert json.loads(request.body or b"")["items"][0] == {
        "key": base64.b64encode(b"a").decode(), "value": base64.b64encode(b"1").decode(),
        "if_none_match": True, "ttl": 5}  # fmt: skip
    with pytest.raises(RingkvError, match="one result per key"):
        Driver(core, always(json_answer(200, {"results": []}))).run(core.delete_many(["a"]))


def test_keys_page_and_admin_documents() -> None:
    core = make_core()
    page = {"keys": [base64.b64encode(b"p:1").decode()], "cursor": "next"}
    drive = Driver(core, always(json_answer(200, page)))
    assert drive.run(core.keys("p:", 10, "cur", r=2)) == ([b"p:1"], "next")
    assert drive.sent[0][1].path == "/v1/keys?encoding=base64&r=2&prefix=p%3A&limit=10&cursor=cur"
    drive.run(core.admin("decommission", "n2"))
    drive.run(core.cleanup())
    drive.run(core.plan("join", "n4"))
    assert [(r.method, r.path, r.body) for _, r in drive.sent[1:]] == [
        ("POST", "/v1/admin/decommission", b'{"node": "n2"}'),
        ("POST", "/v1/admin/cleanup", b"{}"),
        ("POST", "/v1/admin/plan", b'{"op": "join", "node": "n4"}'),
    ]
    with pytest.raises(RingkvError, match="JSON object"):
        Driver(core, always(json_answer(200, [1]))).run(core.status())


# --------------------------------------------------------------------------- endpoints


def test_failover_remembers_the_endpoint_that_answered() -> None:
    core = make_core("a:1,b:2,c:3")
    down = {"http://a:1"}
    drive = Driver(core, lambda e, r: Unreachable("refused") if str(e) in down else answer())
    drive.run(core.delete("k"))
    drive.run(core.delete("k"))
    assert [e for e, _ in drive.sent] == ["http://a:1", "http://b:2", "http://b:2"]
    down.update({"http://b:2", "http://c:3"})
    with pytest.raises(ConnectionFailed) as failed:
        drive.run(core.put("k", b"v"))
    assert str(failed.value) == (
        "no endpoint reachable: http://b:2: refused; http://c:3: refused; http://a:1: refused"
    )
    assert not Driver(core, always(Unreachable("x"))).run(core.health())
    assert Driver(core, always(answer(200))).run(core.health())


def test_an_http_error_is_not_retried_elsewhere() -> None:
    core = make_core("a:1,b:2")
    drive = Driver(core, always(json_answer(503, {"error": "unavailable"})))
    with pytest.raises(Unavailable):
        drive.run(core.put("k", b"v"))
    assert len(drive.sent) == 1


# --------------------------------------------------------------------------- token-aware routing


NODES = [f"n{i}" for i in range(1, 6)]


def ring_answer(n: int = 3, vnodes: int = 4, down: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        "version": "v1",
        "replication_factor": n,
        "nodes": [
            {"id": node, "zone": f"z{i}", "address": f"10.0.0.{i}:7000", "alive": node not in down,
             "tokens": [str(t) for t in initial_tokens(node, vnodes)]}
            for i, node in enumerate(NODES, start=1)
        ],
    }  # fmt: skip


def the_ring(vnodes: int = 4) -> Ring:
    return Ring(
        {node: list(initial_tokens(node, vnodes)) for node in NODES},
        {node: f"z{i}" for i, node in enumerate(NODES, start=1)},
    )


def node_of(endpoint: _Endpoint | str) -> str:
    return f"n{str(endpoint).split(':')[1].rsplit('.', 1)[1]}"


def test_coordinator_is_the_replica_chosen_by_the_key_hash() -> None:
    view = RingView(ring_answer(), "https")
    ring = the_ring()
    for i in range(300):
        key = f"key-{i}".encode()
        preference = [r.node for r in preference_list(ring, key_hash(key), 3)]
        turn = key_hash(key) % 3
        chosen = [node_of(e) for e in view.coordinators(key)]
        assert chosen == preference[turn:] + preference[:turn]
        assert view.coordinators(key)[0].scheme == "https"
        assert [node_of(e) for e in view.replicas(key)] == preference  # unchanged


def test_coordinators_are_spread_like_the_replica_load() -> None:
    """Each node coordinates about its share of the replica load, not its primary ownership
    (on this ring they differ, which the first replica alone would follow)."""
    view, ring, keys = RingView(ring_answer()), the_ring(), 6000
    loads = replica_loads(ring, 3)
    expected = {node: loads[node] / (3 * RING_SIZE) for node in NODES}
    coordinated = Counter(node_of(view.coordinators(f"k{i}")[0]) for i in range(keys))
    first = Counter(node_of(view.replicas(f"k{i}")[0]) for i in range(keys))
    error = max(abs(coordinated[n] / keys - expected[n]) for n in NODES)
    first_error = max(abs(first[n] / keys - expected[n]) for n in NODES)
    assert error < 0.03, (coordinated, expected)
    assert first_error > 0.05, "this ring must tell the two rules apart"


def test_a_key_keeps_its_coordinator_while_another_replica_is_down() -> None:
    up, down = RingView(ring_answer()), RingView(ring_answer(down=frozenset({"n3"})))
    moved = 0
    for i in range(500):
        key = f"k{i}"
        before, after = up.coordinators(key), down.coordinators(key)
        assert "n3" not in {node_of(e) for e in after}
        if node_of(before[0]) != "n3":
            assert after[0] == before[0]
        else:
            moved += 1
            assert after[0] == before[1]
    assert moved > 0


def test_token_aware_fetches_the_ring_and_refreshes_it() -> None:
    clock = Clock()
    core = make_core("seed:7000", clock, token_aware=True, ring_refresh=10.0)
    down: set[str] = set()

    def respond(endpoint: _Endpoint, request: Request) -> Reply:
        if str(endpoint) in down:
            return Unreachable("refused")
        if request.path == "/v1/ring":
            return json_answer(200, ring_answer())
        if request.path == "/v1/status":
            return json_answer(200, {"node": {}})
        return answer(200 if request.method == "GET" else 204, x_ringkv_context="c")

    drive = Driver(core, respond)
    coordinator = str(RingView(ring_answer()).coordinators("key")[0])
    drive.run(core.put("key", b"v"))
    assert [(e, r.path) for e, r in drive.sent] == [
        ("http://seed:7000", "/v1/ring"),
        (coordinator, "/v1/kv/key"),
    ]
    clock.now += 9.9  # within ring_refresh: no new fetch
    drive.run(core.get("key"))
    drive.run(core.status())  # not a key: the endpoints, never a replica, no ring needed
    assert [(e, r.path) for e, r in drive.sent[2:]] == [
        (coordinator, "/v1/kv/key"),
        ("http://seed:7000", "/v1/status"),
    ]
    clock.now += 0.1
    drive.sent.clear()
    drive.run(core.delete("key"))
    assert [r.path for _, r in drive.sent] == ["/v1/ring", "/v1/kv/key"]

    # An unreachable replica: the next replica, and the ring is fetched again at once.
    down.add(coordinator)
    drive.sent.clear()
    drive.run(core.put("key", b"v"))
    second = str(RingView(ring_answer()).coordinators("key")[1])
    assert [e for e, _ in drive.sent] == [coordinator, second]
    drive.sent.clear()
    drive.run(core.put("key", b"v"))
    assert drive.sent[0][1].path == "/v1/ring"


def test_token_aware_without_a_ring_uses_the_endpoints() -> None:
    clock = Clock()
    core = make_core("seed:7000", clock, token_aware=True, ring_refresh=5.0)
    drive = Driver(core, lambda e, r: json_answer(404, {"error": "not_found"})
                   if r.path == "/v1/ring" else answer())  # fmt: skip
    drive.run(core.put("k", b"v"))
    drive.run(core.put("k", b"v"))  # the failed fetch is not repeated before ring_refresh
    assert [(e, r.path) for e, r in drive.sent] == [
        ("http://seed:7000", "/v1/ring"),
        ("http://seed:7000", "/v1/kv/k"),
        ("http://seed:7000", "/v1/kv/k"),
    ]
    clock.now += 5
    drive.run(core.put("k", b"v"))
    assert drive.sent[-2][1].path == "/v1/ring"
    off = make_core("seed:7000", clock)  # token_aware off: never asks for the ring
    only = Driver(off, always(answer()))
    only.run(off.put("k", b"v"))
    assert [r.path for _, r in only.sent] == ["/v1/kv/k"]


# --------------------------------------------------------------------------- the cache


def test_cache_decisions() -> None:
    clock = Clock()
    cache = ClientCache(clock=clock)
    core = make_core("a:1", cache=cache)
    reply: list[Answer] = [answer(200, b"v", x_ringkv_context="c", etag='"e1"')]
    drive = Driver(core, lambda e, r: reply[0])
    first = drive.run(core.get("k"))
    assert (first.value, first.from_cache) == (b"v", False)
    reply[0] = answer(304, etag='"e1"')
    again = drive.run(core.get("k"))
    assert (again.value, again.from_cache) == (b"v", True)
    assert drive.sent[1][1].headers == {"If-None-Match": '"e1"'}
    sent = len(drive.sent)
    clock.now += 1
    stale = drive.run(core.get("k", max_staleness=5))
    assert (stale.from_cache, stale.age, len(drive.sent)) == (True, 1.0, sent)  # no request
    reply[0] = answer(204, x_ringkv_context="c2")
    drive.run(core.put("k", b"w"))
    assert b"k" not in cache
    assert cache.metrics.as_dict() == {
        "hits": 1, "revalidations": 1, "not_modified": 1, "misses": 1, "evictions": 0}  # fmt: skip


def test_a_call_given_up_by_its_transport_leaves_no_read_in_flight() -> None:
    cache = ClientCache(clock=Clock())
    core = make_core("a:1", cache=cache)
    call = core.get("k")
    next(call)
    assert cache._reads  # the read is in flight
    call.close()  # what a transport does on Ctrl-C or a cancelled task
    assert not cache._reads
    write = core.put("k", b"v")
    next(write)
    write.close()
    assert b"k" not in cache


def test_requests_carry_no_authorization_without_a_token() -> None:
    core = make_core("a:1")
    drive = Driver(core, always(answer(200)))
    drive.run(core.health())
    assert drive.sent[0][1].headers == {}


def test_raw_returns_any_answer_as_it_is() -> None:
    core = make_core("a:1,b:2", token="t")
    down = {"http://a:1"}
    drive = Driver(core, lambda e, r: Unreachable("x") if str(e) in down else answer(500, b"boom"))
    assert drive.run(core.raw("POST", "/v1/anything", b"{}", {"X-A": "1"})) == answer(500, b"boom")
    assert drive.sent[-1][1] == Request(
        "POST", "/v1/anything", b"{}", {"Authorization": "Bearer t", "X-A": "1"}
    )
