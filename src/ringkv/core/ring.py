"""The token ring (riak_core's "ring", Cassandra's "token ring"): consistent hashing with vnodes.

Every key is hashed to a 64-bit position on a circle of ``RING_SIZE`` positions. Each node claims
many tokens (virtual nodes, "vnodes"); a token owns the arc from the previous token (exclusive) up
to itself (inclusive), so the node owning the first token at or after a key's hash is that key's
primary (Cassandra's "token range", riak_core's "partition"). A ``Ring`` is an immutable value:
membership changes produce a new ring (``with_node`` / ``without_node``), and ``version`` is a short
content digest that nodes compare when gossiping. Random tokens leave ownership lopsided (with 128
vnodes max/mean is typically 1.1-1.2 and up to about 1.3 for 8-24 nodes), so ``allocate_tokens``
picks a joining node's tokens greedily, in the spirit of Cassandra's token allocation algorithm
(``allocate_tokens_for_keyspace``): each new token carves a slice, sized toward the newcomer's fair
share ``1/(n+1)``, out of the largest range of whichever node currently owns the most. That keeps
max/mean ownership within about 1% of perfect and moves only the newcomer's share of the keys.
Pure code: no I/O, no clock reads, no global randomness.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringkv.core.placement import Replica

__all__ = [
    "DEFAULT_VNODES",
    "RING_SIZE",
    "Ring",
    "TokenRange",
    "allocate_tokens",
    "initial_tokens",
    "key_hash",
]

RING_SIZE: int = 1 << 64
"""Number of positions on the ring; tokens and key hashes are integers in ``[0, RING_SIZE)``."""

DEFAULT_VNODES = 128
"""Tokens (virtual nodes) per physical node unless configured otherwise."""

# Preference lists memoized per ring instance; cleared wholesale when it reaches this many entries.
_PLACEMENT_CACHE_LIMIT = 1 << 16


def key_hash(key: bytes) -> int:
    """Return the 64-bit ring position of ``key`` (big-endian BLAKE2b with an 8-byte digest)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class TokenRange:
    """The arc ``(start, end]`` of the ring, owned by the node holding token ``end``.

    When ``start >= end`` the arc wraps past zero; ``start == end`` (a ring with a single token)
    is the whole ring.
    """

    start: int
    end: int
    owner: str

    def contains(self, h: int) -> bool:
        """True if hash position ``h`` falls in this range."""
        if self.start < self.end:
            return self.start < h <= self.end
        return h > self.start or h <= self.end

    def size(self) -> int:
        """Number of hash positions in the range (``RING_SIZE`` for a single-token ring)."""
        return (self.end - self.start) % RING_SIZE or RING_SIZE


