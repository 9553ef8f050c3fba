"""Token allocation for replica load: what a node stores as one of N zone-aware replicas.

Deterministic (the allocator is pure and seeded by node ids), so these are plain assertions over
rings grown one node at a time, as a cluster grows.
"""

from __future__ import annotations

import random
from functools import cache
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.allocation import MIN_TOKENS_PER_SLICE, allocate_tokens
from ringkv.core.placement import (
    preference_list,
    replica_balance,
    replica_balance_bound,
    replica_loads,
    replicas_gained,
    zone_shares,
)
from ringkv.core.ring import DEFAULT_VNODES, RING_SIZE, Ring
from ringkv.core.sharding import shard_of, split_range

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
def round_robin(total: int, zones: int = 3) -> tuple[Ring, ...]:
    return tuple(grow([f"zone-{i % zones}" for i in range(total)]))


def check_against_bound(ring: Ring) -> None:
    """The issue's targets: within 0.05 of the bound, and <= 1.05 when the zones are equal."""
    bound = replica_balance_bound(ring.zone_sizes(), N)
    measured = replica_balance(ring, N)
    assert measured <= bound + 0.05, (len(ring), ring.zone_sizes(), bound, measured)
    if len(set(ring.zone_sizes().values())) == 1:
        assert bound == pytest.approx(1.0)
        assert measured <= 1.05, (len(ring), measured)


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
    # A zone holds at most one replica of a key: 2 nodes carry 1/2 each, the lone ones 2/3.
    assert replica_balance_bound({"a": 2, "b": 1, "c": 1, "d": 1}, 3) == pytest.approx(10 / 9)
    assert zone_shares({"a": 2, "b": 1, "c": 1, "d": 1}, 3) == pytest.approx(
        {"a": 1.0, "b": 2 / 3, "c": 2 / 3, "d": 2 / 3}
    )
    # Equal zones give 1.0 whether or not their count divides N.
    for zones in (2, 4, 5, 6):
        assert replica_balance_bound({f"z{i}": 7 for i in range(zones)}, 3) == pytest.approx(1.0)
    # Two zones, one of a single node: it holds one replica of every key whatever happens.
    assert replica_balance_bound({"a": 5, "b": 1}, 3) == pytest.approx(2.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=4), min_size=3, max_size=9),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=0, max_value=2**32),
)
def test_no_ring_beats_the_bound(zone_of: list[int], n: int, seed: int) -> None:
    """The bound is a true lower bound: rings with random tokens never go below it."""
    rng = random.Random(seed)
    tokens = {f"n{i}": [rng.randrange(RING_SIZE) for _ in range(8)] for i in range(len(zone_of))}
    ring = Ring(tokens, {f"n{i}": f"z{z}" for i, z in enumerate(zone_of)})
    assert replica_balance(ring, n) >= replica_balance_bound(ring.zone_sizes(), n) - 1e-9


@pytest.mark.parametrize("zones", [2, 3])
@pytest.mark.parametrize("size", range(3, 49))
def test_every_size_3_to_48(zones: int, size: int) -> None:
    """Joined one at a time over 2 or 3 zones: equal zones (every 2nd or 3rd size) within 5 %
    of perfect, the sizes in between within 0.05 of what their unequal zones allow. With 2
    zones and N=3 each key's third replica goes to whichever zone's next node comes first."""
    check_against_bound(round_robin(48, zones)[size - 1])


@pytest.mark.parametrize("size", range(3, 49))
def test_four_zones_every_size_3_to_48(size: int) -> None:
    """Four zones, N=3 (each key in 3 of the 4): a join can only push a zone out of a key's
    list where that zone comes last, so each join also prepares the ring for the next one."""
    check_against_bound(round_robin(48, 4)[size - 1])


