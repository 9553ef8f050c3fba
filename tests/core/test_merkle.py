"""Merkle trees for anti-entropy: hashes pinned across versions, incremental updates, leaves."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.merkle import (
    MerkleTree,
    entry_hash,
    leaf_bounds,
    leaf_of,
    range_size,
    record_digest,
)
from ringkv.core.ring import RING_SIZE
from ringkv.core.versions import VClock, Version

A = Version("n2", 7, VClock.empty(), b"a", 5)
B = Version("n1", 9, VClock({"n2": (7, 1)}), None, 6)


def test_hashes_are_pinned_across_releases() -> None:
    """Replicas of different releases compare trees during a rolling upgrade: the digests must
    never change, or every leaf would differ and anti-entropy would resend everything."""
    assert record_digest(()).hex() == "cae66941d9efbd404e4d88758ea67670"
    assert record_digest((A,)).hex() == "dba5a281e3dee2973f682d66a2c3ecfd"
    assert record_digest((A, B)).hex() == "a402383b4185692e79f7e45ec58e795e"
    assert entry_hash(b"key", record_digest(())) == 18276620485769830744
    assert entry_hash(b"key", record_digest((A,))) == 3255732936745221663
    assert entry_hash(b"key", record_digest((A, B))) == 10643853894835317337


def test_record_digest_depends_on_dots_only_and_not_on_order() -> None:
    assert record_digest((A, B)) == record_digest((B, A))
    same_dot = Version("n2", 7, VClock.empty(), b"other value", 99)
    assert record_digest((same_dot,)) == record_digest((A,))
    assert record_digest((A,)) != record_digest((B,))


def test_entry_hash_separates_key_from_digest() -> None:
    digest = record_digest((A,))
    assert entry_hash(b"ab", digest) != entry_hash(b"a", b"b" + digest[:-1])


positions = st.integers(min_value=0, max_value=RING_SIZE - 1)
entries = st.dictionaries(
    st.binary(min_size=1, max_size=8),
    st.tuples(positions, st.integers(min_value=1, max_value=50)),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(start=positions, end=positions, before=entries, after=entries)
def test_incremental_updates_equal_a_rebuild(
    start: int, end: int, before: dict[bytes, tuple[int, int]], after: dict[bytes, tuple[int, int]]
) -> None:
    """Writing the changes into a tree of ``before`` gives the tree built from ``after``."""

    def digest(counter: int) -> bytes:
        return record_digest((Version("n1", counter, VClock.empty(), b"", 0),))

    def build(contents: dict[bytes, tuple[int, int]]) -> MerkleTree:
        tree = MerkleTree(start, end, 16, 4)
        for key, (h, counter) in contents.items():
            if tree.contains(h):
                tree.update(h, key, None, digest(counter))
        return tree

    tree = build(before)
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old is not None and new is not None and old[0] != new[0]:
            if tree.contains(old[0]):
                tree.update(old[0], key, digest(old[1]), None)
            old = None
        h = (new or old or (0, 0))[0]
        if tree.contains(h):
            tree.update(
                h,
                key,
                digest(old[1]) if old is not None else None,
                digest(new[1]) if new is not None else None,
            )
    expected = build(after)
    assert tree.leaves == expected.leaves
    assert tree.root() == expected.root()


@settings(max_examples=200, deadline=None)
@given(start=positions, end=positions, h=positions, leaves=st.sampled_from([1, 3, 16, 256]))
def test_a_position_lies_within_the_bounds_of_its_leaf(
    start: int, end: int, h: int, leaves: int
) -> None:
    tree = MerkleTree(start, end, leaves)
    if not tree.contains(h):
        return
    index = leaf_of(h, start, end, leaves)
    assert 0 <= index < leaves
    lo, hi = leaf_bounds(index, start, end, leaves)
    # (lo, hi] taken around the ring (the whole ring when lo == hi)
    assert (h - lo - 1) % RING_SIZE < range_size(lo, hi)


def test_one_changed_key_shows_as_one_differing_leaf_and_a_new_root() -> None:
    left, right = MerkleTree(0, 0), MerkleTree(0, 0)
    for i in range(100):
        h = (i * 0x9E3779B97F4A7C15) % RING_SIZE
        for tree in (left, right):
            tree.update(h, b"k%d" % i, None, record_digest((A,)))
    assert left.root() == right.root()
    assert left.differing_leaves(right.leaves) == []
    h = (42 * 0x9E3779B97F4A7C15) % RING_SIZE
    right.update(h, b"k42", record_digest((A,)), record_digest((A, B)))
    assert left.root() != right.root()
    assert left.differing_leaves(right.leaves) == [leaf_of(h, 0, 0, left.leaf_count)]


def test_trees_of_different_shapes_cannot_be_compared() -> None:
    with pytest.raises(ValueError):
        MerkleTree(0, 0, 16).differing_leaves([0] * 8)
    with pytest.raises(ValueError):
        MerkleTree(0, 0, 0)
