"""Conditional writes and overwrites on a real 3-node cluster: If-None-Match: *, If-Match with a
context, If-Match: * (replace), their errors, the CLI flags, and two clients racing."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringkv.client import AsyncClient, BadRequest, Client, PreconditionFailed
from ringkv.core.versions import VClock, encode_context
from tests.cluster import HOST, Cluster
from tests.node.test_cli_client import ringkv

#: A context whose clock entry is a year ahead of any node's clock.
FORGED = encode_context(VClock({"x#1": (1, int(time.time() * 1000) + 365 * 86400 * 1000)}))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("conditional")), nodes=3).start()
    yield cluster
    cluster.stop()


def raw(
    cluster: Cluster,
    method: str,
    key: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
    node: int = 0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, cluster.node(node).port, timeout=10)
    try:
        path = f"/v1/kv/{key}" + (f"?{query}" if query else "")
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_if_none_match_creates_only_once(cluster: Cluster) -> None:
    kv = cluster.client(0)
    kv.put("create", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed) as failed:
        cluster.client(1).put("create", b"second", if_none_match=True)
    assert failed.value.status == 412 and failed.value.code == "precondition_failed"
    assert failed.value.context  # what the node saw, to read again or write over
    assert cluster.client(2).get("create", r="all").siblings == [b"first"]
    # after a delete, the key is absent again: a create passes and leaves no tombstone sibling
    kv.delete("create")
    cluster.client(2).put("create", b"again", if_none_match=True)
    got = kv.get("create", r="all")
    assert got.value == b"again"


def test_if_match_writes_only_over_the_version_read(cluster: Cluster) -> None:
    kv, other = cluster.client(0), cluster.client(2)
    kv.put("cas", b"v1")
    read = kv.get("cas")
    other.put("cas", b"v2", if_match=read.context)
    with pytest.raises(PreconditionFailed):
        kv.put("cas", b"v3", if_match=read.context)  # stale: v2 was written since
    with pytest.raises(PreconditionFailed):
        kv.delete("cas", if_match=read.context)
    assert kv.get("cas", r="all").siblings == [b"v2"]
    current = kv.get("cas")
    kv.delete("cas", if_match=current.context)
    assert not kv.get("cas", r="all").found


def test_if_match_star_overwrites_without_siblings(cluster: Cluster) -> None:
    """The cache-like workload: write the same key over and over without reading it. Blind
    writes pile up siblings until --max-siblings refuses them; If-Match: * never does."""
    for i in range(120):  # more than --max-siblings (100)
        status, _, body = raw(cluster, "PUT", "cache", b"v%d" % i, {"If-Match": "*"},
                              node=i % 3)  # fmt: skip
        assert status == 204, body
    assert cluster.client(1).get("cache", r="all").siblings == [b"v119"]
    # If-Match: * also creates an absent key
    cluster.client(0).put("fresh", b"x", replace=True)
    assert cluster.client(0).get("fresh").value == b"x"
    # while blind writes (the default) keep every one of them as a sibling
    for i in range(3):
        cluster.client(i).put("blind", b"b%d" % i)
    assert len(cluster.client(0).get("blind", r="all").siblings) == 3


def test_412_body_and_bad_conditions(cluster: Cluster) -> None:
    raw(cluster, "PUT", "c412", b"x")
    status, headers, body = raw(cluster, "PUT", "c412", b"y", {"If-None-Match": "*"})
    assert status == 412 and headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert document["error"] == "precondition_failed" and document["message"]
    assert document["context"]
    bad = [
        ("PUT", {"If-None-Match": "xyz"}),
        ("PUT", {"If-None-Match": "*", "If-Match": "*"}),
        ("PUT", {"If-Match": "not a context!"}),
        ("PUT", {"If-Match": "*", "X-Ringkv-Context": document["context"]}),
        ("DELETE", {"If-None-Match": "*"}),
        ("PUT", {"If-Match": FORGED}),  # a clock far ahead, as refused in X-Ringkv-Context
        ("DELETE", {"If-Match": FORGED}),
    ]
    for method, headers_ in bad:
        status, _, body = raw(cluster, method, "c412", b"z", headers_)
        assert status == 400, (headers_, body)
        assert json.loads(body)["error"] == "bad_request"
    assert cluster.client(0).get("c412", r="all").siblings == [b"x"]  # nothing written
    with pytest.raises(ValueError):
        cluster.client(0).put("c412", b"z", replace=True, context=document["context"])
    with pytest.raises(BadRequest):
        cluster.client(0).put("c412", b"z", if_match="####")


def test_strong_conditional_writes_see_every_strong_write(cluster: Cluster) -> None:
    kv = cluster.client(1)
    kv.put("strong", b"a", consistency="strong", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        cluster.client(2).put("strong", b"b", consistency="strong", if_none_match=True)


def test_async_client_conditions(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(cluster.urls[0]) as kv:
            await kv.put("async-cond", b"1", if_none_match=True)
            with pytest.raises(PreconditionFailed):
                await kv.put("async-cond", b"2", if_none_match=True)
            got = await kv.get("async-cond")
            await kv.put("async-cond", b"3", if_match=got.context)
            await kv.put("async-cond", b"4", replace=True)
            assert (await kv.get("async-cond", r="all")).siblings == [b"4"]
            with pytest.raises(PreconditionFailed):
                await kv.delete("async-cond", if_match=got.context)

    asyncio.run(scenario())


def test_cli_conditional_flags(cluster: Cluster) -> None:
    endpoint = ("--endpoint", cluster.urls[0])
    assert ringkv("put", "cli-cond", "a", "--if-none-match", *endpoint).returncode == 0
    refused = ringkv("put", "cli-cond", "b", "--if-none-match", *endpoint)
    assert refused.returncode == 6 and b"412" in refused.stderr
    got = json.loads(ringkv("get", "cli-cond", "--json", *endpoint).stdout)
    assert ringkv("put", "cli-cond", "c", "--if-match", got["context"], *endpoint).returncode == 0
    assert ringkv("put", "cli-cond", "d", "--if-match", got["context"], *endpoint).returncode == 6
    assert ringkv("delete", "cli-cond", "--if-match", got["context"], *endpoint).returncode == 6
    for i in range(3):
        assert ringkv("put", "cli-cond", f"r{i}", "--replace", *endpoint).returncode == 0
    assert ringkv("get", "cli-cond", *endpoint).stdout == b"r2"
    both = ringkv("put", "cli-cond", "x", "--replace", "--if-none-match", *endpoint)
    assert both.returncode == 2


def race(
    cluster: Cluster, keys: list[str], attempt: object, prepare: object = None
) -> list[dict[str, bytes]]:
    """Two clients (threads, each bound to a different node) run ``attempt(client, key, value,
    prepared)`` on every key at the same moment, ``prepared`` being what ``prepare(client,
    key)`` returned before both were released; returns what each got acknowledged, per key."""
    acknowledged: list[dict[str, bytes]] = [{}, {}]
    barrier = threading.Barrier(2)

    def run(me: int) -> None:
        with Client(cluster.urls[me], timeout=10) as client:
            for key in keys:
                prepared = prepare(client, key) if prepare else None  # type: ignore[operator]
                barrier.wait(timeout=30)
                value = b"%s-from-%d" % (key.encode(), me)
                try:
                    attempt(client, key, value, prepared)  # type: ignore[operator]
                except PreconditionFailed:
                    continue
                acknowledged[me][key] = value

    threads = [threading.Thread(target=run, args=(me,)) for me in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return acknowledged


def test_conditional_writes_racing_from_two_clients_lose_nothing(cluster: Cluster) -> None:
    """Both outcomes are legal -- one write refused (412), or both accepted as siblings -- but
    every acknowledged write is in the final read, and at least one write always succeeds."""
    creates = [f"race-create-{i}" for i in range(40)]
    acked = race(cluster, creates, lambda c, k, v, _: c.put(k, v, if_none_match=True))
    both = 0
    for key in creates:
        wrote = [a[key] for a in acked if key in a]
        assert wrote, f"{key}: neither create passed"
        final = cluster.client(2).get(key, r="all").siblings
        assert sorted(final) == sorted(wrote), key
        both += len(wrote) == 2

    updates = [f"race-update-{i}" for i in range(40)]
    for key in updates:
        cluster.client(2).put(key, b"original", w="all")

    def update(client: Client, key: str, value: bytes, context: str) -> None:
        client.put(key, value, if_match=context)

    # both read before either writes: each If-Match names the original version
    acked = race(cluster, updates, update, lambda client, key: client.get(key).context)
    for key in updates:
        wrote = [a[key] for a in acked if key in a]
        assert wrote, f"{key}: neither update passed"
        final = cluster.client(2).get(key, r="all").siblings
        assert sorted(final) == sorted(wrote), key
    print(f"{both} of {len(creates)} racing creates both passed (siblings)")
