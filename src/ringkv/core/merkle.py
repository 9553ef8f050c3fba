"""Merkle trees over token ranges, for anti-entropy (Dynamo section 4.7; Riak's hashtrees).

A tree covers one token range ``(start, end]`` of the ring. The range is cut into ``leaf_count``
equal slices of hash space; a leaf's hash is the XOR of ``entry_hash(key, record_digest)`` over
the keys in its slice. XOR makes updates incremental: when a write changes a record, XOR out the
old entry and XOR in the new one -- no rescan. Inner levels (fan-out ``fanout``) are recomputed
lazily from the leaves when asked for.

Two replicas of a range hold equal trees exactly when they hold the same keys with the same
version dots (with overwhelming probability), so an exchange compares roots, then leaves, and
moves only the records of the leaves that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from ringkv.core.ring import RING_SIZE
from ringkv.core.versions import Version

DEFAULT_LEAVES = 256
DEFAULT_FANOUT = 16


def record_digest(versions: Iterable[Version]) -> bytes:
    """Identity of a record's content: its sorted version dots (a dot names one version)."""
    h = hashlib.blake2b(digest_size=16)
    for actor, counter in sorted(v.dot for v in versions):
        h.update(b"%s\x00%s" % (actor.encode(), counter.to_bytes(8, "big")))
    return h.digest()


def entry_hash(key: bytes, digest: bytes) -> int:
    """A record's contribution to its leaf (0 for an absent record)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(len(key).to_bytes(2, "big"))
    h.update(key)
    h.update(digest)
    return int.from_bytes(h.digest(), "big")


def range_size(start: int, end: int) -> int:
    """Positions in (start, end]; the whole ring when start == end."""
    return (end - start) % RING_SIZE or RING_SIZE


def leaf_of(h: int, start: int, end: int, leaf_count: int) -> int:
    """Which leaf of the tree for (start, end] holds ring position ``h``."""
    offset = (h - start - 1) % RING_SIZE
    return offset * leaf_count // range_size(start, end)


def leaf_bounds(index: int, start: int, end: int, leaf_count: int) -> tuple[int, int]:
    """The sub-range (lo, hi] of ring positions held by leaf ``index`` (positions mod 2**64)."""
    size = range_size(start, end)

    def first_offset(i: int) -> int:  # smallest offset o with o * leaf_count // size == i
        return -(-i * size // leaf_count)

    lo = (start + first_offset(index)) % RING_SIZE  # exclusive: position before the first
    hi = (start + first_offset(index + 1)) % RING_SIZE
    return lo, hi


class MerkleTree:
    """The hash tree of one token range."""

    __slots__ = ("_levels", "end", "fanout", "leaf_count", "leaves", "start")

    def __init__(
        self,
        start: int,
        end: int,
        leaf_count: int = DEFAULT_LEAVES,
        fanout: int = DEFAULT_FANOUT,
    ) -> None:
        if leaf_count < 1 or fanout < 2:
            raise ValueError("leaf_count must be >= 1 and fanout >= 2")
        self.start = start
        self.end = end
        self.leaf_count = leaf_count
        self.fanout = fanout
        self.leaves = [0] * leaf_count
        self._levels: list[list[int]] | None = None

    def contains(self, h: int) -> bool:
        return (h - self.start - 1) % RING_SIZE < range_size(self.start, self.end)

    def update(
        self, h: int, key: bytes, old_digest: bytes | None, new_digest: bytes | None
    ) -> None:
        """Account for a record of ``key`` changing from ``old_digest`` to ``new_digest``."""
        delta = 0
        if old_digest is not None:
            delta ^= entry_hash(key, old_digest)
        if new_digest is not None:
            delta ^= entry_hash(key, new_digest)
        if delta:
            self.leaves[leaf_of(h, self.start, self.end, self.leaf_count)] ^= delta
            self._levels = None

    def levels(self) -> list[list[int]]:
        """All levels, root first, leaves last."""
        if self._levels is None:
            levels = [list(self.leaves)]
            while len(levels[0]) > 1:
                below = levels[0]
                above = []
                for i in range(0, len(below), self.fanout):
                    h = hashlib.blake2b(digest_size=8)
                    for value in below[i : i + self.fanout]:
                        h.update(value.to_bytes(8, "big"))
                    above.append(int.from_bytes(h.digest(), "big"))
                levels.insert(0, above)
            self._levels = levels
        return self._levels

    def root(self) -> int:
        return self.levels()[0][0]

    def differing_leaves(self, other_leaves: Sequence[int]) -> list[int]:
        if len(other_leaves) != self.leaf_count:
            raise ValueError("trees of different shapes cannot be compared")
        return [i for i, (a, b) in enumerate(zip(self.leaves, other_leaves, strict=True)) if a != b]

    def leaf_range(self, index: int) -> tuple[int, int]:
        return leaf_bounds(index, self.start, self.end, self.leaf_count)
