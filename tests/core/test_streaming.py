"""Tests for ringkv.core.streaming: which ranges move where when the ring changes.

The oracle cuts the hash space at every token of both rings and asks the placement, slice by
slice, which replicas there are now and later; a plan must give each new replica exactly the
slices it lacks (nothing more: only what changes owner moves), from a live current replica.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tests.strategies import positions, rings

from ringkv.core.placement import preference_list
from ringkv.core.ring import RING_SIZE, Ring
from ringkv.core.streaming import (
    Transfer,
    moved_fraction,
    plan_rebuild,
    plan_transfers,
)

replication = st.integers(min_value=1, max_value=4)
Slice = tuple[int, int]


def slices(*all_rings: Ring) -> list[Slice]:
    tokens = sorted({t for ring in all_rings for t in ring.sorted_tokens})
    return [(tokens[i - 1], tokens[i]) for i in range(len(tokens))] if tokens else []


def replicas(ring: Ring, position: int, n: int) -> set[str]:
    return {r.node for r in preference_list(ring, position, n)} if len(ring) else set()


def expand(transfers: list[Transfer], cut: list[Slice]) -> dict[tuple[Slice, str], str | None]:
    """(slice, target) -> source for every slice each transfer covers; each transfer must start
    and end on slice bounds, and no slice may reach a target twice."""
    by_start = {start: (start, end) for start, end in cut}
    out: dict[tuple[Slice, str], str | None] = {}
    for t in transfers:
        position = t.start
        while True:
            piece = by_start[position]  # a KeyError: the transfer does not start on a cut
            assert (piece, t.target) not in out, f"{piece} reaches {t.target} twice"
            out[piece, t.target] = t.source
            position = piece[1]
            if position == t.end:
                break
    return out


def needed(current: Ring, future: Ring, n: int) -> dict[tuple[Slice, str], set[str]]:
    """(slice, new replica) -> the current replicas that could send it."""
    out = {}
    for piece in slices(current, future):
        now, later = replicas(current, piece[1], n), replicas(future, piece[1], n)
        for target in later - now:
            out[piece, target] = now - {target}
    return out


def check_plan(
    transfers: list[Transfer], current: Ring, future: Ring, n: int, alive: set[str]
) -> None:
    want = needed(current, future, n)
    got = expand(transfers, slices(current, future))
    assert got.keys() == want.keys()  # every missing slice, and nothing else
    for key, source in got.items():
        live_candidates = want[key] & alive
        if live_candidates:
            assert source in live_candidates, (key, source)
        else:
            assert source is None, (key, source)  # reported, not executed
    assert transfers == sorted(transfers, key=lambda t: (t.target, t.start))


@st.composite
def joins(draw: st.DrawFn) -> tuple[Ring, Ring, str]:
    current = draw(rings())
    taken = set(current.sorted_tokens)
    tokens = draw(st.lists(positions.filter(lambda p: p not in taken), min_size=1, max_size=6,
                           unique=True))  # fmt: skip
    zone = draw(st.sampled_from([*current.zones, "z-new"]))
    return current, current.with_node("new", zone, tokens), "new"


@settings(max_examples=150, deadline=None)
@given(current=rings(), future=rings(), n=replication, data=st.data())
def test_any_change_moves_exactly_the_missing_slices_from_live_replicas(
    current: Ring, future: Ring, n: int, data: st.DataObject
) -> None:
    nodes = sorted(set(current.nodes) | set(future.nodes))
    alive = set(data.draw(st.lists(st.sampled_from(nodes), unique=True)))
    check_plan(plan_transfers(current, future, n, alive), current, future, n, alive)


@settings(max_examples=100, deadline=None)
@given(ring=rings(), n=replication)
def test_no_change_moves_nothing(ring: Ring, n: int) -> None:
    assert plan_transfers(ring, ring, n, set(ring.nodes)) == []
    assert moved_fraction([]) == 0.0


@settings(max_examples=100, deadline=None)
@given(change=joins())
def test_a_join_at_n1_moves_exactly_what_the_new_node_comes_to_own(
    change: tuple[Ring, Ring, str],
) -> None:
    current, future, new = change
    transfers = plan_transfers(current, future, 1, set(current.nodes))
    assert {t.target for t in transfers} <= {new}
    assert all(t.source in current.nodes for t in transfers)
    owned = future.owned_positions()[new]
    assert sum(t.size() for t in transfers) == owned
    assert moved_fraction(transfers) == pytest.approx(owned / RING_SIZE)


@settings(max_examples=100, deadline=None)
@given(ring=rings(), n=replication, data=st.data())
def test_a_leaving_node_streams_its_own_data_when_it_is_preferred(
    ring: Ring, n: int, data: st.DataObject
) -> None:
    assume(len(ring) >= 2)
    leaving = data.draw(st.sampled_from(ring.nodes))
    future = ring.without_node(leaving)
    alive = set(ring.nodes)
    transfers = plan_transfers(ring, future, n, alive, prefer_source=leaving)
    check_plan(transfers, ring, future, n, alive)
    assert leaving not in {t.target for t in transfers}
    for (piece, _), source in expand(transfers, slices(ring, future)).items():
        if leaving in replicas(ring, piece[1], n):
            assert source == leaving  # it holds that slice: it sends it


@settings(max_examples=100, deadline=None)
@given(change=joins(), n=replication)
def test_with_no_live_source_every_transfer_is_unsourced(
    change: tuple[Ring, Ring, str], n: int
) -> None:
    current, future, _ = change
    transfers = plan_transfers(current, future, n, set())
    assert transfers and all(t.source is None for t in transfers)
    check_plan(transfers, current, future, n, set())


@settings(max_examples=100, deadline=None)
@given(ring=rings(), n=replication, data=st.data())
def test_a_rebuild_refills_every_slice_the_node_replicates(
    ring: Ring, n: int, data: st.DataObject
) -> None:
    node = data.draw(st.sampled_from(ring.nodes))
    alive = set(data.draw(st.lists(st.sampled_from(ring.nodes), unique=True))) | {node}
    transfers = plan_rebuild(ring, n, node, alive)
    cut = slices(ring)
    got = expand(transfers, cut)
    mine = {piece for piece in cut if node in replicas(ring, piece[1], n)}
    assert {piece for piece, target in got} == mine and {t.target for t in transfers} <= {node}
    for (piece, _), source in got.items():
        others = (replicas(ring, piece[1], n) - {node}) & alive
        assert source in others if others else source is None


def test_transfer_size_wraps_around_the_ring() -> None:
    assert Transfer(RING_SIZE - 10, 5, "a", "b").size() == 15
    assert Transfer(100, 300, "a", "b").size() == 200
    assert Transfer(7, 7, "a", "b").size() == RING_SIZE  # one token: the whole ring


def test_adjacent_slices_are_coalesced_into_one_transfer() -> None:
    current = Ring({"a": [100, 200, 300]}, {"a": "z1"})
    future = current.with_node("b", "z2", [150, 250])
    # N=2: b replicates everything later; a keeps everything, so b gets the whole ring from a
    transfers = plan_transfers(current, future, 2, {"a", "b"})
    assert sum(t.size() for t in transfers) == RING_SIZE
    assert {(t.source, t.target) for t in transfers} == {("a", "b")}
    assert len(transfers) == 1, transfers
    assert moved_fraction(transfers) == 1.0


def test_empty_rings_plan_nothing() -> None:
    assert plan_transfers(Ring.empty(), Ring.empty(), 3, set()) == []
    assert plan_rebuild(Ring.empty(), 3, "a", set()) == []
