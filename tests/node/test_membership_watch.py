"""Membership that scales, on real processes: each node heartbeats only the members its Watch
assigns it, and learns of the others' failures from the convictions their watchers gossip.

(The pure parts are tested in tests/core/test_membership_scale.py; the scale in
benchmarks/membership_sim.py.)
"""

from __future__ import annotations

import pytest

from ringkv.client import Client
from ringkv.core.failure_detector import WATCHERS
from tests.cluster import Cluster, wait_until

pytestmark = pytest.mark.slow

NODES = WATCHERS + 2  # so that every node has a peer it does not watch


def members(cluster: Cluster, i: int) -> dict[str, dict]:  # type: ignore[type-arg]
    return {m["id"]: m for m in cluster.client(i).status()["members"]}


def test_a_paused_node_is_convicted_even_where_nobody_watches_it(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # Six nodes join one at a time: allow for a loaded machine.
    cluster = make_cluster(nodes=NODES, zones=3, start=False).start(deadline=120)

    def everyone_watches_its_share() -> bool:
        for i in range(NODES):
            watched = [m for m in members(cluster, i).values() if m["phi"] is not None]
            if len(watched) != WATCHERS or not all(m["alive"] for m in watched):
                return False
        return True

    # Each node measures phi for exactly WATCHERS peers: it heartbeats those, not everyone.
    wait_until(everyone_watches_its_share, 30, message=f"each node watches {WATCHERS} peers")
    victim = f"n{NODES}"
    blind = [i for i in range(NODES - 1) if members(cluster, i)[victim]["phi"] is None]
    assert blind, "some node does not watch the victim"

    cluster.node(NODES - 1).pause()  # the process stays, its connections stay open: no reset
    try:

        def all_see_it_down() -> bool:
            return all(not members(cluster, i)[victim]["alive"] for i in range(NODES - 1))

        wait_until(all_see_it_down, 30, message=f"every node holds {victim} for down")
        # The nodes that do not watch it learned it from a watcher's conviction.
        for i in blind:
            assert members(cluster, i)[victim]["phi"] is None
    finally:
        cluster.node(NODES - 1).resume()

    def all_see_it_up() -> bool:
        return all(members(cluster, i)[victim]["alive"] for i in range(NODES))

    wait_until(all_see_it_up, 30, message=f"every node holds {victim} for alive again")
    # Still serving: a quorum write and read through a node that does not watch it.
    client = Client(cluster.node(blind[0]).url)
    client.put("after", b"pause", w="quorum")
    assert client.get("after", r="quorum").value == b"pause"