class Ring:
    """Immutable token ring. ``tokens`` maps node id -> its tokens; ``zones`` maps node id -> zone.

    Every node in ``tokens`` needs at least one token and a zone; ``zones`` may name extra nodes,
    which are ignored. Raises ``ValueError`` if two nodes claim the same token (or a node repeats
    one), a token lies outside ``[0, RING_SIZE)``, a node has no tokens, or a node lacks a zone.
    Construction is O(T log T) for T tokens; equality and hashing are by content.
    """

    __slots__ = (
        "_hash",
        "_node_tokens",
        "_nodes",
        "_owners",
        "_placement_cache",
        "_ranges",
        "_tokens",
        "_version",
        "_zone_names",
        "_zone_sizes",
        "_zones",
    )

    def __init__(self, tokens: Mapping[str, Iterable[int]], zones: Mapping[str, str]) -> None:
        pairs: list[tuple[int, str]] = []
        node_tokens: dict[str, tuple[int, ...]] = {}
        node_zones: dict[str, str] = {}
        for node in sorted(tokens):
            if node not in zones:
                raise ValueError(f"node {node!r} has no zone")
            own = tuple(sorted(tokens[node]))
            if not own:
                raise ValueError(f"node {node!r} has no tokens")
            for token in own:
                if not 0 <= token < RING_SIZE:
                    raise ValueError(f"token {token} of node {node!r} is outside [0, 2**64)")
                pairs.append((token, node))
            node_tokens[node] = own
            node_zones[node] = zones[node]
        pairs.sort()
        for (a, node_a), (b, node_b) in pairwise(pairs):
            if a == b:
                raise ValueError(f"token {a} claimed by both {node_a!r} and {node_b!r}")
        self._tokens: tuple[int, ...] = tuple(token for token, _ in pairs)
        self._owners: tuple[str, ...] = tuple(node for _, node in pairs)
        self._nodes: tuple[str, ...] = tuple(node_tokens)
        self._node_tokens = node_tokens
        self._zones = node_zones
        self._zone_names: tuple[str, ...] = tuple(sorted(set(node_zones.values())))
        self._hash: int | None = None
        self._version: str | None = None
        self._ranges: tuple[TokenRange, ...] | None = None
        # Owned by ringkv.core.placement: (token index, n) -> preference list.
        self._placement_cache: dict[tuple[int, int], tuple[Replica, ...]] = {}
        sizes: dict[str, int] = {}
        for zone in self._zones.values():
            sizes[zone] = sizes.get(zone, 0) + 1
        self._zone_sizes = sizes

    # -- membership -------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node ids, sorted."""
        return self._nodes

    @property
    def sorted_tokens(self) -> tuple[int, ...]:
        """All tokens, ascending."""
        return self._tokens

    @property
    def token_owners(self) -> tuple[str, ...]:
        """Owner of each token, parallel to ``sorted_tokens``."""
        return self._owners

    def zone_sizes(self) -> dict[str, int]:
        """Nodes per zone (a copy)."""
        return dict(self._zone_sizes)

    @property
    def zones(self) -> tuple[str, ...]:
        """Distinct zone names of the ring's nodes, sorted."""
        return self._zone_names

    def zone_of(self, node: str) -> str:
        """Zone of ``node`` (``KeyError`` if it is not in the ring)."""
        return self._zones[node]

    def tokens_of(self, node: str) -> tuple[int, ...]:
        """Tokens of ``node``, ascending (``KeyError`` if it is not in the ring)."""
        return self._node_tokens[node]

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._node_tokens

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    # -- lookups ----------------------------------------------------------------------------

    def token_index(self, h: int) -> int:
        """Index into ``sorted_tokens`` of the first token ``>= h``, wrapping to 0 past the last.

        Raises ``IndexError`` on an empty ring and ``ValueError`` if ``h`` is not a ring position.
        """
        tokens = self._tokens
        if not tokens:
            raise IndexError("token_index on an empty ring")
        if not 0 <= h < RING_SIZE:
            raise ValueError(f"hash {h} is outside [0, 2**64)")
        idx = bisect_left(tokens, h)
        return 0 if idx == len(tokens) else idx

    def owner_of(self, h: int) -> str:
        """Primary owner of hash position ``h`` (the node holding ``token_index(h)``)."""
        return self._owners[self.token_index(h)]

    def ranges(self) -> tuple[TokenRange, ...]:
        """One ``TokenRange`` per token, in token order (range ``i`` ends at token ``i``)."""
        if self._ranges is None:
            tokens, owners = self._tokens, self._owners
            self._ranges = tuple(
                TokenRange(tokens[i - 1], tokens[i], owners[i]) for i in range(len(tokens))
            )
        return self._ranges

    def owned_positions(self) -> dict[str, int]:
        """Exact number of hash positions each node owns as primary (sums to ``RING_SIZE``)."""
        owned = dict.fromkeys(self._nodes, 0)
        tokens, owners = self._tokens, self._owners
        if len(tokens) <= 1:
            owned.update((owner, RING_SIZE) for owner in owners)
            return owned
        prev = tokens[-1] - RING_SIZE
        for token, owner in zip(tokens, owners, strict=True):
            owned[owner] += token - prev
            prev = token
        return owned

    def ownership(self) -> dict[str, float]:
        """Fraction of the hash space each node owns as primary (sums to 1.0)."""
        return {node: count / RING_SIZE for node, count in self.owned_positions().items()}

    def balance(self) -> float:
        """Max/mean primary ownership (1.0 is perfect); 1.0 for an empty or single-node ring."""
        if len(self._nodes) < 2:
            return 1.0
        return max(self.owned_positions().values()) * len(self._nodes) / RING_SIZE

    # -- derived rings ----------------------------------------------------------------------

    def with_node(self, node: str, zone: str, tokens: Iterable[int]) -> Ring:
        """A new ring with ``node`` (in ``zone``, holding ``tokens``) added, or redefined."""
        all_tokens: dict[str, Iterable[int]] = dict(self._node_tokens)
        all_tokens[node] = tuple(tokens)
        return Ring(all_tokens, {**self._zones, node: zone})

    def without_node(self, node: str) -> Ring:
        """A new ring without ``node``; its ranges pass to the next tokens clockwise.

        ``KeyError`` if ``node`` is not in the ring.
        """
        if node not in self._node_tokens:
            raise KeyError(node)
        remaining = {n: t for n, t in self._node_tokens.items() if n != node}
        return Ring(remaining, self._zones)

    # -- identity ---------------------------------------------------------------------------

    def _content(self) -> tuple[tuple[int, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
        return self._tokens, self._owners, tuple(self._zones.items())

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Ring):
            return NotImplemented
        return hash(self) == hash(other) and self._content() == other._content()

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._content())
        return self._hash

    @property
    def version(self) -> str:
        """Short stable hex digest of the ring's content (nodes, zones, tokens).

        Equal rings have equal versions across processes and Python versions.
        """
        if self._version is None:
            digest = hashlib.blake2b(digest_size=8)
            for node in self._nodes:
                for text in (node, self._zones[node]):
                    raw = text.encode()
                    digest.update(len(raw).to_bytes(4, "big") + raw)
                own = self._node_tokens[node]
                digest.update(len(own).to_bytes(4, "big"))
                digest.update(b"".join(token.to_bytes(8, "big") for token in own))
            self._version = digest.hexdigest()
        return self._version

    def __repr__(self) -> str:
        return (
            f"Ring(nodes={len(self._nodes)}, tokens={len(self._tokens)}, "
            f"zones={len(self._zone_names)}, version={self.version})"
        )

    @classmethod
    def empty(cls) -> Ring:
        """The ring with no nodes."""
        return cls({}, {})


