"""ringkv.core.listing: the ring cut into ascending pieces, cursors, page limits."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.core.listing import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    MalformedCursor,
    decode_cursor,
    encode_cursor,
    merge_listings,
    parse_limit,
    segments,
)
from ringkv.core.ring import RING_SIZE, Ring

tokens = st.sets(st.integers(0, RING_SIZE - 1), min_size=1, max_size=12)


@given(tokens, st.integers(-1, RING_SIZE - 1))
def test_pieces_cover_the_ring_once_in_order(chosen: set[int], after: int) -> None:
    ordered = sorted(chosen)
    ring = Ring({"a": ordered[::2], "b": ordered[1::2]} if len(ordered) > 1 else {"a": ordered},
                {"a": "z1", "b": "z2"})  # fmt: skip
    pieces = segments(ring)
    assert pieces[0].lo == 0 and pieces[-1].hi == RING_SIZE - 1
    for before, piece in pairwise(pieces):
        assert piece.lo == before.hi + 1  # no gap, no overlap
    by_end = {r.end: r for r in ring.ranges()}
    for piece in pieces:
        assert piece.lo <= piece.hi
        assert by_end[piece.token].contains(piece.lo) and by_end[piece.token].contains(piece.hi)
    resumed = segments(ring, after)
    assert resumed == [p for p in pieces if p.hi > after]
    assert not resumed or resumed[0].lo <= after + 1


@given(st.integers(0, RING_SIZE - 1), st.binary(max_size=256))
def test_cursor_round_trip(h: int, key: bytes) -> None:
    assert decode_cursor(encode_cursor((h, key))) == (h, key)


@pytest.mark.parametrize("bad", ["!!", "AAAA", "A" * 400])
def test_bad_cursors(bad: str) -> None:
    with pytest.raises(MalformedCursor):
        decode_cursor(bad)


def test_limits() -> None:
    assert parse_limit(None) == DEFAULT_LIST_LIMIT
    assert parse_limit("1") == 1 and parse_limit(str(MAX_LIST_LIMIT)) == MAX_LIST_LIMIT
    for bad in ("0", "-1", "x", str(MAX_LIST_LIMIT + 1), "9" * 20):
        with pytest.raises(ValueError):
            parse_limit(bad)


positions = st.tuples(st.integers(0, 50), st.binary(min_size=1, max_size=2))


@given(
    st.lists(st.sets(positions, max_size=12), min_size=1, max_size=3),
    st.lists(st.integers(1, 8), min_size=3, max_size=3),
    st.integers(1, 10),
)
def test_merged_listing_is_the_union_up_to_the_smallest_stop(
    holdings: list[set[tuple[int, bytes]]], limits: list[int], limit: int
) -> None:
    """Simulate replicas answering the same span with different holdings and limits: the
    merge is exactly the union of their keys up to where all of them have looked."""
    answers = []
    for held, own_limit in zip(holdings, limits, strict=False):
        keys = sorted(held)[:own_limit]
        stop = keys[-1] if len(held) > own_limit else None
        answers.append((keys, stop))
    merged, bound = merge_listings(answers, limit)
    union = sorted(set().union(*holdings))
    expected = [p for p in union if bound is None or p <= bound]
    assert merged == expected[: len(merged)] and len(merged) <= limit
    if bound is None:
        assert merged == union
    else:
        assert merged == [p for p in union if p <= bound]  # nothing before bound is missed