def test_the_join_to_five_nodes_in_four_zones_leaves_the_sixth_room() -> None:
    """At 6 nodes (2/2/1/1) the lone zones 2 and 3 must carry 1/2 of the keys each, down from
    2/3 at 5 nodes, and the 6th node (zone-1) can only take keys from them where zone-1 is left
    out and they come last. The 5th join leaves enough such keys for each lone zone to reach
    the target (within 0.05 of the mean, 1/2), and the 6th join takes them."""
    before, after = round_robin(6, 4)[4:6]
    assert after.zone_sizes() == {"zone-0": 2, "zone-1": 2, "zone-2": 1, "zone-3": 1}
    share_before, pushable = zone_carried(before, "zone-1")
    share_after, _ = zone_carried(after, "zone-1")
    for lone in ("zone-2", "zone-3"):
        floor = share_before[lone] - pushable.get(lone, 0.0)
        assert floor <= 0.5 + 0.025
        assert share_after[lone] <= 0.5 + 0.025


def zone_carried(ring: Ring, absent: str) -> tuple[dict[str, float], dict[str, float]]:
    """Fraction of the keys each zone holds a replica of, and of the keys without zone
    ``absent``, the fraction where each zone comes last in the walk."""
    share: dict[str, float] = {}
    last: dict[str, float] = {}
    for r in ring.ranges():
        width = r.size() / RING_SIZE
        zones = [ring.zone_of(replica.node) for replica in preference_list(ring, r.end, N)]
        for zone in zones:
            share[zone] = share.get(zone, 0.0) + width
        if absent not in zones:
            last[zones[-1]] = last.get(zones[-1], 0.0) + width
    return share, last


# Five zones, N=3, at 6 nodes (2/1/1/1/1): every lone zone must drop from 3/5 of the keys to
# 1/2, which the 6th node can do only where zone-0 is left out and the lone zone comes last;
# the 5th join (one node per zone, placed by _carve_replicated, which does not look ahead)
# leaves too few such keys for one of them (1.076 against a bound of 1.0).
# Strict: a size that starts passing fails here, so this list stays true. See docs/capacity.md.
FIVE_ZONES_SHORT = {6}


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(
            size,
            marks=pytest.mark.xfail(strict=True, reason="a known shortfall with 5 zones"),
        )
        if size in FIVE_ZONES_SHORT
        else size
        for size in range(3, 31)
    ],
)
def test_five_zones_every_size_3_to_30(size: int) -> None:
    check_against_bound(round_robin(30, 5)[size - 1])


@pytest.mark.parametrize("size", range(3, 31))
def test_two_unequal_zones_within_005_of_the_bound(size: int) -> None:
    """Two zones filled 5:3: where the larger zone has grown to twice the smaller (4/2, 6/3)
    it must take the third replica of every key, so the smaller zone's nodes carry exactly
    their share of its sub-ring, which only that zone's joins set."""
    check_against_bound(proportional(30, (5, 3))[size - 1])


@pytest.mark.parametrize("weights", [(2, 1), (3, 2)])
@pytest.mark.parametrize("size", range(3, 25))
def test_two_zones_in_other_proportions(weights: tuple[int, int], size: int) -> None:
    check_against_bound(proportional(24, weights)[size - 1])


@pytest.mark.parametrize("size", range(3, 31))
def test_unequal_zones_within_005_of_the_bound(size: int) -> None:
    ring = proportional(30, (5, 3, 2))[size - 1]
    bound = replica_balance_bound(ring.zone_sizes(), N)
    assert replica_balance(ring, N) <= bound + 0.05


# More zones than replicas, filled unevenly (4 zones 2:1:1:1, 5 zones 3:2:2:1:1): a join
# prepares the next one (``_next_to_grow``) for the smallest zones while the sizes differ by at
# most one node, and only then for every zone; a larger zone's next node, which must push the
# lone zones out of a share of the keys they hold, may find too few keys where a lone zone
# comes last. These sizes miss the bound by up to 0.06 and 0.17.
# Strict, as above: the lists say exactly where the allocator falls short today.
UNEVEN_SHORT = {
    (2, 1, 1, 1): {6, 8},
    (3, 2, 2, 1, 1): {6, 9, 10, 11},
}