def initial_tokens(node_id: str, count: int = DEFAULT_VNODES) -> tuple[int, ...]:
    """Tokens for the first node of an empty ring: ``count`` evenly spaced tokens, rotated by an
    offset derived from ``node_id`` (deterministic)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    step = RING_SIZE // count
    offset = key_hash(node_id.encode()) % step
    return tuple(offset + i * step for i in range(count))


def _id_jitter(node_id: str, index: int) -> int:
    digest = hashlib.blake2b(f"{node_id}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def allocate_tokens(ring: Ring, node_id: str, count: int = DEFAULT_VNODES) -> tuple[int, ...]:
    """Deterministic, balanced tokens (ascending) for ``node_id`` joining ``ring``.

    Greedy: the newcomer's fair share is ``RING_SIZE // (n + 1)`` positions. For each of its
    ``count`` tokens, pick the node that currently owns the most positions (ties: smallest id),
    take its largest range (ties: lowest start) and place a token inside it so the newcomer
    claims the first ``remaining_share // tokens_left`` positions of that range (at least 1, and
    always leaving the old owner at least 1, so no range gets zero width and no token collides).
    Every existing node thus gives up roughly its excess over ``1/(n+1)``, and only the keys in
    the newcomer's share move. O(T log T + count log T) for T tokens on the ring.
    Empty ring -> ``initial_tokens``. ``ValueError`` if ``node_id`` is already in the ring.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if node_id in ring:
        raise ValueError(f"node {node_id!r} is already in the ring")
    tokens, owners = ring.sorted_tokens, ring.token_owners
    if not tokens:
        return initial_tokens(node_id, count)

    # Per node: a max-heap of its ranges as (-size, start); a range is (start, start + size].
    node_ranges: dict[str, list[tuple[int, int]]] = {node: [] for node in ring.nodes}
    load = dict.fromkeys(ring.nodes, 0)
    prev = tokens[-1]
    for token, owner in zip(tokens, owners, strict=True):
        size = (token - prev) % RING_SIZE or RING_SIZE
        node_ranges[owner].append((-size, prev))
        load[owner] += size
        prev = token
    for heap in node_ranges.values():
        heapq.heapify(heap)
    by_load = [(-positions, node) for node, positions in load.items()]
    heapq.heapify(by_load)

    remaining = RING_SIZE // (len(ring) + 1)
    chosen: list[int] = []
    for left in range(count, 0, -1):
        quota = max(1, remaining // left)
        while True:
            if not by_load:
                raise ValueError("no range on the ring is wide enough to split")
            neg_load, node = heapq.heappop(by_load)
            neg_size, start = node_ranges[node][0]
            if neg_size <= -2:
                break
            # Every range of this node has width 1: it cannot give anything up.
        size = -neg_size
        take = min(quota, size - 1)
        # Shave up to ~1.5% off by an amount derived from the id, so that two nodes that claim
        # against the same ring view at the same moment never pick identical tokens.
        take -= _id_jitter(node_id, left) % max(1, take // 64)
        token = (start + take) % RING_SIZE
        heapq.heapreplace(node_ranges[node], (take - size, token))
        heapq.heappush(by_load, (neg_load + take, node))
        remaining -= take
        chosen.append(token)
    chosen.sort()
    return tuple(chosen)
