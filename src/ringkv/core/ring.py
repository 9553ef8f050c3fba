"""The token ring (riak_core's "ring", Cassandra's "token ring"): consistent hashing with vnodes.

Every key is hashed to a 64-bit position on a circle of ``RING_SIZE`` positions. Each node claims
many tokens (virtual nodes, "vnodes"); a token owns the arc from the previous token (exclusive) up
to itself (inclusive), so the node owning the first token at or after a key's hash is that key's
primary (Cassandra's "token range", riak_core's "partition"). A ``Ring`` is an immutable value:
membership changes produce a new ring (``with_node`` / ``without_node``), and ``version`` is a short
content digest that nodes compare when gossiping. Which tokens a joining node takes is
``ringkv.core.allocation``; which nodes hold a key is ``ringkv.core.placement``; both build on
this module, never the other way round.
Pure code: no I/O, no clock reads, no global randomness.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise

__all__ = [
    "DEFAULT_VNODES",
    "RING_SIZE",
    "Ring",
    "TokenRange",
    "initial_tokens",
    "key_hash",
]

RING_SIZE: int = 1 << 64
"""Number of positions on the ring; tokens and key hashes are integers in ``[0, RING_SIZE)``."""

DEFAULT_VNODES = 128
"""Tokens (virtual nodes) per physical node unless configured otherwise."""


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
        "__weakref__",
        "_hash",
        "_node_tokens",
        "_nodes",
        "_owners",
        "_ranges",
        "_tokens",
        "_version",
        "_zone_arrays",
        "_zone_names",
        "_zone_owned",
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
        self._init_derived()

    def _init_derived(self) -> None:
        self._zone_names: tuple[str, ...] = tuple(sorted(set(self._zones.values())))
        self._hash: int | None = None
        self._version: str | None = None
        self._ranges: tuple[TokenRange, ...] | None = None
        self._zone_arrays: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] | None = None
        self._zone_owned: dict[str, dict[str, int]] | None = None
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

    def zone_tokens(self, zone: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """(tokens, owners) of the nodes in ``zone`` only, ascending: the zone's own sub-ring.

        Built for every zone at once on first use, then kept (the ring is immutable). Empty
        tuples for a zone with no nodes.
        """
        if self._zone_arrays is None:
            grouped: dict[str, tuple[list[int], list[str]]] = {
                zone: ([], []) for zone in self._zone_names
            }
            zones = self._zones
            for token, owner in zip(self._tokens, self._owners, strict=True):
                toks, owners = grouped[zones[owner]]
                toks.append(token)
                owners.append(owner)
            self._zone_arrays = {z: (tuple(t), tuple(o)) for z, (t, o) in grouped.items()}
        return self._zone_arrays.get(zone, ((), ()))

    def zone_owned(self, zone: str) -> dict[str, int]:
        """Positions each node of ``zone`` owns in the zone's sub-ring (``zone_tokens``), which
        with one replica per zone is exactly what it stores. Kept per ring; a ring made by
        ``with_node`` updates its parent's counts instead of recounting."""
        if self._zone_owned is None:
            self._zone_owned = {}
        owned = self._zone_owned.get(zone)
        if owned is None:
            tokens, owners = self.zone_tokens(zone)
            owned = {}
            prev = tokens[-1] if tokens else 0
            for token, owner in zip(tokens, owners, strict=True):
                owned[owner] = owned.get(owner, 0) + ((token - prev) % RING_SIZE or RING_SIZE)
                prev = token
            self._zone_owned[zone] = owned
        return owned

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
        """A new ring with ``node`` (in ``zone``, holding ``tokens``) added, or redefined.

        Adding a new node splices its tokens into the sorted arrays (O(T) copying, no sort), so
        joining nodes one at a time to a large ring stays cheap.
        """
        own = tuple(sorted(tokens))
        if node in self._node_tokens or not own:
            all_tokens: dict[str, Iterable[int]] = dict(self._node_tokens)
            all_tokens[node] = own
            return Ring(all_tokens, {**self._zones, node: zone})
        if not 0 <= own[0] <= own[-1] < RING_SIZE:
            raise ValueError(f"a token of node {node!r} is outside [0, 2**64)")
        old = self._tokens
        cuts = [bisect_left(old, token) for token in own]
        for token, cut in zip(own, cuts, strict=True):
            if cut < len(old) and old[cut] == token:
                raise ValueError(
                    f"token {token} claimed by both {self._owners[cut]!r} and {node!r}"
                )
        for a, b in pairwise(own):
            if a == b:
                raise ValueError(f"token {a} claimed by both {node!r} and {node!r}")
        ring = Ring.__new__(Ring)
        ring._tokens, ring._owners = _splice(old, self._owners, own, cuts, node)
        ring._nodes = tuple(sorted((*self._nodes, node)))
        ring._node_tokens = {**self._node_tokens, node: own}
        ring._node_tokens = {n: ring._node_tokens[n] for n in ring._nodes}
        ring._zones = {n: (zone if n == node else self._zones[n]) for n in ring._nodes}
        ring._init_derived()
        if self._zone_arrays is not None:
            # Only the newcomer's zone changes: splice its tokens into that sub-ring.
            arrays = dict(self._zone_arrays)
            ztoks, zowners = arrays.get(zone, ((), ()))
            zcuts = [bisect_left(ztoks, token) for token in own]
            arrays[zone] = _splice(ztoks, zowners, own, zcuts, node)
            ring._zone_arrays = arrays
            if self._zone_owned is not None:
                ring._zone_owned = dict(self._zone_owned)
                if zone in self._zone_owned:
                    ring._zone_owned[zone] = _owned_after_join(
                        self._zone_owned[zone], *arrays[zone], node, own
                    )
        return ring

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