@pytest.mark.parametrize(
    ("weights", "size"),
    [
        pytest.param(
            weights,
            size,
            marks=pytest.mark.xfail(strict=True, reason="a known shortfall, uneven zones"),
        )
        if size in short
        else (weights, size)
        for weights, short in UNEVEN_SHORT.items()
        for size in range(3, 31)
    ],
)
def test_more_zones_than_replicas_filled_unevenly(weights: tuple[int, ...], size: int) -> None:
    check_against_bound(proportional(30, weights)[size - 1])


@pytest.mark.parametrize("zones", [2, 3, 4])
@pytest.mark.parametrize("size", range(4, 49))
def test_data_moved_on_a_join_is_the_newcomers_share(zones: int, size: int) -> None:
    """Only the newcomer gains replicas, and only what it must own (within 10 %)."""
    before, after = round_robin(48, zones)[size - 2], round_robin(48, zones)[size - 1]
    newcomer = (set(after.nodes) - set(before.nodes)).pop()
    gained = replicas_gained(before, after, N)
    owns = replica_loads(after, N)[newcomer]
    # What it must own: its zone's share at the bound, spread evenly over the zone.
    sizes = after.zone_sizes()
    zone = after.zone_of(newcomer)
    ideal = zone_shares(sizes, N)[zone] / sizes[zone] * RING_SIZE
    assert sum(gained.values()) <= 1.10 * ideal
    assert owns <= 1.10 * ideal


# About a minute on a loaded 2-core machine (1,000 joins, each reading a ring of up to 128,000
# tokens): `slow`, so `-m "not slow"` leaves it out of a quick run; `make test` and CI run it.
@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_zones_at_100_and_300_nodes() -> None:
    """Two zones (N=3: the third replica to whichever zone's next node comes first), joined
    one at a time: a few minutes, as each join is chosen over the whole ring."""
    ring = Ring.empty()
    checked = {}
    for i in range(300):
        node, zone = f"node-{i:04d}", f"zone-{i % 2}"
        ring = ring.with_node(node, zone, allocate_tokens(ring, node, zone=zone, replicas=N))
        if len(ring) in (100, 300):
            checked[len(ring)] = replica_balance(ring, N)
    assert set(checked) == {100, 300}
    for size, measured in checked.items():
        assert measured <= 1.05, (size, measured)


@pytest.mark.parametrize("zones", [2, 3, 4])
def test_existing_tokens_never_change(zones: int) -> None:
    """Allocation only returns the newcomer's tokens; the members' stay as they were."""
    rings = round_robin(48, zones)[:12]
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


# -- a sharded node's tokens, allocated slice by slice ------------------------------------------


def shard_loads(ring: Ring, shards: int) -> dict[tuple[str, int], int]:
    """Replica load of every (node, shard): the hash positions each shard process stores."""
    load = dict.fromkeys(((node, s) for node in ring.nodes for s in range(shards)), 0)
    for r in ring.ranges():
        replicas = preference_list(ring, r.end, N)
        for shard, lo, hi in split_range(r.start, r.end, shards):
            width = (hi - lo) % RING_SIZE or RING_SIZE
            for replica in replicas:
                load[(replica.node, shard)] += width
    return load


def worst_shard(ring: Ring, shards: int) -> float:
    """The largest (busiest shard / its node's mean shard) over the ring's nodes."""
    load = shard_loads(ring, shards)
    return max(
        max(load[(node, s)] for s in range(shards))
        / (sum(load[(node, s)] for s in range(shards)) / shards)
        for node in ring.nodes
    )


@cache
def sliced(total: int, shards: int, zones: int = 3) -> tuple[Ring, ...]:
    """Rings after each join of nodes run with ``--shards shards`` (tokens per slice)."""
    ring = Ring.empty()
    out = []
    for i in range(total):
        node, zone = f"node-{i:04d}", f"zone-{i % zones}"
        tokens = allocate_tokens(ring, node, zone=zone, replicas=N, slices=shards)
        ring = ring.with_node(node, zone, tokens)
        out.append(ring)
    return tuple(out)


