"""Tests for ringkv.core.ring: hashing, token ranges, the Ring value and token allocation."""

from __future__ import annotations

import hashlib
import time
from functools import cache
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.allocation import allocate_tokens
from ringkv.core.ring import (
    DEFAULT_VNODES,
    RING_SIZE,
    Ring,
    TokenRange,
    initial_tokens,
    key_hash,
)

positions = st.integers(min_value=0, max_value=RING_SIZE - 1)


@st.composite
def rings(draw: st.DrawFn, max_nodes: int = 8, max_zones: int = 4, max_vnodes: int = 6) -> Ring:
    """Small rings with random tokens (edge positions 0 and 2**64-1 come up often)."""
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


def join_all(node_ids: list[str], count: int = DEFAULT_VNODES, zones: int = 3) -> list[Ring]:
    """Join nodes one at a time with allocate_tokens; returns the ring after each join."""
    ring = Ring.empty()
    history = []
    for i, node in enumerate(node_ids):
        ring = ring.with_node(node, f"zone-{i % zones}", allocate_tokens(ring, node, count))
        history.append(ring)
    return history


@cache
def sequential_rings(total: int = 64) -> tuple[Ring, ...]:
    """Rings with 1..total nodes joined in sorted-id order (node-00, node-01, ...)."""
    return tuple(join_all([f"node-{i:02d}" for i in range(total)]))


def moved_positions(old: Ring, new: Ring) -> int:
    """Exact number of hash positions whose primary owner differs between two rings."""
    bounds = sorted(set(old.sorted_tokens) | set(new.sorted_tokens))
    moved = 0
    prev = bounds[-1] - RING_SIZE
    for bound in bounds:
        # Every position in (prev, bound] has the same owner as `bound` in both rings.
        if old.owner_of(bound) != new.owner_of(bound):
            moved += bound - prev
        prev = bound
    return moved


# -- key_hash --------------------------------------------------------------------------------


@given(st.binary())
def test_key_hash_is_64_bit_blake2b(key: bytes) -> None:
    h = key_hash(key)
    assert h == int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    assert 0 <= h < RING_SIZE


def test_key_hash_golden_value() -> None:
    assert key_hash(b"hello") == 12085107955937391741


# -- TokenRange ------------------------------------------------------------------------------


def test_token_range_plain_wrapping_and_whole_ring() -> None:
    plain = TokenRange(10, 20, "a")
    assert [h for h in (9, 10, 11, 20, 21) if plain.contains(h)] == [11, 20]
    assert plain.size() == 10

    wrapping = TokenRange(RING_SIZE - 5, 3, "a")
    assert wrapping.contains(RING_SIZE - 1) and wrapping.contains(0) and wrapping.contains(3)
    assert not wrapping.contains(RING_SIZE - 5) and not wrapping.contains(4)
    assert wrapping.size() == 8

    whole = TokenRange(7, 7, "a")
    assert all(whole.contains(h) for h in (0, 6, 7, 8, RING_SIZE - 1))
    assert whole.size() == RING_SIZE


@given(positions, positions, positions)
def test_token_range_contains_matches_size(start: int, end: int, h: int) -> None:
    r = TokenRange(start, end, "x")
    # h is in (start, end] iff it lies within `size` steps clockwise after start.
    assert r.contains(h) == ((h - start - 1) % RING_SIZE < r.size())
    assert 1 <= r.size() <= RING_SIZE


# -- Ring construction and accessors ---------------------------------------------------------


def test_ring_accessors() -> None:
    ring = Ring({"b": [50, 10], "a": [30], "c": [70]}, {"a": "z1", "b": "z2", "c": "z1", "x": "z9"})
    assert ring.nodes == ("a", "b", "c")
    assert ring.sorted_tokens == (10, 30, 50, 70)
    assert ring.token_owners == ("b", "a", "b", "c")
    assert ring.zones == ("z1", "z2")  # "x" has no tokens, so it is not a member
    assert ring.zone_of("b") == "z2"
    assert ring.tokens_of("b") == (10, 50)
    assert len(ring) == 3 and "a" in ring and "x" not in ring
    assert list(ring) == ["a", "b", "c"]
    with pytest.raises(KeyError):
        ring.zone_of("x")
    with pytest.raises(KeyError):
        ring.tokens_of("x")


