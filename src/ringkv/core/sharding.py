"""Which shard of a node holds a token: a fixed partition of the ring into equal slices.

A node run with ``--shards S`` splits the whole 64-bit token space into S equal, contiguous
slices and shard ``i`` holds every key whose hash falls in slice ``i`` (Scylla's token-based
sharding: ``(token * S) >> 64``). The rule depends on the token and S only, never on the ring,
so a ring change (a join, a leave) never moves data between the shards of a node, and two nodes
with different shard counts still agree on which of their shards holds a key.

Range-based work between nodes (streaming, anti-entropy, cleanup, listing) addresses one shard
per piece: ``split_range`` cuts a ring arc at a node's slice boundaries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ringkv.core.ring import RING_SIZE

__all__ = [
    "MAX_SHARDS",
    "TOKEN_BITS",
    "cut_at_slices",
    "owning_peer",
    "shard_of",
    "slice_ends",
    "slice_start",
    "split_range",
]

TOKEN_BITS = 64
#: More shards than this on one node is a mistake (a shard is a process with its own RocksDB).
MAX_SHARDS = 256


def shard_of(token: int, shards: int) -> int:
    """The shard (0 .. shards-1) that holds ``token`` on a node with ``shards`` shards."""
    return (token * shards) >> TOKEN_BITS


def slice_start(shard: int, shards: int) -> int:
    """The smallest token shard ``shard`` holds (``RING_SIZE`` for ``shard == shards``)."""
    return -((-shard * RING_SIZE) // shards)  # ceil(shard * RING_SIZE / shards)


def split_range(start: int, end: int, shards: int) -> list[tuple[int, int, int]]:
    """The arc ``(start, end]`` (wrapping past zero when ``start >= end``; the whole ring when
    they are equal, as ``ring.TokenRange``) cut at the slice boundaries of a node with
    ``shards`` shards: ``[(shard, piece_start, piece_end)]``, each piece an arc in the same
    notation held by that one shard, in ring order from ``start``. The pieces are disjoint and
    cover the arc exactly."""
    if shards == 1:
        return [(0, start, end)]
    # As half-open linear intervals [a, b) of token positions.
    wraps = start >= end
    spans = [(start + 1, RING_SIZE), (0, end + 1)] if wraps else [(start + 1, end + 1)]
    pieces: list[tuple[int, int, int]] = []
    for a, b in spans:
        if a >= b:
            continue
        first, last = shard_of(a, shards), shard_of(b - 1, shards)
        for shard in range(first, last + 1):
            lo = max(a, slice_start(shard, shards))
            hi = min(b, slice_start(shard + 1, shards))
            if lo < hi:
                # back to arc notation; (RING_SIZE - 1, hi - 1] is the arc [0, hi - 1]
                pieces.append((shard, (lo - 1) % RING_SIZE, hi - 1))
    return pieces


def cut_at_slices(start: int, end: int, counts: Iterable[int]) -> list[tuple[int, int]]:
    """The arc ``(start, end]`` cut at the slice boundaries of every shard count in ``counts``:
    arcs in ring order, each held by one shard of a node of any of those counts. Nodes with
    different counts that cut a range alike compare the same pieces (anti-entropy)."""
    pieces = [(start, end)]
    for count in sorted(set(counts)):
        pieces = [(lo, hi) for a, b in pieces for _, lo, hi in split_range(a, b, count)]
    return pieces


def slice_ends(counts: Iterable[int]) -> set[int]:
    """The last token of every slice of nodes with these shard counts, where ``cut_at_slices``
    cuts (a count of 1 cuts nowhere)."""
    return {slice_start(i + 1, count) - 1 for count in counts if count > 1 for i in range(count)}


def owning_peer(published: dict[str, Any], token: int) -> str:
    """The peer address of the shard holding ``token`` on a node that published its shards
    (gossip key ``SHARDS``: ``{"count": S, "peer": [address of shard 0, ...]}``)."""
    return str(published["peer"][shard_of(token, int(published["count"]))])
