"""A scale-down reversed half-way, on real processes: the operator cancels the running
decommission (``POST /v1/admin/cancel``, what ``plan.cancel_reversed_change`` asks); the node
turns normal again, no acknowledged write is lost under a quorum workload, and the cluster is
left with no change running -- the next decommission runs to its end. (A cancelled join is
tested in test_ring_changes.py.)"""

from __future__ import annotations

import pytest

from ringkv.client import Client
from tests.cluster import Cluster, wait_until
from tests.node.test_ring_changes import Workload, last_change, preload, ring_of, start_nodes

pytestmark = pytest.mark.slow

KEYS = 400


def _leaving(cluster: Cluster, node: str) -> bool:
    for change in Client(cluster.node(node).url).progress()["changes"]:
        if change.get("node") == node and change["state"] == "running":
            return int(change["keys_sent"]) > 0
    return False


def _settled(cluster: Cluster) -> bool:
    return all(Client(n.url).progress()["in_progress"] is None for n in cluster.nodes if n.running)


def test_decommission_cancelled_half_way_loses_nothing_and_leaves_no_stuck_state(
    make_cluster,
) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(nodes=4, zones=3, start=False,
                           extra_args=["--anti-entropy-interval", "0"])  # fmt: skip
    # Slow streaming down so that the cancel comes half-way. The rate counts keys and values
    # only, about 5 bytes a record here: n4's ~300 records take several seconds, far longer
    # than the 0.1 s polls below (at 20000 B/s it could be done within one poll).
    for node in cluster.nodes:
        node.args += ["--stream-rate", "200"]
    start_nodes(cluster, [0, 1, 2, 3])
    keys = [f"r{i}" for i in range(KEYS)]
    preload(cluster, keys)
    with Workload(cluster, keys) as load:
        cluster.client("n4").admin("decommission", "n4")
        wait_until(lambda: _leaving(cluster, "n4"), 60, interval=0.1, message="n4 streaming")
        cluster.client(0).admin("cancel", "n4")
        wait_until(lambda: _settled(cluster), 30, message="cancel settles")
        wait_until(
            lambda: all(
                m["state"] == "normal" for m in cluster.client(0).status()["members"]
            ), 15, message="n4 normal again",
        )  # fmt: skip
        assert "n4" in ring_of(cluster.client(0)).nodes
        wait_until(lambda: load.ops > 200, 30, message="workload ran")
    assert load.anomalies == []
    assert load.acked
    client = Client([n.url for n in cluster.nodes], timeout=5)
    for key, value in load.acked.items():
        got = client.get(key, r="quorum")
        assert max(int(v) for v in got.siblings) >= value, key
    # nothing stuck: the same node can be decommissioned again, to its end
    cluster.client("n4").admin("decommission", "n4")
    last_change(cluster, "decommission", "n4")
    wait_until(lambda: "n4" not in ring_of(cluster.client(0)).nodes, 30, message="n4 left")
    for key in keys:
        assert client.get(key, r="quorum").found, key
    client.close()