@pytest.mark.parametrize(
    ("tokens", "zones"),
    [
        ({"a": [1, 2], "b": [2]}, {"a": "z", "b": "z"}),  # token claimed twice
        ({"a": [1, 1]}, {"a": "z"}),  # repeated by one node
        ({"a": [-1]}, {"a": "z"}),
        ({"a": [RING_SIZE]}, {"a": "z"}),
        ({"a": [1], "b": [2]}, {"a": "z"}),  # b has no zone
        ({"a": []}, {"a": "z"}),  # no tokens
    ],
)
def test_ring_rejects_invalid_input(tokens: dict[str, list[int]], zones: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Ring(tokens, zones)


def test_empty_ring() -> None:
    ring = Ring.empty()
    assert len(ring) == 0 and ring.nodes == () and ring.sorted_tokens == ()
    assert ring.ranges() == () and ring.ownership() == {} and ring.balance() == 1.0
    assert ring == Ring({}, {})
    with pytest.raises(IndexError):
        ring.token_index(0)


def test_single_token_ring_owns_everything() -> None:
    ring = Ring({"a": [12345]}, {"a": "z"})
    (only,) = ring.ranges()
    assert only.size() == RING_SIZE and only.contains(12345) and only.contains(0)
    assert ring.ownership() == {"a": 1.0} and ring.balance() == 1.0
    assert ring.token_index(0) == ring.token_index(RING_SIZE - 1) == 0


def test_equality_hash_and_version_are_by_content() -> None:
    a = Ring({"a": [1, 2**63], "b": [7]}, {"a": "z1", "b": "z2"})
    b = Ring({"b": (7,), "a": iter([2**63, 1])}, {"b": "z2", "a": "z1", "unused": "z3"})
    assert a == b and hash(a) == hash(b) and a.version == b.version
    assert a.version == "64816a0cf68de168"  # stable across processes and releases
    assert len({a, b}) == 1
    assert a != Ring({"a": [1, 2**63], "b": [7]}, {"a": "z1", "b": "z1"})
    assert a != Ring({"a": [1, 2**63], "b": [8]}, {"a": "z1", "b": "z2"})
    assert a.version != Ring({"a": [1, 2**63], "b": [8]}, {"a": "z1", "b": "z2"}).version
    assert a != "not a ring"


@given(rings())
def test_token_index_is_first_token_at_or_after(ring: Ring) -> None:
    tokens = ring.sorted_tokens
    assert list(tokens) == sorted(tokens) and len(ring.token_owners) == len(tokens)
    for h in (0, RING_SIZE - 1, *tokens, *(t + 1 for t in tokens if t + 1 < RING_SIZE)):
        idx = ring.token_index(h)
        if h > tokens[-1]:
            assert idx == 0
        else:
            assert tokens[idx] >= h and (idx == 0 or tokens[idx - 1] < h)


def test_token_index_rejects_positions_off_the_ring() -> None:
    ring = Ring({"a": [5]}, {"a": "z"})
    with pytest.raises(ValueError):
        ring.token_index(-1)
    with pytest.raises(ValueError):
        ring.token_index(RING_SIZE)


@given(rings(), st.lists(positions, max_size=20))
def test_ranges_partition_the_ring_consistently_with_token_index(
    ring: Ring, hashes: list[int]
) -> None:
    ranges = ring.ranges()
    assert len(ranges) == len(ring.sorted_tokens)
    assert [r.end for r in ranges] == list(ring.sorted_tokens)
    assert [r.owner for r in ranges] == list(ring.token_owners)
    assert sum(r.size() for r in ranges) == RING_SIZE
    for h in [*hashes, *ring.sorted_tokens]:
        holders = [i for i, r in enumerate(ranges) if r.contains(h)]
        assert holders == [ring.token_index(h)]
        assert ranges[holders[0]].owner == ring.owner_of(h)


@given(rings())
def test_ownership_matches_range_sizes(ring: Ring) -> None:
    by_ranges = dict.fromkeys(ring.nodes, 0)
    for r in ring.ranges():
        by_ranges[r.owner] += r.size()
    assert ring.owned_positions() == by_ranges
    ownership = ring.ownership()
    assert set(ownership) == set(ring.nodes)
    assert sum(ownership.values()) == pytest.approx(1.0)
    assert all(ownership[node] == by_ranges[node] / RING_SIZE for node in ring.nodes)
    expected = max(by_ranges.values()) * len(ring) / RING_SIZE if len(ring) > 1 else 1.0
    assert ring.balance() == pytest.approx(expected)
    assert ring.balance() >= 1.0 - 1e-12


def test_balance_of_a_lopsided_ring() -> None:
    quarter = RING_SIZE // 4
    ring = Ring({"a": [quarter], "b": [RING_SIZE - 1]}, {"a": "z", "b": "z"})
    assert ring.ownership()["a"] == pytest.approx(0.25)
    assert ring.balance() == pytest.approx(1.5)


# -- with_node / without_node ----------------------------------------------------------------


@given(rings(), st.lists(positions, max_size=20))
def test_without_node_hands_ranges_to_the_next_node_clockwise(
    ring: Ring, hashes: list[int]
) -> None:
    victim = ring.nodes[0]
    if len(ring) == 1:
        assert len(ring.without_node(victim)) == 0
        return
    smaller = ring.without_node(victim)
    assert victim not in smaller and len(smaller) == len(ring) - 1
    assert set(smaller.sorted_tokens) == set(ring.sorted_tokens) - set(ring.tokens_of(victim))
    assert sum(r.size() for r in smaller.ranges()) == RING_SIZE
    assert sum(smaller.ownership().values()) == pytest.approx(1.0)
    for node in smaller.nodes:
        assert smaller.tokens_of(node) == ring.tokens_of(node)
        assert smaller.zone_of(node) == ring.zone_of(node)
    for h in [*hashes, *ring.sorted_tokens]:
        old_owner = ring.owner_of(h)
        if old_owner != victim:
            assert smaller.owner_of(h) == old_owner
        else:
            # The first surviving token clockwise from h takes over.
            tokens, owners = ring.sorted_tokens, ring.token_owners
            i = ring.token_index(h)
            while owners[i] == victim:
                i = (i + 1) % len(tokens)
            assert smaller.owner_of(h) == owners[i]
    assert smaller.with_node(victim, ring.zone_of(victim), ring.tokens_of(victim)) == ring


def test_without_unknown_node_raises() -> None:
    with pytest.raises(KeyError):
        Ring({"a": [1]}, {"a": "z"}).without_node("b")


def test_with_node_redefines_an_existing_node() -> None:
    ring = Ring({"a": [1], "b": [2]}, {"a": "z1", "b": "z1"})
    moved = ring.with_node("b", "z2", [3, 4])
    assert moved.tokens_of("b") == (3, 4) and moved.zone_of("b") == "z2"
    assert moved.sorted_tokens == (1, 3, 4)
    with pytest.raises(ValueError):
        ring.with_node("c", "z1", [1])  # collides with a's token


# -- initial_tokens --------------------------------------------------------------------------


@given(st.text(max_size=20), st.integers(min_value=1, max_value=512))
def test_initial_tokens_are_evenly_spaced_and_deterministic(node: str, count: int) -> None:
    tokens = initial_tokens(node, count)
    assert tokens == initial_tokens(node, count)
    assert len(tokens) == count and list(tokens) == sorted(tokens)
    assert all(0 <= t < RING_SIZE for t in tokens)
    step = RING_SIZE // count
    assert all(b - a == step for a, b in pairwise(tokens))
    assert tokens[0] < step
    ring = Ring({node: tokens}, {node: "z"})
    assert ring.ownership() == {node: 1.0}


def test_initial_tokens_depend_on_the_id() -> None:
    assert initial_tokens("node-00") != initial_tokens("node-01")
    assert initial_tokens("node-00", 4) == (
        4156405434333800259,
        8768091452761188163,
        13379777471188576067,
        17991463489615963971,
    )
    with pytest.raises(ValueError):
        initial_tokens("a", 0)


# -- allocate_tokens -------------------------------------------------------------------------


def test_allocate_on_empty_ring_is_initial_tokens() -> None:
    assert allocate_tokens(Ring.empty(), "a") == initial_tokens("a")
    assert allocate_tokens(Ring.empty(), "a", 7) == initial_tokens("a", 7)


def test_allocate_rejects_members_and_bad_counts() -> None:
    ring = sequential_rings()[2]
    with pytest.raises(ValueError):
        allocate_tokens(ring, "node-00")
    with pytest.raises(ValueError):
        allocate_tokens(ring, "new", 0)


@pytest.mark.parametrize("n", range(3, 25))
def test_balance_with_default_tokens_3_to_24_nodes(n: int) -> None:
    ring = sequential_rings()[n - 1]
    assert len(ring) == n
    assert all(len(ring.tokens_of(node)) == DEFAULT_VNODES for node in ring.nodes)
    assert ring.balance() <= 1.15
    # The greedy allocator is in fact within a couple of percent of perfect.
    assert ring.balance() <= 1.02
    assert min(ring.ownership().values()) * n >= 0.98


def test_balance_stays_reasonable_for_25_to_64_nodes() -> None:
    table = {len(ring): ring.balance() for ring in sequential_rings()[24:64]}
    assert set(table) == set(range(25, 65))
    worst = max(table, key=table.__getitem__)
    assert table[worst] <= 1.25, f"n={worst}: max/mean {table[worst]:.4f}"


@pytest.mark.parametrize("n", range(1, 64))
def test_join_moves_exactly_the_new_nodes_share(n: int) -> None:
    old, new = sequential_rings()[n - 1], sequential_rings()[n]
    (joined,) = set(new.nodes) - set(old.nodes)
    moved = moved_positions(old, new)
    assert moved == new.owned_positions()[joined]
    fair = RING_SIZE / (n + 1)
    assert abs(moved - fair) <= 0.10 * fair


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=12), min_size=3, max_size=24, unique=True),
    st.integers(min_value=1, max_value=5),
)
def test_balance_for_other_id_sets_and_join_orders(node_ids: list[str], zones: int) -> None:
    # Hypothesis draws the ids in arbitrary (not sorted) order, which is the join order.
    for ring in join_all(node_ids, zones=zones)[2:]:
        assert ring.balance() <= 1.15


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=1, max_value=30), st.sampled_from([32, 64, 256]))
def test_join_moves_only_the_new_nodes_share_for_other_token_counts(n: int, count: int) -> None:
    rings_ = join_all([f"host{i}" for i in range(n + 1)], count=count)
    old, new = rings_[-2], rings_[-1]
    moved = moved_positions(old, new)
    assert moved == new.owned_positions()[f"host{n}"]
    assert abs(moved - RING_SIZE / (n + 1)) <= 0.10 * RING_SIZE / (n + 1)
    assert new.balance() <= 1.15


