"""Network partitions (through the fault proxies of tests/faults.py): availability where the
consistency level allows it, and convergence after healing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringkv.client import Client, Timeout, Unavailable
from ringkv.core.placement import preference_list
from ringkv.core.ring import key_hash
from tests.cluster import wait_until
from tests.faults import PartitionedCluster
from tests.node.test_failures import local_value, ring_of, trees_equal

pytestmark = pytest.mark.slow

CONVERGENCE_BOUND = 30.0  # seconds from heal to equal Merkle trees (stated in the closing note)


@pytest.fixture
def partitioned(tmp_path: Path) -> Iterator[PartitionedCluster]:
    clusters: list[PartitionedCluster] = []

    def make(**kwargs: object) -> PartitionedCluster:
        cluster = PartitionedCluster(tmp_path / f"p{len(clusters)}", **kwargs)  # type: ignore[arg-type]
        clusters.append(cluster)
        return cluster.start()

    yield make  # type: ignore[misc]
    for cluster in clusters:
        cluster.stop()


def sees(cluster: PartitionedCluster, observer: int, node_id: str, alive: bool) -> bool:
    members = Client(cluster.node(observer).url).status()["members"]
    return any(m["id"] == node_id and m["alive"] is alive for m in members)


def test_minority_partition_majority_writes_then_converges(partitioned) -> None:  # type: ignore[no-untyped-def]
    cluster = partitioned(extra_args=["--anti-entropy-interval", "0.5"])
    majority = Client([cluster.node(0).url, cluster.node(1).url])
    for i in range(50):
        majority.put(f"before-{i}", b"b", w="all")
    cluster.isolate(2)
    wait_until(lambda: sees(cluster, 0, "n3", False) and sees(cluster, 2, "n1", False), 20,
               message="partition detected on both sides")  # fmt: skip
    for i in range(100):
        majority.put(f"during-{i}", f"d{i}".encode(), w="quorum")
        assert majority.get(f"during-{i}", r="quorum").value == f"d{i}".encode()
    majority.put("strict-ok", b"s", w="quorum", strict=True)  # two primaries are reachable
    minority = cluster.client(2)
    with pytest.raises((Unavailable, Timeout)):
        minority.put("minority", b"x", w="quorum")
    with pytest.raises((Unavailable, Timeout)):
        minority.get("before-1", r="quorum")
    assert minority.get("before-1", r="one").value == b"b"  # eventual reads still work
    healed = time.monotonic()
    cluster.heal()
    wait_until(lambda: trees_equal(cluster, [0, 1, 2]), CONVERGENCE_BOUND, interval=0.2,
               message="Merkle trees equal after healing")  # fmt: skip
    converged_in = time.monotonic() - healed
    for i in range(100):
        assert local_value(cluster, 2, f"during-{i}") == f"d{i}".encode()
    print(f"converged {converged_in:.2f} s after healing a 1|2 partition")


def test_strict_quorum_refuses_when_primaries_are_cut_off_sloppy_succeeds(partitioned) -> None:  # type: ignore[no-untyped-def]
    cluster = partitioned(nodes=5, zones=3, extra_args=["--anti-entropy-interval", "0.5"])
    ring = ring_of(cluster.client(0))
    key = next(
        f"k{i}"
        for i in range(10_000)
        if preference_list(ring, key_hash(f"k{i}".encode()), 3)[0].node == "n1"
    )
    primaries = [r.node for r in preference_list(ring, key_hash(key.encode()), 3)]
    cut = primaries[1:]  # two of the three primaries
    rest = [n.node_id for n in cluster.nodes if n.node_id not in cut]
    cluster.partition(rest, cut)
    for node_id in cut:
        wait_until(lambda n=node_id: sees(cluster, 0, n, False), 20, message=f"{node_id} cut off")
    with pytest.raises(Unavailable) as strict:
        cluster.client(0).put(key, b"strict", w="quorum", strict=True)
    assert strict.value.body["required"] == 2 and strict.value.body["alive"] == 1
    cluster.client(0).put(key, b"sloppy", w="quorum")  # a fallback stands in
    assert cluster.client(0).get(key, r="quorum").value == b"sloppy"
    cluster.heal()
    wait_until(
        lambda: all(local_value(cluster, cluster.nodes.index(cluster.node(n)), key) == b"sloppy"
                    for n in primaries),
        CONVERGENCE_BOUND,
        interval=0.2,
        message="the cut-off primaries get the sloppy write",
    )  # fmt: skip
