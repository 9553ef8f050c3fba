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
import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise

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
        # Owned by ringkv.core.placement: per-ring facts that do not depend on the key (zone
        # quotas per n, one Replica per node), so each is computed once per ring version.
        self._placement_cache: dict[object, object] = {}
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
                        self._zone_owned[zone], *arrays[zone], node
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
    owned: dict[str, int], tokens: tuple[int, ...], owners: tuple[str, ...], node: str
) -> dict[str, int]:
    """Ownership in a (sub-)ring after ``node``'s tokens were added to it: each new token takes
    the part of a range up to itself from the next token of another node."""
    out = dict(owned)
    size = len(tokens)
    mine = [k for k, owner in enumerate(owners) if owner is node or owner == node]
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


def _id_jitter(node_id: str, index: int) -> int:
    digest = hashlib.blake2b(f"{node_id}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def allocate_tokens(
    ring: Ring,
    node_id: str,
    count: int = DEFAULT_VNODES,
    zone: str | None = None,
    replicas: int | None = None,
) -> tuple[int, ...]:
    """Deterministic, balanced tokens (ascending) for ``node_id`` joining ``ring``.

    With ``zone`` and ``replicas`` (N) given -- what every node passes -- the tokens balance
    the load each node carries as one of the N zone-aware replicas of ``preference_list``
    (Cassandra's ``allocate_tokens_for_local_replication_factor``), zone by zone: when every
    zone holds a fixed number ``r`` of each key's replicas (``zone_quotas`` leaves no
    ``extra``: N zones for N replicas, a single zone, a zone count dividing N), a node's
    replica load depends only on its own zone's sub-ring, so the newcomer is placed in that
    sub-ring alone. For ``r == 1`` that is exactly the zone sub-ring's primary ownership
    (``_carve``); for ``r >= 2`` (fewer zones than replicas, e.g. a single zone) each new token
    goes where it most reduces the squared deviation of the replicated ownership from its
    target (``_carve_replicated``), as it does on the whole ring when every zone has one node
    (distinct zones are then distinct nodes). When some zones take an extra replica only for
    part of the ring (2 zones, or 4, with N=3), the sub-ring's primary ownership is balanced:
    an approximation, within 5-40 % of even.
    Nodes of other zones are not touched, so only the newcomer's share of the data moves.

    Without ``zone`` (the earlier interface), the tokens balance primary ownership over the
    whole ring. Empty ring -> ``initial_tokens``. ``ValueError`` if ``node_id`` is already in
    the ring or ``count < 1``. Cost: O(T) to read the ring, plus O(count log T) for ``r == 1``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if node_id in ring:
        raise ValueError(f"node {node_id!r} is already in the ring")
    if not ring.sorted_tokens:
        return initial_tokens(node_id, count)
    if zone is None or replicas is None:
        return _carve(ring, ring.sorted_tokens, ring.owned_positions(), len(ring), node_id, count)
    from ringkv.core.placement import zone_quotas  # placement builds on this module

    sizes = ring.zone_sizes()
    members = sizes.get(zone, 0)
    sizes[zone] = members + 1
    _, base, extra = zone_quotas(sizes, replicas)
    if all(size == 1 for size in sizes.values()) and replicas < len(ring) + 1:
        # One node per zone: distinct zones are distinct nodes, as in a single zone.
        return _carve_replicated(
            ring, ring.sorted_tokens, ring.token_owners, len(ring), node_id, count, replicas
        )
    tokens, owners = ring.zone_tokens(zone)
    if not tokens:
        # First node of its zone: it holds the zone's whole share whatever its tokens are, so
        # they balance primary ownership (which replica comes first) across the whole ring.
        return _carve(ring, ring.sorted_tokens, ring.owned_positions(), len(ring), node_id, count)
    r = base[zone]
    if extra == 0 and 2 <= r < members + 1:
        return _carve_replicated(ring, tokens, owners, members, node_id, count, r)
    return _carve(ring, tokens, ring.zone_owned(zone), members, node_id, count)


def _unclaimed(ring: Ring, tokens: Iterable[int]) -> tuple[int, ...]:
    """``tokens`` moved down by a position where they collide with the ring's (vanishingly
    rare for 64-bit tokens, but two zones' sub-rings share one token space)."""
    existing = ring.sorted_tokens
    mine: set[int] = set()

    def taken(token: int) -> bool:
        i = bisect_left(existing, token)
        return token in mine or (i < len(existing) and existing[i] == token)

    for token in tokens:
        while taken(token):
            token = (token - 1) % RING_SIZE
        mine.add(token)
    return tuple(sorted(mine))