@settings(max_examples=25, deadline=None)
@given(rings(max_nodes=6, max_vnodes=20), st.integers(min_value=1, max_value=64))
def test_allocated_tokens_are_fresh_distinct_and_deterministic(ring: Ring, count: int) -> None:
    tokens = allocate_tokens(ring, "newcomer", count)
    assert tokens == allocate_tokens(ring, "newcomer", count)
    # Same content built from a differently ordered mapping -> same tokens.
    shuffled = Ring(
        {node: ring.tokens_of(node)[::-1] for node in reversed(ring.nodes)},
        {node: ring.zone_of(node) for node in ring.nodes},
    )
    assert allocate_tokens(shuffled, "newcomer", count) == tokens
    assert len(tokens) == count == len(set(tokens)) and list(tokens) == sorted(tokens)
    assert all(0 <= t < RING_SIZE for t in tokens)
    assert not set(tokens) & set(ring.sorted_tokens)
    grown = ring.with_node("newcomer", "z0", tokens)
    assert all(r.size() >= 1 for r in grown.ranges())
    fair = RING_SIZE // (len(ring) + 1)
    assert moved_positions(ring, grown) == grown.owned_positions()["newcomer"]
    assert grown.owned_positions()["newcomer"] <= fair + count


def test_allocate_never_splits_to_zero_width() -> None:
    # Ranges of width 1 cannot be split; only a's wide range can give anything up.
    ring = Ring({"a": [0], "b": [1, 2, 3]}, {"a": "z", "b": "z"})
    tokens = allocate_tokens(ring, "c", 5)
    assert all(t > 3 for t in tokens)
    crowded = Ring({"a": [0], "b": [1]}, {"a": "z", "b": "z"})
    assert len(allocate_tokens(crowded, "c", 3)) == 3


def test_allocation_for_the_24th_node_is_fast() -> None:
    ring = sequential_rings()[22]
    assert len(ring) == 23
    start = time.perf_counter()
    tokens = allocate_tokens(ring, "node-23")
    elapsed = time.perf_counter() - start
    assert tokens == sequential_rings()[23].tokens_of("node-23")
    assert elapsed < 0.25, f"allocating 128 tokens on a 23-node ring took {elapsed * 1000:.1f} ms"
