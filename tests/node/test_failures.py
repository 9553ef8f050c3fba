"""Failure handling on real processes: hinted handoff, sloppy quorum, anti-entropy, tombstones.

Partitions live in test_partitions.py (they need the fault proxy); the chaos workload in
test_chaos.py.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from ringkv.client import Client, Unavailable
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring, key_hash
from tests.cluster import Cluster, wait_until

FAST_AE = ["--anti-entropy-interval", "0.3", "--anti-entropy-rate", "100000"]
NO_AE = ["--anti-entropy-interval", "0"]

pytestmark = pytest.mark.slow


def ring_of(client: Client) -> Ring:
    document = client.ring()
    tokens = {n["id"]: [int(t) for t in n["tokens"]] for n in document["nodes"] if n["tokens"]}
    zones = {n["id"]: n["zone"] for n in document["nodes"] if n["tokens"]}
    return Ring(tokens, zones)


def seen_down(cluster: Cluster, observer: int, node_id: str, down: bool = True) -> None:
    def check() -> bool:
        status = cluster.client(observer).status()
        if not any(m["id"] == node_id and m["alive"] is not down for m in status["members"]):
            return False
        # a node of several shards: every shard's coordinator must judge it so, not only the
        # one that answered (the followers copy shard 0's view a moment later)
        rows = (status.get("shards") or {}).get("per_shard") or ()
        return all((node_id in row.get("members_down", ())) is down for row in rows)

    wait_until(check, 15, message=f"{node_id} seen {'down' if down else 'up'}")


def all_up(cluster: Cluster) -> None:
    def check() -> bool:
        for node in cluster.nodes:
            if not node.running:
                continue
            members = Client(node.url).status()["members"]
            if not all(m["alive"] for m in members):
                return False
        return True

    wait_until(check, 20, message="every node sees every node alive")


def pending_hints(cluster: Cluster) -> int:
    return sum(Client(n.url).status()["hints"]["pending"] for n in cluster.nodes if n.running)


def local_value(cluster: Cluster, node: int, key: str) -> bytes | None:
    """What one node holds for a key: r=one coordinated by that node answers from its own disk
    first (the local read counts before any remote one)."""
    got = cluster.client(node).get(key, r="one")
    return got.value if got.found else None


def trees_equal(cluster: Cluster, nodes: list[int]) -> bool:
    """Every range replicated by two of the nodes has the same Merkle root on both."""
    roots: dict[str, dict[str, str]] = {}
    for i in nodes:
        url = cluster.node(i).url + "/v1/anti-entropy/trees"
        document = json.loads(urllib.request.urlopen(url, timeout=10).read())
        for entry in document["ranges"]:
            roots.setdefault(entry["end"], {})[document["node"]] = entry["root"]
    return all(len(set(by_node.values())) == 1 for by_node in roots.values())


def test_hints_accumulate_while_a_node_is_down_and_are_delivered(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(extra_args=NO_AE)  # hints alone must converge the replicas
    cluster.node(2).kill()
    seen_down(cluster, 0, "n3")
    for i in range(60):
        cluster.client(i % 2).put(f"k{i}", f"v{i}".encode(), w="quorum")
        assert cluster.client((i + 1) % 2).get(f"k{i}", r="quorum").value == f"v{i}".encode()
    # The coordinators keep the hints (no fallback exists); a hint for a replica call that
    # timed out is stored when the timeout fires, so wait for the count.
    wait_until(lambda: pending_hints(cluster) >= 60, 10, message="60 hints stored")
    cluster.node(2).start().wait_ready()
    started = time.monotonic()
    wait_until(lambda: pending_hints(cluster) == 0, 30, message="hints delivered")
    delivered_in = time.monotonic() - started
    for i in range(60):
        assert local_value(cluster, 2, f"k{i}") == f"v{i}".encode()
    assert trees_equal(cluster, [0, 1, 2])
    print(f"60 hints delivered {delivered_in:.2f} s after the restart")


def test_sloppy_quorum_uses_a_fallback_and_hands_off(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(nodes=5, zones=3, extra_args=NO_AE)
    ring = ring_of(cluster.client(0))
    victim = "n5"
    key = next(
        f"key-{i}"
        for i in range(10_000)
        if victim in [r.node for r in preference_list(ring, key_hash(f"key-{i}".encode()), 3)]
        and "n1" not in [r.node for r in preference_list(ring, key_hash(f"key-{i}".encode()), 3)]
    )
    primaries = [r.node for r in preference_list(ring, key_hash(key.encode()), 3)]
    cluster.node(victim).kill()
    seen_down(cluster, 0, victim)
    with pytest.raises(Unavailable) as strict:
        cluster.client(0).put(key, b"strict", w="all", strict=True)
    assert strict.value.body["required"] == 3 and strict.value.body["alive"] == 2
    with pytest.raises(Unavailable):
        cluster.client(0).put(key, b"strong", consistency="strong")
    cluster.client(0).put(key, b"sloppy", w="all")  # succeeds through a fallback
    assert cluster.client(0).get(key, r="all").value == b"sloppy"
    fallbacks = [n for n in cluster.nodes if n.running and n.node_id not in primaries]
    holding = [n.node_id for n in fallbacks if Client(n.url).status()["hints"]["pending"] > 0]
    assert holding, "a fallback should hold the hint"
    cluster.node(victim).start().wait_ready()
    all_up(cluster)
    wait_until(lambda: pending_hints(cluster) == 0, 30, message="fallback hands off")
    assert local_value(cluster, 4, key) == b"sloppy"
    # the fallback never stored the key as its own data
    for node_id in holding:
        assert Client(cluster.node(node_id).url).status()["hints"]["pending"] == 0


def test_anti_entropy_refills_a_wiped_replica(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(extra_args=FAST_AE)
    count = 300
    for i in range(count):
        cluster.client(i % 3).put(f"ae-{i}", f"v{i}".encode(), w="all")
    cluster.node(2).kill()
    cluster.node(2).wipe()
    cluster.node(2).start().wait_ready()
    started = time.monotonic()
    wait_until(lambda: trees_equal(cluster, [0, 1, 2]), 60, interval=0.2, message="trees equal")
    elapsed = time.monotonic() - started
    for i in range(0, count, 7):
        assert local_value(cluster, 2, f"ae-{i}") == f"v{i}".encode()
    print(f"anti-entropy refilled {count} keys in {elapsed:.2f} s ({count / elapsed:.0f} keys/s)")


def test_deletes_stay_deleted_through_failures_and_anti_entropy(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(extra_args=[*FAST_AE, "--tombstone-grace", "8", "--hint-window", "0.01"])
    keys = [f"del-{i}" for i in range(40)]
    for key in keys:
        cluster.client(0).put(key, b"doomed", w="all")
    cluster.node(2).kill()  # n3 keeps the old values on disk
    seen_down(cluster, 0, "n3")
    for key in keys:
        cluster.client(0).delete(key, w="quorum")
    # hints expire almost at once (--hint-window 0.01 s): only anti-entropy can tell n3
    cluster.node(2).start().wait_ready()
    all_up(cluster)
    wait_until(lambda: trees_equal(cluster, [0, 1, 2]), 60, interval=0.2, message="converged")
    for key in keys:
        assert not cluster.client(2).get(key, r="all").found
        assert local_value(cluster, 2, key) is None

    # after the grace period and covering exchanges the tombstones are purged everywhere ...
    def purged() -> float:
        total = 0.0
        for node in cluster.nodes:
            text = urllib.request.urlopen(node.url + "/metrics", timeout=5).read().decode()
            for line in text.splitlines():
                if line.startswith("ringkv_tombstones_purged_total "):
                    total += float(line.split()[1])
        return total

    wait_until(lambda: purged() >= 3 * len(keys), 60, interval=0.3, message="purged everywhere")
    # ... exactly once per replica: anti-entropy does not copy purged tombstones back and forth
    rounds = [Client(n.url).status()["anti_entropy"]["completed_rounds"] for n in cluster.nodes]

    def more_rounds() -> bool:
        now = [Client(n.url).status()["anti_entropy"]["completed_rounds"] for n in cluster.nodes]
        return all(b >= a + 4 for a, b in zip(rounds, now, strict=True))

    wait_until(more_rounds, 30, interval=0.2, message="more anti-entropy rounds")
    assert purged() == 3 * len(keys)
    wait_until(lambda: trees_equal(cluster, [0, 1, 2]), 30, interval=0.2, message="converged")
    for key in keys:
        for i in range(3):
            assert not cluster.client(i).get(key, r="all").found


def test_node_restarted_with_empty_data_dir_gets_everything_back(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(extra_args=FAST_AE)
    for i in range(100):
        cluster.client(0).put(f"e{i}", f"v{i}".encode(), w="all")
    old = cluster.client(0).status()["members"]
    cluster.node(0).kill()
    cluster.node(0).wipe()
    cluster.node(0).start()
    cluster.wait_ready()
    new = cluster.client(0).status()
    # same tokens (adopted from the cluster), new incarnation
    assert new["node"]["incarnation"] != next(m for m in old if m["id"] == "n1")["incarnation"]
    ring_after = ring_of(cluster.client(1))
    assert ring_after.tokens_of("n1")
    wait_until(lambda: trees_equal(cluster, [0, 1, 2]), 60, interval=0.2, message="refilled")
    for i in range(100):
        assert local_value(cluster, 0, f"e{i}") == f"v{i}".encode()
    # writes through the new incarnation supersede old versions normally
    got = cluster.client(0).get("e1")
    cluster.client(0).put("e1", b"new", context=got.context)
    assert cluster.client(1).get("e1", r="all").value == b"new"
