"""Key listing (GET /v1/keys) on real processes: every live key exactly once, in ring order,
across a join and with a node killed mid-scan; prefixes, deletes and expiry; bad parameters;
the CLI and the async client."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ringkv.client import AsyncClient, Client
from ringkv.core.ring import key_hash
from tests.cluster import Cluster, wait_until
from tests.node.test_cli_client import ringkv
from tests.node.test_failures import seen_down

pytestmark = pytest.mark.slow


def test_listing_across_a_join_and_a_node_killed_mid_scan(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, nodes=4, zones=3)
    try:
        for i in range(3):
            cluster.node(i).start()
        cluster.wait_ready(60)
        keys = {f"list-{i}".encode() for i in range(600)}
        writer = cluster.client(0)
        for chunk in range(0, 600, 100):
            batch = sorted(keys)[chunk : chunk + 100]
            assert all(isinstance(c, str) for c in writer.put_many({k: b"v" for k in batch},
                                                                 w="all").values())  # fmt: skip
        deleted = {f"gone-{i}".encode() for i in range(20)}
        writer.put_many({k: b"v" for k in deleted}, w="all")
        writer.delete_many(sorted(deleted), w="all")

        listed: list[bytes] = []
        cursor: str | None = None
        # n1 serves the listing, n3 is the client's fallback endpoint
        with Client([cluster.urls[0], cluster.urls[2]], timeout=10) as lister:
            for page in range(100):  # bounded: 620 keys / 40 per page is 16 pages
                if page == 3:
                    cluster.node(3).start()  # n4 joins while the scan goes on
                if page == 6:
                    wait_until(lambda: cluster.client(0).status()["cluster"]["ring_nodes"] == 4,
                               60, message="n4 in the ring")  # fmt: skip
                if page == 8:
                    cluster.node(1).kill()  # n2 dies; nobody has noticed yet
                got, cursor = lister.keys(limit=40, cursor=cursor)
                assert len(got) <= 40
                listed.extend(got)
                if cursor is None:
                    break
        assert cursor is None, "the listing did not finish"
        assert len(listed) == len(set(listed)), "a key was listed twice"
        assert set(listed) == keys, (len(set(listed)), sorted(keys - set(listed))[:5])
        positions = [(key_hash(k), k) for k in listed]
        assert positions == sorted(positions)  # ring order
    finally:
        cluster.stop()


def test_prefixes_expiry_clients_and_cli(cluster3: Cluster) -> None:
    kv = cluster3.client(1)
    kv.put_many({f"user:{i}": b"u" for i in range(30)} | {f"order:{i}": b"o" for i in range(30)})
    kv.put(b"user:\xff\x00binary", b"b")
    kv.put("user:short-lived", b"x", ttl=1)
    users = set(kv.iter_keys(prefix="user:", page_size=7))
    assert {f"user:{i}".encode() for i in range(30)} <= users
    assert b"user:\xff\x00binary" in users
    assert not any(k.startswith(b"order:") for k in users)
    wait_until(lambda: b"user:short-lived" not in set(kv.iter_keys(prefix="user:")), 15,
               message="the expired key no longer listed")  # fmt: skip
    everything = list(kv.iter_keys())
    assert len(everything) == len(set(everything)) == 61

    async def listed() -> list[bytes]:
        async with AsyncClient(cluster3.urls[2]) as client:
            return [k async for k in client.iter_keys(prefix="order:", page_size=11)]

    assert sorted(asyncio.run(listed())) == sorted(f"order:{i}".encode() for i in range(30))

    out = ringkv("keys", "--prefix", "order:1", "--endpoint", cluster3.urls[0])
    assert out.returncode == 0
    assert sorted(out.stdout.split()) == sorted(
        [b"order:1"] + [f"order:1{i}".encode() for i in range(10)]
    )
    limited = ringkv("keys", "--limit", "5", "--page-size", "2", "--endpoint", cluster3.urls[0])
    assert limited.returncode == 0 and len(limited.stdout.split()) == 5

    for query in ("limit=0", "limit=5000", "limit=x", "cursor=!!", "bogus=1", "limit=1&limit=2",
                  "encoding=hex"):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(f"{cluster3.urls[0]}/v1/keys?{query}", timeout=5)
        assert bad.value.code == 400
        assert json.loads(bad.value.read())["error"] == "bad_request"


def test_listing_at_a_quorum_merges_replicas_and_checks_versions(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """n3 misses a write and a delete (no hints, no anti-entropy). Listed through n3 from its
    own copy, the new key is missing and the deleted one still shows; with r=quorum the
    listing merges two replicas per range and reads the versions, so both come out right."""
    cluster = make_cluster(extra_args=["--anti-entropy-interval", "0", "--hint-window", "0.01"])
    kv = cluster.client(0)
    kv.put_many({f"q-{i}": b"v" for i in range(40)}, w="all")
    cluster.node(2).kill()
    seen_down(cluster, 0, "n3")
    kv.put("q-new", b"v", w="quorum")
    kv.delete("q-0", w="quorum")
    cluster.node(2).start().wait_ready()
    cluster.wait_ready()
    via_n3 = cluster.client(2)
    plain = set(via_n3.iter_keys(prefix="q-"))
    assert b"q-new" not in plain and b"q-0" in plain  # one replica's view: n3's own
    merged = set(via_n3.iter_keys(prefix="q-", r="quorum"))
    assert merged == {f"q-{i}".encode() for i in range(1, 40)} | {b"q-new"}
