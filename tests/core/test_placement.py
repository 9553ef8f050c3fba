"""Tests for ringkv.core.placement: zone-aware preference lists and the clockwise walk."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core import placement
from ringkv.core.allocation import allocate_tokens
from ringkv.core.placement import Replica, preference_list, walk
from ringkv.core.ring import RING_SIZE, Ring, key_hash

positions = st.integers(min_value=0, max_value=RING_SIZE - 1)
replica_counts = st.integers(min_value=1, max_value=9)


@st.composite
def rings(draw: st.DrawFn, max_nodes: int = 9, max_zones: int = 5, max_vnodes: int = 6) -> Ring:
    """Small rings with random tokens and a random (possibly lopsided) zone assignment."""
    count = draw(st.integers(min_value=1, max_value=max_nodes))
    zone_count = draw(st.integers(min_value=1, max_value=max_zones))
    names = [f"n{i}" for i in range(count)]
    zones = {name: f"z{draw(st.integers(0, zone_count - 1))}" for name in names}
    per_node = [draw(st.integers(min_value=1, max_value=max_vnodes)) for _ in names]
    flat = draw(st.lists(positions, min_size=sum(per_node), max_size=sum(per_node), unique=True))
    tokens: dict[str, list[int]] = {}
    for name, k in zip(names, per_node, strict=True):
        tokens[name], flat = flat[:k], flat[k:]
    return Ring(tokens, zones)


def zone_sizes(ring: Ring) -> Counter[str]:
    return Counter(ring.zone_of(node) for node in ring.nodes)


def is_even_spread(ring: Ring, nodes: list[str] | tuple[str, ...]) -> bool:
    """No zone holds two more replicas than another unless that other zone has run out of nodes.

    This is exactly the set of most-even (max-min fair) spreads: per-zone counts that cannot be
    made more even given how many nodes each zone has.
    """
    sizes = zone_sizes(ring)
    used = Counter(ring.zone_of(node) for node in nodes)
    return all(used[a] <= used[b] + 1 or used[b] == sizes[b] for a in sizes for b in sizes)


def reference_preference(ring: Ring, h: int, n: int) -> list[str]:
    """Brute force: of all most-even selections, the one that comes first in clockwise order."""
    order = list(walk(ring, h))
    size = min(n, len(order))
    for chosen in combinations(range(len(order)), size):  # lexicographic order
        nodes = [order[i] for i in chosen]
        if is_even_spread(ring, nodes):
            return nodes
    raise AssertionError("no even spread exists")


def names(replicas: tuple[Replica, ...]) -> list[str]:
    return [r.node for r in replicas]


def test_replica_defaults() -> None:
    assert Replica("a") == Replica("a", primary=True, hint_for=None)
    assert Replica("b", primary=False, hint_for="a").hint_for == "a"


def test_known_ring() -> None:
    ring = Ring(
        {"a": [10, 60], "b": [20], "c": [30], "d": [40], "e": [50]},
        {"a": "east", "b": "east", "c": "west", "d": "west", "e": "north"},
    )
    # From 15: b(east) c(west) d(west, skipped) e(north).
    assert names(preference_list(ring, 15, 3)) == ["b", "c", "e"]
    # Two zones' worth of slots more than zones: one zone gets 2, the others 1.
    assert names(preference_list(ring, 15, 4)) == ["b", "c", "d", "e"]
    assert names(preference_list(ring, 15, 5)) == ["b", "c", "d", "e", "a"]
    assert names(preference_list(ring, 61, 2)) == ["a", "c"]  # wraps to token 10
    assert list(walk(ring, 61)) == ["a", "b", "c", "d", "e"]
    assert list(walk(ring, 45)) == ["e", "a", "b", "c", "d"]


def test_zone_quotas() -> None:
    # (level, base, extra): everyone gets min(size, level); `extra` zones get level + 1.
    assert placement.zone_quotas({"a": 5, "b": 5, "c": 5}, 3) == (1, {"a": 1, "b": 1, "c": 1}, 0)
    assert placement.zone_quotas({"a": 5, "b": 5, "c": 5}, 2) == (0, {"a": 0, "b": 0, "c": 0}, 2)
    assert placement.zone_quotas({"a": 5, "b": 5}, 3) == (1, {"a": 1, "b": 1}, 1)
    assert placement.zone_quotas({"a": 1, "b": 10}, 5) == (4, {"a": 1, "b": 4}, 0)
    assert placement.zone_quotas({"a": 1, "b": 2}, 5) == (3, {"a": 1, "b": 2}, 0)


def test_bad_n_and_empty_ring() -> None:
    ring = Ring({"a": [1]}, {"a": "z"})
    with pytest.raises(ValueError):
        preference_list(ring, 0, 0)
    assert preference_list(Ring.empty(), 123, 3) == ()
    assert list(walk(Ring.empty(), 123)) == []


@given(rings(), positions, replica_counts)
def test_preference_list_properties(ring: Ring, h: int, n: int) -> None:
    replicas = preference_list(ring, h, n)
    nodes = names(replicas)
    assert all(r.primary and r.hint_for is None for r in replicas)
    assert len(nodes) == len(set(nodes)) == min(n, len(ring))
    assert nodes[0] == ring.token_owners[ring.token_index(h)] == ring.owner_of(h)
    if n >= len(ring):
        assert set(nodes) == set(ring.nodes)
    if len(ring.zones) >= n:
        assert len({ring.zone_of(node) for node in nodes}) == len(nodes)
    assert is_even_spread(ring, nodes)
    # Replicas appear in clockwise order.
    order = list(walk(ring, h))
    assert [order.index(node) for node in nodes] == sorted(order.index(node) for node in nodes)


@given(rings(), positions, replica_counts)
def test_preference_list_is_first_even_spread_clockwise(ring: Ring, h: int, n: int) -> None:
    assert names(preference_list(ring, h, n)) == reference_preference(ring, h, n)


@given(rings(max_zones=1), positions, replica_counts)
def test_single_zone_takes_the_next_distinct_nodes(ring: Ring, h: int, n: int) -> None:
    assert names(preference_list(ring, h, n)) == list(walk(ring, h))[:n]


@given(rings(), positions)
def test_walk_yields_every_node_once_in_token_order(ring: Ring, h: int) -> None:
    order = list(walk(ring, h))
    assert sorted(order) == list(ring.nodes)
    tokens, owners = ring.sorted_tokens, ring.token_owners
    start = ring.token_index(h)
    expected: list[str] = []
    for i in range(len(tokens)):
        owner = owners[(start + i) % len(tokens)]
        if owner not in expected:
            expected.append(owner)
    assert order == expected


@given(rings(), positions, replica_counts)
def test_deterministic(ring: Ring, h: int, n: int) -> None:
    first = preference_list(ring, h, n)
    assert preference_list(ring, h, n) == first
    # Any position in the same token range shares the entry.
    token = ring.sorted_tokens[ring.token_index(h)]
    assert preference_list(ring, token, n) == first
    twin = Ring(
        {node: ring.tokens_of(node) for node in reversed(ring.nodes)},
        {node: ring.zone_of(node) for node in ring.nodes},
    )
    assert preference_list(twin, h, n) == first


def test_per_ring_state_does_not_grow_with_lookups() -> None:
    ring = Ring({f"n{i}": [i * 1000 + 1] for i in range(40)}, {f"n{i}": "z" for i in range(40)})
    for i in range(40):
        assert preference_list(ring, i * 1000, 3)[0].node == f"n{i}"
    # One plan per replica count, none per key or token.
    assert len(placement._PLANS[ring]) == 1
    smaller = ring.without_node("n0")
    assert preference_list(smaller, 0, 1)[0].node == "n1"  # not the stale entry of `ring`
    assert preference_list(ring, 0, 1)[0].node == "n0"


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=3, max_value=12), st.integers(min_value=1, max_value=4))
def test_allocated_ring_spreads_replicas_over_zones(nodes: int, zones: int) -> None:
    ring = Ring.empty()
    for i in range(nodes):
        ring = ring.with_node(f"node-{i}", f"zone-{i % zones}", allocate_tokens(ring, f"node-{i}"))
    for key in (b"alpha", b"beta", b"gamma", b"delta"):
        replicas = names(preference_list(ring, key_hash(key), 3))
        assert len(replicas) == 3
        per_zone = Counter(ring.zone_of(node) for node in replicas)
        assert max(per_zone.values()) == -(-3 // len(ring.zones))  # ceil(3 / zones)