@pytest.mark.parametrize("shards", [2, 4, 8])
@pytest.mark.parametrize("size", [3, 4, 6, 9, 12, 17, 24])
def test_every_shard_of_a_sharded_node_carries_its_share(shards: int, size: int) -> None:
    """Every node's busiest shard within 5 % of the node's mean shard, and the nodes as
    balanced as ever; tokens over the whole ring leave the busiest shard 1.2-2x the mean
    (benchmarks/ring_balance.py --shards S --unsliced)."""
    ring = sliced(24, shards)[size - 1]
    check_against_bound(ring)
    assert worst_shard(ring, shards) <= 1.05, (size, shards, worst_shard(ring, shards))
    for node in ring.nodes:
        per_slice = [shard_of(t, shards) for t in ring.tokens_of(node)]
        assert sorted(set(per_slice)) == list(range(shards))
        assert max(per_slice.count(s) for s in range(shards)) == DEFAULT_VNODES // shards


def test_tokens_over_the_whole_ring_leave_shards_uneven() -> None:
    """What slices fix: the same joins without them leave a busiest shard far above its
    node's mean."""
    assert worst_shard(round_robin(24)[11], 4) > 1.2


@pytest.mark.parametrize("shards", [2, 8])
def test_a_sliced_join_moves_only_the_newcomers_share(shards: int) -> None:
    rings = sliced(24, shards)
    for size in (4, 9, 16, 24):
        before, after = rings[size - 2], rings[size - 1]
        newcomer = (set(after.nodes) - set(before.nodes)).pop()
        gained = replicas_gained(before, after, N)
        assert {node for node, gain in gained.items() if gain} == {newcomer}
        assert sum(gained.values()) <= 1.10 * RING_SIZE * N / size


@settings(max_examples=25, deadline=None)
@given(
    shards=st.integers(2, 12),
    count=st.integers(1, 300),
    existing=st.integers(0, 5),
    seed=st.integers(0, 2**32),
)
def test_sliced_tokens_are_distinct_new_and_spread_over_the_slices(
    shards: int, count: int, existing: int, seed: int
) -> None:
    rng = random.Random(seed)
    ring = Ring.empty()
    for i in range(existing):
        ring = ring.with_node(f"old-{i}", f"z{i % 3}", [rng.getrandbits(64) for _ in range(32)])
    tokens = allocate_tokens(ring, "new", count, zone="z0", replicas=N, slices=shards)
    assert len(tokens) == count == len(set(tokens))
    assert list(tokens) == sorted(tokens)
    assert not set(tokens) & set(ring.sorted_tokens)
    assert all(0 <= t < RING_SIZE for t in tokens)
    per_slice = [sum(1 for t in tokens if shard_of(t, shards) == s) for s in range(shards)]
    if count >= MIN_TOKENS_PER_SLICE * shards:
        assert max(per_slice) - min(per_slice) <= 1, per_slice
    else:  # too few per slice: allocated over the whole ring, as for one slice
        whole = allocate_tokens(ring, "new", count, zone="z0", replicas=N)
        assert tokens == whole


@pytest.mark.parametrize("zones", [2, 4])
def test_where_zones_compete_for_an_extra_replica_tokens_stay_whole_ring(zones: int) -> None:
    """2 or 4 zones with N=3 are balanced over the whole ring whatever the shard count (per
    slice they balanced the nodes worse); only the first node of each zone is placed per slice."""
    ring = round_robin(zones + 2, zones)[zones + 1]
    node, zone = "newcomer", "zone-0"
    whole = allocate_tokens(ring, node, zone=zone, replicas=N)
    assert allocate_tokens(ring, node, zone=zone, replicas=N, slices=4) == whole
