"""Expiry (TTL) on real clusters: ttl= and --default-ttl, the TTL shown on reads, writes over
expired values, and expiry with a replica down during it (hints, read repair and anti-entropy
must not bring anything back; trees converge; expired records are purged)."""

from __future__ import annotations

import http.client
import json
import urllib.request

import pytest

from ringkv.client import BadRequest
from tests.cluster import HOST, Cluster, wait_until
from tests.node.test_cli_client import ringkv
from tests.node.test_failures import FAST_AE, all_up, pending_hints, seen_down, trees_equal

pytestmark = pytest.mark.slow
#: Expired values are overwritten and purged --max-clock-skew after they expire: 1 s here.
SKEW_1S = ["--max-clock-skew", "1"]


def purged(cluster: Cluster) -> float:
    total = 0.0
    for node in cluster.nodes:
        if not node.running:
            continue
        text = urllib.request.urlopen(node.url + "/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("ringkv_tombstones_purged_total "):
                total += float(line.split()[1])
    return total


def node_rounds(cluster: Cluster, i: int) -> int:
    return int(cluster.client(i).status()["anti_entropy"]["completed_rounds"])


def test_ttl_reads_writes_and_default(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(nodes=1, zones=1, replication_factor=1,
                           extra_args=["--default-ttl", "4"])  # fmt: skip
    kv = cluster.client(0)
    kv.put("forever", b"x", ttl=0)  # ttl=0 overrides the default: never expires
    kv.put("default", b"x")  # --default-ttl 4
    kv.put("short", b"x", ttl=2)
    kv.put("long", b"x", ttl=1000)
    assert kv.get("forever").ttl is None
    assert kv.get("default").ttl in (1, 2, 3, 4)
    assert 900 < kv.get("long").ttl <= 1000  # type: ignore[operator]
    shown = ringkv("get", "long", "--endpoint", cluster.urls[0])
    assert shown.stdout == b"x" and b"ttl: " in shown.stderr
    assert (
        json.loads(ringkv("get", "long", "--json", "--endpoint", cluster.urls[0]).stdout)["ttl"]
        > 900
    )
    wait_until(lambda: not kv.get("short").found, 10, message="short expired")
    expired = kv.get("short")
    assert expired.context  # an expired value leaves a context, as a deleted one does
    # a write with that context replaces it, as it would a tombstone: a single value
    kv.put("short", b"new", context=expired.context, ttl=0)
    got = kv.get("short")
    assert got.siblings == [b"new"] and got.ttl is None
    # creating over an expired value passes If-None-Match: *
    wait_until(lambda: not kv.get("default").found, 15, message="default expired")
    kv.put("default", b"again", if_none_match=True)
    assert kv.get("forever").found
    for bad in ("-1", "x", "1.5", str(10**12)):
        with pytest.raises(BadRequest):
            kv.put("k", b"v", ttl=bad)  # type: ignore[arg-type]
    conn = http.client.HTTPConnection(HOST, cluster.node(0).port, timeout=5)
    conn.request("DELETE", "/v1/kv/k?ttl=5")
    assert conn.getresponse().status == 400  # ttl belongs to PUT only
    conn.close()


def test_siblings_show_their_ttl(cluster3: Cluster) -> None:
    cluster3.client(0).put("sib", b"a", ttl=100)
    cluster3.client(1).put("sib", b"b")
    conn = http.client.HTTPConnection(HOST, cluster3.node(2).port, timeout=5)
    conn.request("GET", "/v1/kv/sib?r=all")
    response = conn.getresponse()
    assert response.status == 300
    siblings = json.loads(response.read())["siblings"]
    conn.close()
    assert sorted(s.get("ttl", 0) > 0 for s in siblings) == [False, True]
    assert 50 < cluster3.client(2).get("sib", r="all").ttl <= 100  # type: ignore[operator]


def test_expiry_with_a_replica_down_during_it(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """n3 holds old values, misses their TTL overwrites and the new TTL keys (hints for it),
    and is down while they expire. After it returns, nothing reads back anywhere -- neither
    the expired values nor the old ones under them -- the trees converge, and the expired
    records are purged on every replica, once."""
    cluster = make_cluster(extra_args=[*FAST_AE, "--tombstone-grace", "30", *SKEW_1S])
    old = [f"old-{i}" for i in range(20)]
    for key in old:
        cluster.client(0).put(key, b"old", w="all")
    cluster.node(2).kill()
    seen_down(cluster, 0, "n3")
    for key in old:  # a TTL overwrite n3 misses
        context = cluster.client(0).get(key).context
        cluster.client(0).put(key, b"short-lived", context=context, ttl=2)
    fresh = [f"fresh-{i}" for i in range(20)]
    for key in fresh:
        cluster.client(1).put(key, b"short-lived", ttl=2)
    assert cluster.client(1).get(old[0]).value == b"short-lived"
    wait_until(lambda: pending_hints(cluster) >= 40, 10, message="hints for n3")
    everything = old + fresh
    wait_until(lambda: not any(cluster.client(0).get(k).found for k in everything), 15,
               message="expired on the live replicas")  # fmt: skip
    cluster.node(2).start().wait_ready()
    all_up(cluster)

    def nothing_back() -> bool:
        for key in everything:
            for i in range(3):
                got = cluster.client(i).get(key, r="all")  # read repair runs on every read
                assert not got.found, (key, i, got)
        return True

    nothing_back()
    wait_until(lambda: pending_hints(cluster) == 0, 30, message="hints delivered")
    wait_until(lambda: trees_equal(cluster, [0, 1, 2]) or purged(cluster) > 0, 60,
               interval=0.2, message="trees equal (or purging under way)")  # fmt: skip
    nothing_back()
    # purged like tombstones (past the grace period and an exchange with every replica)
    wait_until(lambda: purged(cluster) >= 3 * len(everything), 90, interval=0.5,
               message="expired records purged everywhere")  # fmt: skip
    wait_until(lambda: trees_equal(cluster, [0, 1, 2]), 30, interval=0.2, message="converged")
    # A few more anti-entropy rounds, with no reads: nothing purged is copied back and purged
    # again. (A read at r=all may repair a replica that purged a write-once expired key from one
    # that has not yet: the next purge removes it again; it never reads back.)
    settled = purged(cluster)
    rounds = [node_rounds(cluster, i) for i in range(3)]
    wait_until(lambda: all(node_rounds(cluster, i) >= rounds[i] + 4 for i in range(3)), 30,
               interval=0.2, message="more anti-entropy rounds")  # fmt: skip
    assert purged(cluster) == settled
    assert trees_equal(cluster, [0, 1, 2])
    nothing_back()


def test_expired_values_do_not_pile_up_as_siblings(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Blind writes with a TTL (a cache that never reads first): each write covers the values
    that expired before it, so the key never reaches --max-siblings."""
    import time

    cluster = make_cluster(extra_args=["--max-siblings", "2", *SKEW_1S])
    kv = cluster.client(0)
    for i in range(4):
        kv.put("cache", b"v%d" % i, ttl=1)  # blind: no context, no condition
        written = time.monotonic()
        assert kv.get("cache", r="all").siblings == [b"v%d" % i]
        # wait past the expiry and --max-clock-skew (1 s each) before the next write
        wait_until(lambda w=written: time.monotonic() - w > 2.1, 5, message="expiry + skew")


def test_write_once_expired_keys_are_purged_without_the_grace_period(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A key written once with a TTL superseded nothing: once expired (beyond the allowed skew)
    every replica drops it at its next purge pass, long before --tombstone-grace; a TTL value
    that overwrote another keeps the grace period, like a tombstone."""
    cluster = make_cluster(extra_args=[*FAST_AE, "--tombstone-grace", "60", *SKEW_1S])
    kv = cluster.client(0)
    kv.put("overwritten", b"old", w="all")
    kv.put("overwritten", b"new", ttl=1, replace=True, w="all")  # context covers "old"
    written = kv.put_many({f"once-{i}": b"v" for i in range(30)}, ttl=1, w="all")
    assert all(isinstance(c, str) for c in written.values())
    # purge passes run every min(grace / 4, 60 s) = 15 s here; the grace is 60 s
    wait_until(lambda: purged(cluster) >= 3 * 30, 50, interval=0.5,
               message="write-once expired keys purged on every replica")  # fmt: skip
    assert purged(cluster) == 3 * 30  # not the overwriting TTL value: it waits for the grace
    assert not kv.get("overwritten", r="all").found
    assert set(kv.iter_keys()) == set()
