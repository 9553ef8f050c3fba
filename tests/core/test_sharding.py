"""The fixed token -> shard partition and the splitting of ring arcs at its boundaries."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.ring import RING_SIZE, TokenRange
from ringkv.core.sharding import (
    MAX_SHARDS,
    cut_at_slices,
    shard_of,
    slice_ends,
    slice_start,
    split_range,
)

tokens = st.integers(min_value=0, max_value=RING_SIZE - 1)
shard_counts = st.integers(min_value=1, max_value=MAX_SHARDS)


def test_equal_slices_in_token_order() -> None:
    assert [shard_of(t, 4) for t in (0, RING_SIZE // 4 - 1, RING_SIZE // 4, RING_SIZE - 1)] == [
        0, 0, 1, 3,
    ]  # fmt: skip
    assert shard_of(RING_SIZE - 1, 1) == 0
    assert slice_start(0, 3) == 0 and slice_start(3, 3) == RING_SIZE


@given(tokens, shard_counts)
def test_every_token_has_one_shard_whose_slice_holds_it(token: int, shards: int) -> None:
    shard = shard_of(token, shards)
    assert 0 <= shard < shards
    assert slice_start(shard, shards) <= token < slice_start(shard + 1, shards)


@given(shard_counts)
def test_slices_are_equal_within_one_token(shards: int) -> None:
    sizes = {slice_start(i + 1, shards) - slice_start(i, shards) for i in range(shards)}
    assert max(sizes) - min(sizes) <= 1


def _inside(start: int, end: int, token: int) -> bool:
    return TokenRange(start, end, "n").contains(token)


@settings(deadline=None)
@given(tokens, tokens, st.integers(min_value=1, max_value=64), st.lists(tokens, max_size=20))
def test_split_covers_the_arc_exactly_with_one_shard_per_piece(
    start: int, end: int, shards: int, probes: list[int]
) -> None:
    pieces = split_range(start, end, shards)
    whole = TokenRange(start, end, "n").size()
    assert (
        sum(TokenRange(s, e, "n").size() for _, s, e in pieces if s != e)
        + sum(RING_SIZE for _, s, e in pieces if s == e)
        == whole
    )
    # each piece's first and last token belong to its shard (slices are contiguous)
    for shard, s, e in pieces:
        assert shard_of((s + 1) % RING_SIZE, shards) == shard
        assert shard_of(e, shards) == shard
    # boundaries of the arc, the slices' edges and random tokens: in exactly one piece when in
    # the arc, and that piece's shard is the token's shard
    edges = [slice_start(i, shards) for i in range(shards)]
    for token in [*probes, start, end, (start + 1) % RING_SIZE, *edges, *(e - 1 for e in edges)]:
        token %= RING_SIZE
        holders = [shard for shard, s, e in pieces if _inside(s, e, token)]
        if _inside(start, end, token):
            assert holders == [shard_of(token, shards)]
        else:
            assert holders == []


@given(tokens, tokens)
def test_one_shard_keeps_the_arc_whole(start: int, end: int) -> None:
    assert split_range(start, end, 1) == [(0, start, end)]


@settings(deadline=None)
@given(tokens, tokens, st.sets(st.integers(min_value=1, max_value=16), min_size=1, max_size=3),
       st.lists(tokens, max_size=20))  # fmt: skip
def test_cuts_for_several_counts_give_pieces_each_in_one_shard_of_every_count(
    start: int, end: int, counts: set[int], probes: list[int]
) -> None:
    """Nodes of different shard counts cut an arc alike: pieces in ring order that cover it
    exactly, each inside one slice of every count, ending at ring or slice ends only."""
    pieces = cut_at_slices(start, end, counts)
    whole = TokenRange(start, end, "n").size()
    assert sum(TokenRange(s, e, "n").size() if s != e else RING_SIZE for s, e in pieces) == whole
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a[1] == b[0] for a, b in pairwise(pieces))  # adjacent, in ring order
    ends = slice_ends(counts) | {end}
    for s, e in pieces:
        assert e in ends or len(pieces) == 1
        for count in counts:
            assert shard_of((s + 1) % RING_SIZE, count) == shard_of(e, count)
    for token in probes:
        if _inside(start, end, token):
            assert sum(_inside(s, e, token) for s, e in pieces) == 1
    # one count alone: split_range's pieces
    if len(counts) == 1:
        (count,) = counts
        assert pieces == [(s, e) for _, s, e in split_range(start, end, count)]
