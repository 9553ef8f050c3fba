"""Tests for ringkv.core.cleanup: when a node may delete the ranges it gave away, and which."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.core.test_placement import rings

from ringkv.core import gossip as g
from ringkv.core.allocation import allocate_tokens
from ringkv.core.cleanup import (
    SETTLE_MS,
    MemberInfo,
    cleanup_plan,
    foreign_ranges,
    hold_reason,
    range_bounds,
    records_to_hand_off,
)
from ringkv.core.placement import preference_list
from ringkv.core.ring import RING_SIZE, Ring, initial_tokens

NOW = 1_000_000_000


def grown(names: list[str], zones: dict[str, str], vnodes: int = 8) -> Ring:
    ring = Ring({}, {})
    for name in names:
        tokens = allocate_tokens(ring, name, vnodes) if len(ring) else initial_tokens(name, vnodes)
        ring = ring.with_node(name, zones[name], tokens)
    return ring


ZONES = {"n1": "z1", "n2": "z2", "n3": "z3", "n4": "z1"}
THREE = grown(["n1", "n2", "n3"], ZONES)
FOUR = grown(["n1", "n2", "n3", "n4"], ZONES)


def members(ring: Ring, **overrides: MemberInfo) -> dict[str, MemberInfo]:
    out = {n: MemberInfo(g.NORMAL, True, ring_version=ring.version) for n in ring.nodes}
    out.update(overrides)
    return out


def contains(span: tuple[int, int], h: int) -> bool:
    start, end = span
    if start < end:
        return start < h <= end
    return h > start or h <= end


def test_after_a_join_the_old_owner_cleans_exactly_what_it_gave_away() -> None:
    plan = cleanup_plan("n1", FOUR, FOUR, 3, members(FOUR), NOW)
    assert plan.hold is None and plan.ready and not plan.waiting
    # every foreign range was n1's before n4 joined (z1 is shared by n1 and n4 now)
    for _start, end in plan.ready:
        assert "n1" in {r.node for r in preference_list(THREE, end, 3)}
        assert "n1" not in {r.node for r in preference_list(FOUR, end, 3)}
    # n2 and n3 are the only nodes of their zones: they replicate everything
    assert cleanup_plan("n2", FOUR, FOUR, 3, members(FOUR), NOW).ready == ()


def test_pending_cancelled_and_unconfirmed_changes_hold_cleanup_back() -> None:
    ok = members(FOUR)
    assert hold_reason("n1", FOUR, FOUR, ok, NOW) is None
    assert hold_reason("n1", THREE, FOUR, ok, NOW) == "a ring change is pending"
    joining = {**ok, "n5": MemberInfo(g.JOINING, False)}  # dead mid-join: it resumes later
    assert "n5 is joining" in str(hold_reason("n1", FOUR, FOUR, joining, NOW))
    removing = {**ok, "n2": MemberInfo(g.NORMAL, True, removing="n9", ring_version=FOUR.version)}
    assert "removing n9" in str(hold_reason("n1", FOUR, FOUR, removing, NOW))
    waiting = {**ok, "n5": MemberInfo(g.STARTING, True, has_tokens=True)}
    assert "waits for replace" in str(hold_reason("n1", FOUR, FOUR, waiting, NOW))
    cancelled = {
        **ok,
        "n5": MemberInfo(g.STARTING, True, has_tokens=False, change_state="cancelled",
                         change_updated_ms=NOW - 1000),
    }  # fmt: skip
    assert "cancelled" in str(hold_reason("n1", FOUR, FOUR, cancelled, NOW))
    assert hold_reason("n1", FOUR, FOUR, cancelled, NOW + SETTLE_MS) is None
    behind = {**ok, "n3": MemberInfo(g.NORMAL, True, ring_version=THREE.version)}
    assert "does not see ring" in str(hold_reason("n1", FOUR, FOUR, behind, NOW))
    dead_behind = {**ok, "n3": MemberInfo(g.NORMAL, False, ring_version=THREE.version)}
    assert hold_reason("n1", FOUR, FOUR, dead_behind, NOW) is None  # cannot route writes
    assert "just started" in str(hold_reason("n1", FOUR, FOUR, ok, NOW, started_ms=NOW - 10))
    leaving = {**ok, "n1": MemberInfo(g.LEAVING, True, ring_version=FOUR.version)}
    assert "not a normal ring member" in str(hold_reason("n1", FOUR, FOUR, leaving, NOW))
    assert "not a normal ring member" in str(hold_reason("n9", FOUR, FOUR, ok, NOW))


def test_ranges_whose_replicas_are_not_all_up_and_normal_wait() -> None:
    down = members(FOUR, n4=MemberInfo(g.NORMAL, False, ring_version=FOUR.version))
    plan = cleanup_plan("n1", FOUR, FOUR, 3, down, NOW)
    assert plan.hold is None and not plan.ready  # n4 replicates every range n1 gave away
    assert plan.waiting and all("n4" in why for _, why in plan.waiting)


@settings(max_examples=150, deadline=None)
@given(rings(), st.integers(min_value=1, max_value=4), st.data())
def test_foreign_ranges_are_exactly_the_positions_a_node_does_not_replicate(
    ring: Ring, n: int, data: st.DataObject
) -> None:
    node = data.draw(st.sampled_from(ring.nodes))
    spans = foreign_ranges(ring, node, n)
    for r in ring.ranges():
        for h in {r.end, (r.start + 1) % RING_SIZE}:
            replicas = {x.node for x in preference_list(ring, h, n)}
            covering = [s for s, _ in spans if contains(s, h)]
            assert len(covering) == (0 if node in replicas else 1), (h, spans)
            if covering:
                owners = next(set(reps) for s, reps in spans if s == covering[0])
                assert owners == replicas


@given(st.integers(0, RING_SIZE - 1), st.integers(0, RING_SIZE - 1))
def test_range_bounds_cover_the_range_without_wrapping(start: int, end: int) -> None:
    bounds = range_bounds(start, end)
    assert all(0 <= lo <= hi < RING_SIZE for lo, hi in bounds)
    for h in {start, end, (start + 1) % RING_SIZE, (end + 1) % RING_SIZE, 0, RING_SIZE - 1}:
        inside = any(lo <= h <= hi for lo, hi in bounds)
        expected = contains((start, end), h) if start != end else True  # the whole ring
        assert inside == expected


def test_records_to_hand_off_picks_what_a_replica_holds_differently() -> None:
    ours = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert records_to_hand_off(ours, [2, 0, 2, 7]) == [b"a", b"c"]
    assert records_to_hand_off(ours, []) == []
