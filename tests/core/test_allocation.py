"""Token allocation for replica load: what a node stores as one of N zone-aware replicas.

Deterministic (the allocator is pure and seeded by node ids), so these are plain assertions over
rings grown one node at a time, as a cluster grows.
"""

from __future__ import annotations

from functools import cache
from itertools import pairwise

import pytest

from ringkv.core.allocation import allocate_tokens
from ringkv.core.placement import (
    replica_balance,
    replica_balance_bound,
    replica_loads,
    replicas_gained,
)
from ringkv.core.ring import DEFAULT_VNODES, RING_SIZE, Ring

N = 3


def grow(zones: list[str], count: int = DEFAULT_VNODES) -> list[Ring]:
    """Rings after each join, the i-th node joining zone ``zones[i]``."""
    ring = Ring.empty()
    out = []
    for i, zone in enumerate(zones):
        node = f"node-{i:04d}"
        ring = ring.with_node(node, zone, allocate_tokens(ring, node, count, zone=zone, replicas=N))
        out.append(ring)
    return out


@cache
def round_robin(total: int) -> tuple[Ring, ...]:
    return tuple(grow([f"zone-{i % 3}" for i in range(total)]))


@cache
def proportional(total: int, weights: tuple[int, ...]) -> tuple[Ring, ...]:
    """Zones filled in proportion to ``weights`` (5:3:2 -> unequal zones at every size)."""
    filled = [0] * len(weights)
    zones = []
    for _ in range(total):
        z = min(range(len(weights)), key=lambda k: (filled[k] / weights[k], k))
        filled[z] += 1
        zones.append(f"zone-{z}")
    return tuple(grow(zones))


def test_bound_of_known_zone_layouts() -> None:
    assert replica_balance_bound({"a": 1, "b": 1, "c": 1}, 3) == pytest.approx(1.0)
    # Each zone holds one replica of every key: the lone nodes of b and c hold everything.
    assert replica_balance_bound({"a": 2, "b": 1, "c": 1}, 3) == pytest.approx(4 / 3)
    assert replica_balance_bound({"a": 34, "b": 33, "c": 33}, 3) == pytest.approx(100 / 99)
    assert replica_balance_bound({"z": 7}, 3) == pytest.approx(1.0)
    # Two zones, N=3: the extra replica can go to either zone, so 3 + 2 nodes can balance.
    assert replica_balance_bound({"a": 3, "b": 2}, 3) == pytest.approx(1.0)
    # Four zones, N=3, one of them with 3 nodes: the lone nodes carry 2/3 of the ring each.
    assert replica_balance_bound({"a": 3, "b": 1, "c": 1, "d": 1}, 3) == pytest.approx(4 / 3)


@pytest.mark.parametrize("size", range(3, 49))
def test_three_zones_every_size_3_to_48(size: int) -> None:
    """Joined one at a time over three zones: equal zones (every third size) within 5 % of
    perfect, the sizes in between within 0.05 of what their unequal zones allow."""
    ring = round_robin(48)[size - 1]
    bound = replica_balance_bound(ring.zone_sizes(), N)
    measured = replica_balance(ring, N)
    assert measured <= bound + 0.05, (size, bound, measured)
    if len(set(ring.zone_sizes().values())) == 1:
        assert bound == pytest.approx(1.0)
        assert measured <= 1.05, (size, measured)


@pytest.mark.parametrize("size", range(3, 31))
def test_unequal_zones_within_005_of_the_bound(size: int) -> None:
    ring = proportional(30, (5, 3, 2))[size - 1]
    bound = replica_balance_bound(ring.zone_sizes(), N)
    assert replica_balance(ring, N) <= bound + 0.05


@pytest.mark.parametrize("size", range(4, 49))
def test_data_moved_on_a_join_is_the_newcomers_share(size: int) -> None:
    """Only the newcomer gains replicas, and only what it must own (within 10 %)."""
    before, after = round_robin(48)[size - 2], round_robin(48)[size - 1]
    newcomer = (set(after.nodes) - set(before.nodes)).pop()
    gained = replicas_gained(before, after, N)
    owns = replica_loads(after, N)[newcomer]
    assert sum(gained.values()) <= 1.10 * owns
    # What it must own: its zone's replicas spread evenly over the zone.
    zone_size = after.zone_sizes()[after.zone_of(newcomer)]
    assert owns == pytest.approx(RING_SIZE / zone_size, rel=0.05)


def test_large_rings_joined_one_at_a_time() -> None:
    """100, 300 and 1,000 nodes over three zones, 128 tokens each, joined one at a time."""
    ring = Ring.empty()
    checked = {}
    for i in range(1000):
        node, zone = f"node-{i:04d}", f"zone-{i % 3}"
        ring = ring.with_node(node, zone, allocate_tokens(ring, node, zone=zone, replicas=N))
        if len(ring) in (100, 300, 1000):
            checked[len(ring)] = replica_balance(ring, N)
    assert set(checked) == {100, 300, 1000}
    for size, measured in checked.items():
        assert measured <= 1.05, (size, measured)


def test_existing_tokens_never_change() -> None:
    """Allocation only returns the newcomer's tokens; the members' stay as they were."""
    rings = round_robin(12)
    for before, after in pairwise(rings):
        for node in before.nodes:
            assert after.tokens_of(node) == before.tokens_of(node)


def test_allocation_is_deterministic_and_distinct() -> None:
    ring = round_robin(9)[-1]
    a = allocate_tokens(ring, "new", zone="zone-1", replicas=N)
    assert a == allocate_tokens(ring, "new", zone="zone-1", replicas=N)
    assert len(set(a)) == DEFAULT_VNODES
    assert not set(a) & set(ring.sorted_tokens)
    # Two nodes claiming against the same view do not collide.
    b = allocate_tokens(ring, "other", zone="zone-1", replicas=N)
    assert not set(a) & set(b)


def test_first_node_of_a_new_zone() -> None:
    ring = round_robin(6)[-1]
    tokens = allocate_tokens(ring, "east-1", zone="east", replicas=N)
    grown = ring.with_node("east-1", "east", tokens)
    assert len(tokens) == DEFAULT_VNODES
    assert set(grown.nodes) - set(ring.nodes) == {"east-1"}


@pytest.mark.parametrize("size", range(3, 49))
def test_single_zone_every_size_3_to_48(size: int) -> None:
    """One zone (equal zones, trivially), N=3: each key on the first 3 distinct nodes
    clockwise, balanced by the replication-aware allocator (random tokens: 20-40 % over)."""
    ring = single_zone(48)[size - 1]
    assert replica_balance(ring, N) <= 1.05


@pytest.mark.parametrize("size", range(3, 31))
def test_one_node_per_zone_every_size(size: int) -> None:
    """Every node in its own zone (equal zones of one): the same as a single zone."""
    ring = one_per_zone(30)[size - 1]
    assert replica_balance(ring, N) <= 1.05


@cache
def single_zone(total: int) -> tuple[Ring, ...]:
    return tuple(grow(["z"] * total))


@cache
def one_per_zone(total: int) -> tuple[Ring, ...]:
    return tuple(grow([f"rack-{i}" for i in range(total)]))
