"""A real 3-node cluster on loopback (3 zones, N=3): reads, writes, failures, siblings, repair."""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import pytest

from ringkv.client import Client, Unavailable
from ringkv.node.config import SETTINGS
from tests.cluster import Cluster, wait_until

LEVELS = [
    {"consistency": "strong"},
    {"consistency": "balanced"},
    {"consistency": "eventual"},
    {"r": "one"},
    {"r": "quorum"},
    {"r": "all"},
    {"r": 1},
    {"r": 2},
    {"r": 3},
]


def metric(node_url: str, name: str) -> float:
    text = urllib.request.urlopen(node_url + "/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"^{name}(\{{.*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def only_node_alive(cluster: Cluster, survivor: int) -> None:
    """Stop every other node and wait until the survivor sees them gone."""
    for i, node in enumerate(cluster.nodes):
        if i != survivor:
            node.kill()

    def others_down() -> bool:
        members = cluster.client(survivor).status()["members"]
        return all(not m["alive"] for m in members if m["id"] != cluster.node(survivor).node_id)

    wait_until(others_down, 10, message="the other nodes to be seen down")


def test_put_get_delete_through_every_node(cluster3: Cluster) -> None:
    for i in range(3):
        key = f"key-via-{i}"
        cluster3.client(i).put(key, f"value-{i}".encode())
        for j in range(3):
            got = cluster3.client(j).get(key)
            assert got.found and got.value == f"value-{i}".encode()
    cluster3.client(2).delete("key-via-0")
    for j in range(3):
        assert not cluster3.client(j).get("key-via-0").found
    assert cluster3.client(0).get("key-via-1").value == b"value-1"


@pytest.mark.parametrize("write_level", [{"consistency": "strong"}, {"w": "quorum"}, {"w": "all"}])
def test_written_through_one_node_read_through_another_at_every_level(
    cluster3: Cluster, write_level: dict[str, str]
) -> None:
    value = b"\x00binary\xff" * 1300  # > 10 KiB, not UTF-8
    cluster3.client(0).put("shared", value, **write_level)  # type: ignore[arg-type]
    for level in LEVELS:
        for reader in (1, 2):
            got = cluster3.client(reader).get("shared", **level)  # type: ignore[arg-type]
            assert got.found and got.value == value, (level, reader)


def test_eventual_write_is_readable_by_all_replicas_eventually(cluster3: Cluster) -> None:
    cluster3.client(1).put("ev", b"1", consistency="eventual")
    wait_until(lambda: cluster3.client(2).get("ev", r="all").value == b"1", 5, message="ev")


def test_one_node_killed_quorum_works_and_all_is_unavailable(cluster3: Cluster) -> None:
    c = cluster3.client(0)
    c.put("before", b"b")
    cluster3.node(2).kill()
    wait_until(
        lambda: not any(m["alive"] for m in c.status()["members"] if m["id"] == "n3"),
        10,
        message="n3 seen down",
    )
    for i in range(20):
        c.put(f"during-{i}", str(i).encode(), w="quorum")
        assert cluster3.client(1).get(f"during-{i}", r="quorum").value == str(i).encode()
    assert c.get("before", consistency="balanced").value == b"b"
    with pytest.raises(Unavailable) as write_err:
        c.put("x", b"x", w="all")
    assert write_err.value.status == 503
    assert write_err.value.body["required"] == 3 and write_err.value.body["alive"] == 2
    with pytest.raises(Unavailable):
        c.get("before", r="all")
    with pytest.raises(Unavailable):
        c.put("x", b"x", consistency="strong")
    # nothing was written by the refused write
    assert not c.get("x").found


def test_blind_concurrent_writes_become_siblings_and_merge_resolves(cluster3: Cluster) -> None:
    # Both through the same coordinator and through different ones.
    cluster3.client(0).put("conflict", b"from-a")
    cluster3.client(0).put("conflict", b"from-b")
    cluster3.client(1).put("conflict", b"from-c")
    got = cluster3.client(2).get("conflict")
    assert got.found and got.value is None
    assert sorted(got.siblings) == [b"from-a", b"from-b", b"from-c"]
    assert got.context
    cluster3.client(2).put("conflict", b"resolved", context=got.context)
    for i in range(3):
        again = cluster3.client(i).get("conflict", r="all")
        assert again.value == b"resolved" and again.siblings == [b"resolved"]


def test_parallel_writers_without_context_lose_nothing(cluster3: Cluster) -> None:
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            Client(cluster3.node(i % 3).url).put("hot", f"w{i}".encode())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    got = cluster3.client(0).get("hot", r="all")
    assert sorted(got.siblings) == sorted(f"w{i}".encode() for i in range(6))


def test_write_with_stale_context_keeps_the_newer_concurrent_value(cluster3: Cluster) -> None:
    c = cluster3.client(0)
    ctx0 = c.put("k", b"v0")
    c.put("k", b"v1", context=ctx0)  # v1 supersedes v0
    c.put("k", b"v2", context=ctx0)  # written over v0 only: concurrent with v1
    assert sorted(c.get("k").siblings) == [b"v1", b"v2"]


def test_delete_with_and_without_context(cluster3: Cluster) -> None:
    c = cluster3.client(1)
    c.put("d1", b"x")
    c.delete("d1")
    assert not c.get("d1", r="all").found
    ctx = c.put("d2", b"x")
    c.delete("d2", context=ctx)
    assert not c.get("d2", r="all").found
    # a write after a delete brings the key back
    c.put("d1", b"again")
    assert c.get("d1").value == b"again"


def test_read_repair_updates_a_stale_replica(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # Only read repair may fix n3: hints expire at once and anti-entropy is off.
    cluster3 = make_cluster(extra_args=["--hint-window", "0.001", "--anti-entropy-interval", "0"])
    cluster3.node(2).kill()
    c = cluster3.client(0)
    wait_until(
        lambda: not next(m for m in c.status()["members"] if m["id"] == "n3")["alive"],
        10,
        message="n3 down",
    )
    keys = [f"repair-{i}" for i in range(10)]
    for key in keys:
        c.put(key, key.encode(), w="quorum")
    cluster3.node(2).start().wait_ready()
    wait_until(lambda: all(m["alive"] for m in c.status()["members"]), 10, message="n3 back up")
    before = sum(metric(n.url, "ringkv_read_repairs_total") for n in cluster3.nodes)
    for key in keys:
        assert c.get(key, r="all").value == key.encode()
    wait_until(
        lambda: (
            sum(metric(n.url, "ringkv_read_repairs_total") for n in cluster3.nodes)
            >= before + len(keys)
        ),
        10,
        message="read repairs counted",
    )
    # n3 alone must now hold every key.
    only_node_alive(cluster3, 2)
    for key in keys:
        got = cluster3.client(2).get(key, r="one")
        assert got.value == key.encode(), key


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "sigkill"])
def test_restarted_node_keeps_acknowledged_writes(cluster3: Cluster, graceful: bool) -> None:
    c = cluster3.client(0)
    for i in range(50):
        c.put(f"durable-{i}", f"v{i}".encode(), w="all")
    cluster3.node(0).restart(graceful=graceful)
    only_node_alive(cluster3, 0)
    for i in range(50):
        assert cluster3.client(0).get(f"durable-{i}", r="one").value == f"v{i}".encode()


def test_fsync_group_commit_acknowledges_concurrent_writes(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # --fsync true: replicas acknowledge once a shared WAL sync (group commit, off the event
    # loop) covers the write. Concurrent writers through every node must all succeed, and the
    # writes survive a SIGKILL of every node.
    cluster = make_cluster(extra_args=["--fsync", "true"])
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with Client(cluster.urls[n % 3], timeout=10) as c:
                for i in range(20):
                    c.put(f"sync-{n}-{i}", f"v{n}-{i}".encode(), w="all")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for node in cluster.nodes:
        node.restart(graceful=False)
    cluster.wait_ready()
    for n in range(6):
        for i in range(20):
            got = cluster.client(n % 3).get(f"sync-{n}-{i}", r="all")
            assert got.value == f"v{n}-{i}".encode()


def test_quorum_read_survives_a_paused_replica(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # A quorum read asks only R replicas first; when one of them does not answer (paused, not
    # yet seen as down), the coordinator asks the remaining one instead of failing.
    cluster = make_cluster()
    c = cluster.client(0, timeout=10)
    keys = [f"paused-{i}" for i in range(60)]
    for key in keys:
        c.put(key, key.encode(), w="all")
    cluster.node(1).pause()
    try:
        slow = 0
        for key in keys:
            started = time.monotonic()
            assert c.get(key, r="quorum").value == key.encode()
            slow += time.monotonic() - started >= SETTINGS["speculative-read-delay"].default
        # Once it missed the speculative delay, the paused replica is asked last: the delay is
        # not added to every read whose preference list names it first.
        assert slow <= 2, f"{slow} of {len(keys)} reads waited for the paused replica"
    finally:
        cluster.node(1).resume()


def test_token_aware_client_needs_no_forwarding(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # With N=1 most keys live on one other node; a token-aware client sends each request
    # straight to the key's replica, so no node forwards a write.
    cluster = make_cluster(nodes=3, zones=3, replication_factor=1)
    with Client(cluster.urls[0], token_aware=True) as c:
        for i in range(30):
            c.put(f"t{i}", b"v")
        for i in range(30):
            assert c.get(f"t{i}").value == b"v"
        forwarded = sum(metric(n.url, "ringkv_forwarded_requests_total") for n in cluster.nodes)
        assert forwarded == 0
        puts = [
            metric(n.url, 'ringkv_requests_total{op="put",outcome="204"}') for n in cluster.nodes
        ]
        assert sum(1 for p in puts if p > 0) >= 2  # the writes went to more than one node
        # A replica that cannot be reached: the client falls back to its endpoints (and
        # fetches the ring again), and the write still succeeds through a fallback.
        cluster.node(2).kill()
        for i in range(30):
            c.put(f"t{i}", b"w")


def test_forwarded_write_from_a_non_replica(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # With N=1 most keys are not on the node that receives them: writes get forwarded.
    cluster = make_cluster(nodes=3, zones=3, replication_factor=1)
    for i in range(30):
        cluster.client(i % 3).put(f"f{i}", b"v")
    for i in range(30):
        assert cluster.client((i + 1) % 3).get(f"f{i}").value == b"v"
    forwarded = sum(metric(n.url, "ringkv_forwarded_requests_total") for n in cluster.nodes)
    assert forwarded > 0


def test_ring_is_shared_and_balanced(cluster3: Cluster) -> None:
    statuses = [cluster3.client(i).status() for i in range(3)]
    versions = {s["cluster"]["ring_version"] for s in statuses}
    assert len(versions) == 1
    for s in statuses:
        # Tokens balance replica load, which is equal here whatever the primary ownership (one
        # node per zone, N=3: each holds every key); reads start at a replica chosen by the
        # key's hash, so primary ownership only has to be non-trivial for every member.
        owned = [m["ownership"] for m in s["members"]]
        assert len(owned) == 3 and min(owned) > 0.1 and abs(sum(owned) - 1) < 0.01
        assert sorted(s["zones"]) == ["z1", "z2", "z3"]


def test_context_from_a_put_covers_the_new_version_not_other_siblings(cluster3: Cluster) -> None:
    cluster3.client(1).put("seen", b"a")  # a blind write through n2 the next writer never reads
    ctx = cluster3.client(0).put("seen", b"b")  # blind too, through n1: concurrent with "a"
    cluster3.client(0).put("seen", b"c", context=ctx)  # supersedes "b" only
    assert sorted(cluster3.client(2).get("seen", r="all").siblings) == [b"a", b"c"]
