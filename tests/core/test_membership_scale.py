"""Membership that scales: bucket summaries, quarantine of departed members, the Watch.

Pure core only; the multi-process behaviour is covered by tests/node (failures, ring changes) and
the scale by benchmarks/membership_sim.py.
"""

from __future__ import annotations

import msgpack
import pytest

from ringkv.core import gossip as g
from ringkv.core.failure_detector import WATCHERS, PhiAccrualFailureDetector, Watch, watch_order
from ringkv.core.gossip import Gossiper


def cluster(size: int) -> list[Gossiper]:
    nodes = [
        Gossiper(f"n{i}", 1000 + i, {g.ZONE: f"z{i % 3}", g.STATUS: g.NORMAL}) for i in range(size)
    ]
    # Everyone learns everything through the old full exchange.
    for _ in range(2):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    exchange(a, b)
    return nodes


def exchange(a: Gossiper, b: Gossiper) -> int:
    """One round initiated by a with b, as the node runs it; returns the bytes sent."""
    syn = {"summary": a.summary()}
    buckets = b.differing(syn["summary"])
    ack = {"buckets": buckets, "digests": b.digests_in(buckets)}
    sent = len(msgpack.packb(syn)) + len(msgpack.packb(ack))
    if not buckets:
        return sent
    deltas, requests = a.reconcile(ack["digests"], buckets)
    ack2 = {"deltas": deltas, "requests": requests}
    b.apply(deltas)
    reply = b.deltas_for(requests)
    a.apply(reply)
    return sent + len(msgpack.packb(ack2)) + len(msgpack.packb(reply))


def test_identical_tables_exchange_only_the_summary() -> None:
    nodes = cluster(40)
    a, b = nodes[0], nodes[1]
    assert a.summary() == b.summary()
    assert b.differing(a.summary()) == []
    assert exchange(a, b) < 32 * 10 * 2  # two summaries' worth, whatever the member count


def test_one_change_costs_one_bucket() -> None:
    nodes = cluster(60)
    a, b = nodes[0], nodes[1]
    a.set_app(g.STATUS, g.LEAVING)
    buckets = b.differing(a.summary())
    assert buckets == [g.bucket_of("n0")]
    assert set(b.digests_in(buckets)) == {n for n in b.states if g.bucket_of(n) == buckets[0]}
    exchange(b, a)  # b pulls the change
    assert b.states["n0"].get(g.STATUS) == g.LEAVING
    assert a.summary() == b.summary()


def test_summary_rounds_converge_after_changes() -> None:
    nodes = cluster(12)
    nodes[3].set_app(g.STATUS, g.LEAVING)
    nodes[7].set_app("k", 1)
    newcomer = Gossiper("new", 5000, {g.ZONE: "z0"})
    nodes.append(newcomer)
    exchange(newcomer, nodes[0])
    for _ in range(6):
        for i, a in enumerate(nodes):
            exchange(a, nodes[(i * 5 + 1) % len(nodes)])
            exchange(a, nodes[(i + 1) % len(nodes)])
    views = {tuple(sorted((n, s.digest()) for n, s in x.states.items())) for x in nodes}
    assert len(views) == 1
    assert len({tuple(x.summary()) for x in nodes}) == 1


def test_summary_is_kept_incrementally_and_matches_a_recount() -> None:
    nodes = cluster(20)
    a = nodes[0]
    a.set_app("k", 2)
    a.remove("n5")
    expected = [0] * g.DIGEST_BUCKETS
    for node, state in a.states.items():
        expected[g.bucket_of(node)] += g._digest_hash(node, state.digest())
    assert a.summary() == [v % (1 << 64) for v in expected]


def test_a_departed_member_is_not_resurrected_by_a_stale_peer() -> None:
    nodes = cluster(4)
    a, stale = nodes[0], nodes[1]
    # n3 left; a dropped it after the grace period; `stale` still holds it.
    a.evict("n3", until=100.0)
    assert "n3" not in a.states
    for _ in range(3):
        exchange(a, stale)
        exchange(stale, a)
        a.apply(stale.handle_syn(a.digests())[0])  # the older, full exchange too
        a.apply({"n3": stale.states["n3"].delta_since(-1)})
    assert "n3" not in a.states
    assert "n3" not in a.digests_in(range(g.DIGEST_BUCKETS))
    # The quarantine ends; a new life of the same id (a higher generation) is welcome at once.
    reborn = Gossiper("n3", 9999, {g.ZONE: "z0"})
    a.apply({"n3": reborn.local.delta_since(-1)})
    assert a.states["n3"].generation == 9999
    a.expire(now=50.0)
    assert "n3" in a.quarantine
    a.expire(now=100.0)
    assert "n3" not in a.quarantine


