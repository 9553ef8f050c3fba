"""Ring changes on real processes: grow, shrink, replace, interrupt and cancel, under load."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringkv.client import Client, RingkvError
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring, key_hash
from tests.cluster import Cluster, wait_until
from tests.node.test_failures import ring_of, trees_equal

pytestmark = pytest.mark.slow

N = 3
KEYS = 600


class Workload:
    """Quorum reads and writes over a fixed key set in a background thread, recording every
    acknowledged write and every anomaly (an acknowledged key read as missing or older)."""

    def __init__(self, cluster: Cluster, keys: list[str]) -> None:
        self.cluster = cluster
        self.keys = keys
        self.acked: dict[str, int] = {}
        self.anomalies: list[str] = []
        self.failures = 0
        self.ops = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Workload:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _client(self) -> Client:
        urls = [n.url for n in self.cluster.nodes if n.running]
        return Client(urls, timeout=5.0)

    def _run(self) -> None:
        rng = random.Random(7)
        client = self._client()
        deadline = time.monotonic() + 600  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline and self.ops < 200_000:
            key = rng.choice(self.keys)
            self.ops += 1
            try:
                if rng.random() < 0.3:
                    value = self.acked.get(key, 0) + 1
                    got = client.get(key, r="quorum")
                    client.put(key, str(value).encode(), context=got.context, w="quorum")
                    self.acked[key] = max(self.acked.get(key, 0), value)
                else:
                    got = client.get(key, r="quorum")
                    expected = self.acked.get(key)
                    if expected is not None:
                        found = max((int(v) for v in got.siblings), default=0)
                        if not got.found or found < expected:
                            self.anomalies.append(f"{key}: acked {expected}, read {got.siblings}")
            except RingkvError:
                self.failures += 1
                client.close()
                client = self._client()
            self._stop.wait(0.002)
        client.close()


def start_nodes(cluster: Cluster, indexes: Iterator[int] | list[int]) -> None:
    for i in indexes:
        cluster.node(i).start()
    cluster.wait_ready(60)


def replicas_of(ring: Ring, key: str) -> set[str]:
    return {r.node for r in preference_list(ring, key_hash(key.encode()), N)}


def required_moves(before: Ring, after: Ring, keys: list[str]) -> int:
    """Key copies the new placement needs that the old one did not have (the ideal)."""
    return sum(len(replicas_of(after, k) - replicas_of(before, k)) for k in keys)


def last_change(cluster: Cluster, op: str, node: str) -> dict:  # type: ignore[type-arg]
    def done() -> dict | None:  # type: ignore[type-arg]
        for n in cluster.nodes:
            if not n.running:
                continue
            for change in Client(n.url).progress()["changes"]:
                if (change.get("op"), change.get("node"), change["state"]) == (op, node, "done"):
                    return change
        return None

    return wait_until(done, 120, interval=0.2, message=f"{op} of {node} done")


def assert_zone_aware(ring: Ring, keys: list[str]) -> None:
    for key in keys:
        zones = [ring.zone_of(r.node) for r in preference_list(ring, key_hash(key.encode()), N)]
        assert len(set(zones)) == min(N, len(ring.zones)), (key, zones)


@pytest.fixture
def big_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path / "ring", nodes=6, zones=3, extra_args=["--anti-entropy-interval", "0"]
    )
    try:
        yield cluster
    finally:
        cluster.stop()


def preload(cluster: Cluster, keys: list[str]) -> None:
    client = Client([n.url for n in cluster.nodes if n.running])
    for key in keys:
        client.put(key, b"0", w="all")
    client.close()


def test_grow_and_shrink_under_load_moves_only_what_changes_owner(big_cluster: Cluster) -> None:
    cluster = big_cluster
    keys = [f"key-{i}" for i in range(KEYS)]
    start_nodes(cluster, [0, 1, 2])
    preload(cluster, keys)
    report = []
    with Workload(cluster, keys) as load:
        for step in ([3], [4, 5]):  # 3 -> 4 -> 6, one join at a time
            for index in step:
                node = cluster.node(index)
                before = ring_of(cluster.client(0))
                node.start()
                change = last_change(cluster, "join", node.node_id)
                cluster.wait_ready(60)
                after = ring_of(cluster.client(0))
                ideal = required_moves(before, after, keys)
                report.append(("join", node.node_id, len(before), change["keys_sent"], ideal))
                assert_zone_aware(after, keys)
        for index in (5, 4, 3):  # 6 -> 4 -> 3, one decommission at a time
            node = cluster.node(index)
            before = ring_of(cluster.client(0))
            cluster.client(0).admin("decommission", node.node_id)
            change = last_change(cluster, "decommission", node.node_id)
            size = len(before)
            wait_until(
                lambda n=node, size=size: all(
                    Client(m.url).status()["cluster"]["ring_nodes"] == size - 1
                    for m in cluster.nodes
                    if m.running and m is not n
                ),
                30,
                message="ring shrinks",
            )
            after = ring_of(cluster.client(0))
            ideal = required_moves(before, after, keys)
            report.append(("decommission", node.node_id, len(before), change["keys_sent"], ideal))
            assert_zone_aware(after, keys)
            node.kill()  # left: holds nothing anybody needs
    for op, node_id, size, moved, ideal in report:
        print(f"{op:12} {node_id} from {size} nodes: moved {moved} key copies, "
              f"placement needs {ideal} ({moved / max(ideal, 1):.3f}); "
              f"{moved / (KEYS * N):.3f} of all copies")  # fmt: skip
    print(f"workload: {load.ops} ops, {load.failures} failed, {len(load.acked)} keys written")
    assert not load.anomalies, load.anomalies[:10]
    assert load.ops > 200
    for _op, _node, _size, moved, ideal in report:
        assert abs(moved - ideal) <= 0.1 * ideal, report
    # every key readable at quorum from the 3 remaining nodes
    client = Client([n.url for n in cluster.nodes[:3]])
    for key in keys:
        got = client.get(key, r="quorum")
        assert got.found and max(int(v) for v in got.siblings) >= load.acked.get(key, 0)


def test_replace_a_wiped_node_by_streaming(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(extra_args=["--anti-entropy-interval", "0"])  # streaming alone
    keys = [f"r{i}" for i in range(400)]
    preload(cluster, keys)
    cluster.node(1).kill()
    cluster.node(1).wipe()
    cluster.node(1).start()
    change = last_change(cluster, "replace", "n2")
    cluster.wait_ready(60)
    assert change["keys_sent"] == len(keys)
    assert trees_equal(cluster, [0, 1, 2])


def test_interrupted_join_resumes_and_a_cancelled_one_loses_nothing(big_cluster: Cluster) -> None:
    cluster = big_cluster
    for node in cluster.nodes:  # slow streaming down so the test can interrupt it
        node.args += ["--stream-rate", "20000"]
    keys = [f"j{i}" for i in range(KEYS)]
    start_nodes(cluster, [0, 1, 2])
    preload(cluster, keys)
    before = ring_of(cluster.client(0))
    joining = cluster.node(3)
    joining.start()

    def streaming() -> bool:
        for change in Client(joining.url).progress()["changes"]:
            if change.get("node") == "n4" and change["state"] == "running":
                return change["keys_sent"] > 0
        return False

    wait_until(streaming, 60, interval=0.1, message="n4 streaming")
    # a second change while one runs is refused
    with pytest.raises(RingkvError) as busy:
        cluster.client(0).admin("decommission", "n3")
    assert busy.value.status == 409
    joining.kill()  # interrupted mid-stream; the restart resumes from the saved position
    joining.start()
    change = last_change(cluster, "join", "n4")
    cluster.wait_ready(60)
    ring = ring_of(cluster.client(0))
    assert "n4" in ring.nodes
    needed = required_moves(before, ring, keys)
    # the restarted join resumed from its saved position instead of starting over
    assert 0 < change["keys_sent"] < needed, (change["keys_sent"], needed)
    for key in keys:
        assert cluster.client(3).get(key, r="all").found

    # now cancel a join halfway: nothing is lost and the ring goes back
    fifth = cluster.node(4)
    fifth.start()
    wait_until(
        lambda: any(
            c.get("node") == "n5" and c["state"] == "running" and c["keys_sent"] > 0
            for c in Client(fifth.url).progress()["changes"]
        ),
        60,
        interval=0.1,
        message="n5 streaming",
    )
    cluster.client(0).admin("cancel", "n5")
    wait_until(
        lambda: all(
            Client(n.url).progress()["in_progress"] is None for n in cluster.nodes if n.running
        ),
        30,
        message="cancel settles",
    )
    assert "n5" not in ring_of(cluster.client(0)).nodes
    for key in keys:
        assert cluster.client(0).get(key, r="quorum").found
    print(f"resumed join streamed {change['keys_sent']} of {needed} key copies after the restart")


def test_remove_a_dead_node_re_replicates_its_ranges(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(nodes=4, zones=3, extra_args=["--anti-entropy-interval", "0"])
    keys = [f"rm{i}" for i in range(300)]
    preload(cluster, keys)
    cluster.node(3).kill()  # n4 will never come back
    wait_until(
        lambda: (
            not next(m for m in cluster.client(0).status()["members"] if m["id"] == "n4")["alive"]
        ),
        20,
        message="n4 down",
    )
    plan = cluster.client(0).plan("remove", "n4")
    assert plan["transfers"] and all(t["source"] != "n4" for t in plan["transfers"])
    with pytest.raises(RingkvError) as alive:
        cluster.client(0).admin("remove", "n3")  # a live node must be decommissioned instead
    assert alive.value.status == 409
    cluster.client(0).admin("remove", "n4")
    change = last_change(cluster, "remove", "n4")
    assert change["keys_sent"] == plan["keys"]
    wait_until(
        lambda: all(cluster.client(i).status()["cluster"]["ring_nodes"] == 3 for i in range(3)),
        20,
        message="n4 out of every ring",
    )
    # the removal survives a restart of the node that drove it (and of any other)
    cluster.node(0).restart()
    cluster.node(1).restart()
    for i in range(3):
        assert cluster.client(i).status()["cluster"]["ring_nodes"] == 3
    # with 3 nodes left every node holds every key again
    for i in range(3):
        for key in keys:
            got = cluster.client(i).get(key, r="one")
            assert got.value == b"0", (i, key)