def _carve(
    ring: Ring,
    tokens: tuple[int, ...],
    load: Mapping[str, int],
    members: int,
    node_id: str,
    count: int,
) -> tuple[int, ...]:
    """Greedy primary-ownership balance of the (sub-)ring ``tokens`` of ``members`` nodes,
    where node ``x`` owns ``load[x]`` positions: the newcomer's fair share is
    ``RING_SIZE // (members + 1)`` positions. For each of its ``count`` tokens, pick the node
    that currently owns the most positions (ties: smallest id), take its largest range (ties:
    lowest start) and place a token inside it so the newcomer claims the first
    ``remaining_share // tokens_left`` positions of that range (at least 1, and always leaving
    the old owner at least 1). Every existing node thus gives up roughly its excess over
    ``1/(members + 1)``, and only the newcomer's share moves. A node's ranges are looked up
    (a bisect per token) only when it is picked, so the cost is O(nodes + count^2 log T)
    rather than O(T)."""
    # Per picked node: a max-heap of its ranges as (-size, start); a range is (start, start + size].
    node_ranges: dict[str, list[tuple[int, int]]] = {}
    previous = dict(zip(tokens, tokens[-1:] + tokens[:-1], strict=True))

    def ranges_of(node: str) -> list[tuple[int, int]]:
        heap = node_ranges.get(node)
        if heap is None:
            heap = [
                (-((token - prev) % RING_SIZE or RING_SIZE), prev)
                for token in ring.tokens_of(node)
                if (prev := previous[token]) is not None
            ]
            heapq.heapify(heap)
            node_ranges[node] = heap
        return heap

    by_load = [(-positions, node) for node, positions in load.items()]
    heapq.heapify(by_load)

    remaining = RING_SIZE // (members + 1)
    chosen: list[int] = []
    for left in range(count, 0, -1):
        quota = max(1, remaining // left)
        while True:
            if not by_load:
                raise ValueError("no range on the ring is wide enough to split")
            neg_load, node = heapq.heappop(by_load)
            neg_size, start = ranges_of(node)[0]
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
    return (
        _unclaimed(ring, chosen) if len(tokens) < len(ring.sorted_tokens) else tuple(sorted(chosen))
    )


_POPS = (4, 8, 16, 64)  # queue entries re-scored per token, one greedy run each


def _window_start(positions: list[int], owners: list[str], k: int, r: int) -> int:
    """Index of the token just before the arc that token ``k`` holds as one of ``r`` replicas
    (its *span*): walking back, the first token of the same owner or of the ``r``-th distinct
    other node. 0 when the walk runs out of the local window (callers give enough margin)."""
    mine = owners[k]
    others: set[str] = set()
    m = k - 1
    while m > 0:
        owner = owners[m]
        if owner == mine:
            return m
        if owner not in others:
            if len(others) == r - 1:
                return m
            others.add(owner)
        m -= 1
    return 0


def _carve_replicated(
    ring: Ring,
    tokens: tuple[int, ...],
    owners: tuple[str, ...],
    members: int,
    node_id: str,
    count: int,
    r: int,
) -> tuple[int, ...]:
    """The best of a few runs of ``_replicated_greedy`` (by the largest resulting load): the
    greedy is myopic and small changes in how stale its queue may get change the outcome by a
    few percent either way, so trying several and keeping the best is cheap insurance."""
    best: tuple[float, tuple[int, ...]] | None = None
    for pops in _POPS:
        peak, chosen = _replicated_greedy(ring, tokens, owners, members, node_id, count, r, pops)
        if best is None or peak < best[0]:
            best = (peak, chosen)
    assert best is not None
    return best[1]


def _replicated_greedy(
    ring: Ring,
    tokens: tuple[int, ...],
    owners: tuple[str, ...],
    members: int,
    node_id: str,
    count: int,
    r: int,
    pops: int,
) -> tuple[float, tuple[int, ...]]:
    """Greedy balance of replicated ownership with ``r`` replicas inside one (sub-)ring.

    A token's *span* is the arc it holds as one of the ``r`` distinct-node replicas: back from
    the token to the previous token of the same node or of the ``r``-th distinct other node
    (``_window_start``). A node's load is the sum of its spans. A token ``x`` inserted into a
    gap shortens a few spans after it (by fixed amounts, or by ``x - start`` for the span it
    now starts), and gets its own; so every affected node's load is linear in ``x``. For each
    new token, gaps are taken from a queue ordered by a cheap score (as if the ``r`` tokens
    after the gap belonged to distinct nodes), re-scored exactly (the drop in the squared
    deviations of the affected loads from their targets, ``r / (members + 1)`` of the ring
    each and the newcomer's growing with each token, with ``x`` at its optimum within the gap)
    and taken once no stale entry is better -- Cassandra's replication-aware allocator works
    the same way. ``pops``: how many stale entries are re-scored per token at most. Returns
    the largest resulting load and the tokens."""
    toks = list(tokens)
    own = list(owners)
    target = r * RING_SIZE / (members + 1)
    margin = 4 * r + 8

    def local(lo: int, hi: int) -> tuple[list[int], list[str]]:
        """Unwrapped positions and owners of tokens lo..hi-1 (indices taken modulo size)."""
        size = len(toks)
        pos = [toks[k % size] + RING_SIZE * (k // size) for k in range(lo, hi)]
        return pos, [own[k % size] for k in range(lo, hi)]

    load: dict[str, float] = {}
    pos, names = local(-margin, len(toks))
    for k in range(margin, len(pos)):
        load[names[k]] = load.get(names[k], 0) + pos[k] - pos[_window_start(pos, names, k, r)]
    load[node_id] = 0.0

    def effect(i: int, goal: dict[str, float]) -> tuple[float, int, dict[str, tuple[float, int]]]:
        """Score, cut and per-node (constant, slope) load changes of a token in gap i."""
        pos, names = local(i - margin, i + margin)
        c = margin  # the gap lies between local c-1 and c
        gap = pos[c] - pos[c - 1]
        new_pos = [*pos[:c], pos[c - 1], *pos[c:]]  # placeholder at c; x = pos[c-1] + y
        new_names = [*names[:c], node_id, *names[c:]]
        lin: dict[str, tuple[float, int]] = {}
        start = _window_start(new_pos, new_names, c, r)
        lin[node_id] = (pos[c - 1] - new_pos[start], 1)
        seen: set[str] = set()
        for k in range(c, len(pos) - 1):
            if len(seen) > r:
                break  # r+1 distinct owners in between: later spans cannot reach the gap
            seen.add(names[k])
            old = pos[k] - pos[_window_start(pos, names, k, r)]
            s = _window_start(new_pos, new_names, k + 1, r)
            if s == c:
                const, slope = pos[k] - pos[c - 1] - old, -1
            else:
                const, slope = pos[k] - new_pos[s] - old, 0
            a, b = lin.get(names[k], (0.0, 0))
            lin[names[k]] = (a + const, b + slope)
        dev = {node: load[node] - goal.get(node, target) for node in lin}
        num = sum(b * (dev[n] + a) for n, (a, b) in lin.items())
        den = sum(b * b for _, b in lin.values())
        y = int(min(max(-num / den if den else 1, 1), gap - 1))
        score = sum((dev[n] + a + b * y) ** 2 - dev[n] ** 2 for n, (a, b) in lin.items())
        return score, y, lin

    def rough(i: int, goal: dict[str, float]) -> float:
        """Cheap score of gap i assuming the r tokens after it belong to distinct nodes."""
        size = len(toks)
        gap = (toks[i % size] - toks[(i - 1) % size]) % RING_SIZE
        if gap < 2:
            return math.inf
        fixed = (toks[(i - 1) % size] - toks[(i - r) % size]) % RING_SIZE
        deltas: dict[str, float] = {node_id: fixed}
        for k in range(r - 1):
            loser = own[(i + k) % size]
            lost = (toks[(i + k - r + 1) % size] - toks[(i + k - r) % size]) % RING_SIZE
            deltas[loser] = deltas.get(loser, 0) - lost
        victim = own[(i + r - 1) % size]
        dv = load[victim] + deltas.get(victim, 0) - goal.get(victim, target)
        dn = load[node_id] + deltas[node_id] - goal[node_id]
        y = min(max((dv - dn) / 2, 1), gap - 1)
        deltas[victim] = deltas.get(victim, 0) - y
        deltas[node_id] += y
        score = 0.0
        for node, d in deltas.items():
            before = load[node] - goal.get(node, target)
            score += (before + d) ** 2 - before**2
        return score

    # Cassandra's lazy queue: every gap (named by the token ending it) with a score that may
    # have gone stale as loads changed; the best is re-scored exactly before it is taken.
    first_goal = {node_id: target / count}
    queue = [(rough(i, first_goal), toks[i]) for i in range(len(toks))]
    heapq.heapify(queue)
    chosen: list[int] = []
    for placed in range(1, count + 1):
        goal = {node_id: target * placed / count}
        best: tuple[float, int, int, dict[str, tuple[float, int]]] | None = None
        for _ in range(pops):
            if not queue:
                break
            _, end = heapq.heappop(queue)
            i = bisect_left(toks, end)
            if toks[(i - 1) % len(toks)] == end or (end - toks[i - 1]) % RING_SIZE < 2:
                continue
            score, y, lin = effect(i, goal)
            if best is None or score < best[0]:
                if best is not None:
                    heapq.heappush(queue, (best[0], toks[bisect_left(toks, best[1])]))
                best = (score, end, y, lin)
            else:
                heapq.heappush(queue, (score, end))
            if queue and best[0] <= queue[0][0]:
                break
        if best is None:
            raise ValueError("no range on the ring is wide enough to split")
        _, end, y, lin = best
        y -= _id_jitter(node_id, placed) % max(1, y // 64)
        for node, (a, b) in lin.items():
            load[node] += a + b * y
        i = bisect_left(toks, end)
        x = (toks[(i - 1) % len(toks)] + y) % RING_SIZE
        at = bisect_left(toks, x)
        toks.insert(at, x)
        own.insert(at, node_id)
        chosen.append(x)
        for gap_end in (x, end):
            k = bisect_left(toks, gap_end)
            heapq.heappush(queue, (rough(k, goal), gap_end))
    peak = max(load.values())
    return peak, (
        _unclaimed(ring, chosen) if len(tokens) < len(ring.sorted_tokens) else tuple(sorted(chosen))
    )