def test_without_the_quarantine_a_stale_peer_would_resurrect() -> None:
    """The scenario the quarantine exists for (so the test above can fail)."""
    nodes = cluster(4)
    a, stale = nodes[0], nodes[1]
    a.remove("n3")
    exchange(a, stale)
    assert "n3" in a.states


def test_convictions_and_refutation() -> None:
    nodes = cluster(5)
    watcher, victim, other = nodes[0], nodes[1], nodes[2]
    state = watcher.states["n1"]
    watcher.set_app(g.DOWN, {"n1": [state.generation, state.max_version]})
    for _ in range(2):
        for x in nodes:
            exchange(x, watcher)
    assert g.convicted(other.states) == {"n1"}
    assert "n1" in g.convicted(victim.states)
    # The victim is alive: it bumps its counter, and the conviction goes stale everywhere.
    victim.set_app(g.ALIVE, 1)
    for _ in range(2):
        for x in nodes:
            exchange(x, victim)
    assert g.convicted(other.states) == set()
    # A conviction at an older generation means nothing either.
    watcher.set_app(g.DOWN, {"n1": [state.generation - 1, 10**9]})
    assert g.convicted(watcher.states) == set()


# -- Watch ------------------------------------------------------------------------------------


def watches(size: int) -> dict[str, Watch]:
    return {f"m{i}": Watch(f"m{i}", PhiAccrualFailureDetector()) for i in range(size)}


@pytest.mark.parametrize("size", [2, 5, 100, 1000])
def test_each_member_watches_and_is_watched_by_a_constant_number(size: int) -> None:
    members = [f"m{i}" for i in range(size)]
    all_watches = watches(size)
    watched_by: dict[str, int] = dict.fromkeys(members, 0)
    order = watch_order(members)
    for node, watch in all_watches.items():
        targets = watch.targets(order)
        assert node not in targets
        assert len(targets) == min(WATCHERS, size - 1)
        for t in targets:
            watched_by[t] += 1
    assert set(watched_by.values()) == {min(WATCHERS, size - 1)}


def test_dead_targets_stay_watched_and_a_live_one_is_added() -> None:
    members = [f"m{i}" for i in range(20)]
    watch = Watch("m0", PhiAccrualFailureDetector())
    first = watch.targets(watch_order(members))
    dead = {first[0]}
    second = watch.targets(watch_order(members), dead)
    assert watch.targets(watch_order(members[1:])) == []  # not a member (any more)
    assert first[0] in second
    assert len(second) == WATCHERS + 1
    assert set(first) < set(second)


def test_silence_makes_a_suspect_then_a_conviction_and_an_answer_acquits() -> None:
    watch = Watch("a", PhiAccrualFailureDetector(), confirm=0.5)
    now = 0.0
    for _ in range(40):
        watch.heard("b", now)
        assert watch.tick(now, ["b"]) == []
        now += 0.5
    last = now - 0.5
    suspected_at = None
    while now < last + 10:
        fresh = watch.tick(now, ["b"])
        if fresh:
            suspected_at = now
            assert fresh == ["b"]
        if "b" in watch.convicted:
            break
        now += 0.1
    assert suspected_at is not None
    assert 2.5 < suspected_at - last < 5.0  # phi 8 with the default 2 s acceptable pause
    assert "b" in watch.convicted and now - suspected_at >= 0.5
    watch.heard("b", now)
    assert "b" not in watch.convicted
    assert watch.tick(now + 0.1, ["b"]) == []


def test_an_indirect_answer_prevents_the_conviction() -> None:
    watch = Watch("a", PhiAccrualFailureDetector(), confirm=0.5)
    for i in range(40):
        watch.heard("b", i * 0.5)
    now = 20.0
    while not watch.tick(now, ["b"]):
        now += 0.1
    watch.heard("b", now + 0.2)  # a helper reached b
    for step in range(10):
        watch.tick(now + 0.3 + step * 0.1, ["b"])
    assert "b" not in watch.convicted