def _owned_after_join(
    owned: dict[str, int],
    tokens: tuple[int, ...],
    owners: tuple[str, ...],
    node: str,
    own: tuple[int, ...],
) -> dict[str, int]:
    """Ownership in a (sub-)ring after ``node``'s tokens ``own`` were added to it: each new
    token takes the part of a range up to itself from the next token of another node."""
    out = dict(owned)
    size = len(tokens)
    mine = [bisect_left(tokens, token) for token in own]  # a bisect each, not a scan
    if len(mine) == size:
        out[node] = RING_SIZE
        return out
    gained = 0
    for k in mine:
        taken = (tokens[k] - tokens[k - 1]) % RING_SIZE
        j = (k + 1) % size
        while owners[j] == node:
            j = (j + 1) % size
        out[owners[j]] -= taken
        gained += taken
    out[node] = gained
    return out


def _splice(
    tokens: tuple[int, ...],
    owners: tuple[str, ...],
    own: tuple[int, ...],
    cuts: list[int],
    node: str,
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Sorted ``tokens``/``owners`` with ``own`` (ascending, owned by ``node``) inserted at
    ``cuts`` (their bisect positions in ``tokens``)."""
    new_tokens: list[int] = []
    new_owners: list[str] = []
    prev = 0
    for token, cut in zip(own, cuts, strict=True):
        new_tokens += tokens[prev:cut]
        new_owners += owners[prev:cut]
        new_tokens.append(token)
        new_owners.append(node)
        prev = cut
    new_tokens += tokens[prev:]
    new_owners += owners[prev:]
    return tuple(new_tokens), tuple(new_owners)


def initial_tokens(node_id: str, count: int = DEFAULT_VNODES) -> tuple[int, ...]:
    """Tokens for the first node of an empty ring: ``count`` evenly spaced tokens, rotated by an
    offset derived from ``node_id`` (deterministic)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    step = RING_SIZE // count
    offset = key_hash(node_id.encode()) % step
    return tuple(offset + i * step for i in range(count))
