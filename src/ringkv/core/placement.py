"""Replica placement: the preference list (Dynamo's and riak_core's "preference list"; Cassandra's
"replica placement strategy", here a zone-aware take on NetworkTopologyStrategy's rack awareness).

A key with hash ``h`` is stored on ``n`` nodes found by walking the ring clockwise from the first
token ``>= h`` and taking distinct nodes, so the first replica is the primary owner of ``h`` and a
membership change only shifts the lists of the ranges next to the changed tokens. The walk skips
nodes whose zone already holds its share: when the ring has at least ``n`` zones every replica
lands in a different zone, and with fewer zones the replicas are spread as evenly as the zones'
sizes allow (water-filling; ties go to whichever zone comes first clockwise). That rule is
``pick_by_quota`` over ``zone_caps``, shared with the allocator's walk. A lookup is a
bisect per zone plus a few tokens; the per-ring facts it needs (zone quotas per n) are computed
once per ring and kept here, weakly keyed by the ring, so the ring knows nothing of placement.
``sloppy_preference_list`` replaces down primaries with fallbacks (``primary=False``,
``hint_for=...``) drawn from the rest of the clockwise ``walk``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain, islice
from weakref import WeakKeyDictionary

from ringkv.core.ring import RING_SIZE, Ring

__all__ = [
    "Replica",
    "pick_by_quota",
    "preference_list",
    "replica_balance",
    "replica_balance_bound",
    "replica_loads",
    "replicas_gained",
    "sloppy_preference_list",
    "walk",
    "zone_caps",
    "zone_quotas",
    "zone_shares",
]


@dataclass(frozen=True, slots=True)
class Replica:
    """One entry of a preference list.

    ``primary`` is False for a fallback standing in for an unreachable primary (hinted handoff),
    in which case ``hint_for`` names that primary.
    """

    node: str
    primary: bool = True
    hint_for: str | None = None


def walk(ring: Ring, h: int) -> Iterator[str]:
    """All distinct nodes in clockwise order from the first token ``>= h`` (none if empty)."""
    if ring.sorted_tokens:
        yield from _walk_from(ring, ring.token_index(h))


def _walk_from(ring: Ring, start: int) -> Iterator[str]:
    """Distinct nodes clockwise from token index ``start``."""
    owners = ring.token_owners
    total = len(ring)
    seen: set[str] = set()
    for owner in chain(islice(owners, start, None), islice(owners, start)):
        if owner not in seen:
            seen.add(owner)
            yield owner
            if len(seen) == total:
                return


def zone_quotas(zone_sizes: dict[str, int], n: int) -> tuple[int, dict[str, int], int]:
    """Most even spread of ``min(n, total nodes)`` replicas over zones with the given node counts.

    Returns ``(level, base, extra)``: zone ``z`` gets ``base[z] = min(size[z], level)`` replicas,
    and ``extra`` of the zones with more than ``level`` nodes get one more (``level + 1``).
    This is the allocation minimizing the largest per-zone count (water-filling): no zone can
    hold two more than another unless the other has run out of nodes.
    """
    wanted = min(n, sum(zone_sizes.values()))
    level = 0
    while sum(min(size, level + 1) for size in zone_sizes.values()) <= wanted:
        level += 1
        if level >= wanted:
            break
    base = {zone: min(size, level) for zone, size in zone_sizes.items()}
    return level, base, wanted - sum(base.values())


def zone_caps(
    zone_sizes: dict[str, int], n: int
) -> tuple[dict[str, int], dict[str, int], int, int]:
    """``zone_quotas`` as the walk uses it: ``(base, top, extra, wanted)``, where a zone may
    take ``top[z]`` replicas (``base[z] + 1`` for the zones that may take one of the
    ``extra``) and the walk stops at ``wanted`` replicas."""
    level, base, extra = zone_quotas(zone_sizes, n)
    top = {z: base[z] + (1 if extra and size > level else 0) for z, size in zone_sizes.items()}
    return base, top, extra, sum(base.values()) + extra


def pick_by_quota(
    order: Iterable[str],
    zone_of: Mapping[str, str],
    base: dict[str, int],
    top: dict[str, int],
    extra: int,
    wanted: int,
) -> list[str]:
    """The walk's rule, in one place: from nodes in clockwise order (a node may repeat), take
    each new node while its zone holds fewer than ``base`` of the replicas, or fewer than
    ``top`` while an ``extra`` is left (first come, first served), until ``wanted`` are taken
    (``zone_caps``)."""
    taken: dict[str, int] = {}
    chosen: list[str] = []
    for node in order:
        if node in chosen:
            continue
        zone = zone_of[node]
        count = taken.get(zone, 0)
        if count >= base[zone]:
            if count >= top[zone] or not extra:
                continue
            extra -= 1
        taken[zone] = count + 1
        chosen.append(node)
        if len(chosen) == wanted:
            break
    return chosen


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-ring, per-n facts of placement, computed once per ring version: how many replicas
    each zone may take (``zone_caps``; ``caps``: the zones that may take any, with their
    ``top``) and one shared ``Replica`` per node."""

    sizes: dict[str, int]
    base: dict[str, int]
    top: dict[str, int]
    extra: int
    wanted: int
    caps: tuple[tuple[str, int], ...]
    replicas: dict[str, Replica]
    zone_of: dict[str, str]
    # Set when every zone with a quota takes exactly its first node (e.g. N zones, N replicas):
    # the zones' sub-rings, so a lookup is one bisect per zone and a sort of N entries.
    firsts: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...] | None


# Per ring, per n. Weak keys: a ring's plans go when the ring does. The ring looked up last is
# also kept apart: a node asks about one ring many times in a row, and a weak-key lookup makes
# a weak reference each time.
_PLANS: WeakKeyDictionary[Ring, dict[int, _Plan]] = WeakKeyDictionary()
_last: tuple[Ring, dict[int, _Plan]] | None = None


def _plan(ring: Ring, n: int) -> _Plan:
    global _last
    last = _last
    if last is not None and last[0] is ring:
        cache = last[1]
    else:
        found = _PLANS.get(ring)
        cache = {} if found is None else found
        if found is None:
            _PLANS[ring] = cache
        _last = (ring, cache)
    plan = cache.get(n)
    if plan is None:
        sizes = ring.zone_sizes()
        base, top, extra, wanted = zone_caps(sizes, n)
        caps = tuple((zone, top[zone]) for zone in ring.zones if top[zone])
        simple = extra == 0 and all(cap == 1 for _, cap in caps)
        plan = _Plan(
            sizes, base, top, extra, wanted, caps, {node: Replica(node) for node in ring.nodes},
            {node: ring.zone_of(node) for node in ring.nodes},
            tuple(ring.zone_tokens(zone) for zone, _ in caps) if simple else None,
        )  # fmt: skip
        cache[n] = plan
    return plan


def _candidates(ring: Ring, h: int, plan: _Plan) -> list[str]:
    """The first ``cap`` distinct nodes of every zone, found by a bisect into each zone's
    sub-ring (the only nodes the walk could take), in clockwise order from h."""
    found: list[tuple[int, str]] = []
    for zone, cap in plan.caps:
        tokens, owners = ring.zone_tokens(zone)
        size = len(tokens)
        i = bisect_left(tokens, h)
        if cap == 1:
            token = tokens[i] if i < size else tokens[0]
            found.append(((token - h) % RING_SIZE, owners[i] if i < size else owners[0]))
            continue
        seen: set[str] = set()
        for step in range(size):
            k = (i + step) % size
            owner = owners[k]
            if owner not in seen:
                seen.add(owner)
                found.append(((tokens[k] - h) % RING_SIZE, owner))
                if len(seen) == cap:
                    break
    found.sort()
    return [node for _, node in found]


def _compute(ring: Ring, h: int, n: int) -> tuple[Replica, ...]:
    """The clockwise walk's choice, taking a node while its zone is under quota, computed from
    each zone's first few nodes after ``h`` instead of walking the whole ring: a zone never
    takes more than ``cap`` nodes, and its first ``cap`` distinct nodes come in the same order
    in its sub-ring as in the full walk. O(zones x log T) plus a few tokens per zone."""
    plan = _plan(ring, n)
    replicas = plan.replicas
    if plan.firsts is not None:
        firsts = []
        for tokens, owners in plan.firsts:
            i = bisect_left(tokens, h)
            if i == len(tokens):
                i = 0
            firsts.append(((tokens[i] - h) % RING_SIZE, owners[i]))
        firsts.sort()
        return tuple(replicas[node] for _, node in firsts)
    order = _candidates(ring, h, plan)
    chosen = pick_by_quota(order, plan.zone_of, plan.base, plan.top, plan.extra, plan.wanted)
    return tuple([replicas[node] for node in chosen])


def preference_list(ring: Ring, h: int, n: int) -> tuple[Replica, ...]:
    """The ``n`` replicas for hash position ``h``: distinct nodes clockwise from ``token_index(h)``.

    Zone-aware: with at least ``n`` zones all replicas are in distinct zones; otherwise each
    zone gets ``floor`` or ``ceil`` of an even share, capped by its node count (the surplus goes
    to the other zones), with ties broken in ring order. The first replica is always the owner of
    ``h``. Fewer than ``n`` nodes -> all nodes. Empty ring -> ``()``. Every entry is primary.
    Not memoized: a bisect per zone plus a few tokens, whatever the ring size.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not ring.sorted_tokens:
        return ()
    if not 0 <= h < RING_SIZE:
        raise ValueError(f"hash {h} is outside [0, 2**64)")
    return _compute(ring, h, n)


def sloppy_preference_list(ring: Ring, h: int, n: int, up: Container[str]) -> tuple[Replica, ...]:
    """The primaries that are up, plus one fallback for each primary that is not (riak_core's
    ``get_apl_ann``; Dynamo's sloppy quorum).

    Fallbacks are the next up nodes clockwise beyond the preference list, preferring a node in
    the zone of the primary it stands in for, then one in a zone not yet used, then any; each
    carries ``hint_for`` so the data can be handed back. When no node is left (a 3-node ring with
    N=3), a down primary simply gets no fallback: the coordinator keeps the hint.
    """
    primaries = preference_list(ring, h, n)
    chosen = [r for r in primaries if r.node in up]
    down = [r.node for r in primaries if r.node not in up]
    if not down:
        return primaries
    used = {r.node for r in primaries}
    for missing in down:
        pick = _fallback(ring, h, missing, used, up, {ring.zone_of(r.node) for r in chosen})
        if pick is None:
            break
        used.add(pick)
        chosen.append(Replica(pick, primary=False, hint_for=missing))
    return tuple(chosen)


def _fallback(
    ring: Ring, h: int, missing: str, used: set[str], up: Container[str], zones_in_use: set[str]
) -> str | None:
    """The first up, unused node clockwise from ``h`` in ``missing``'s zone, else the first in
    a zone not in use, else the first at all. Walks lazily: each zone's sub-ring for the first
    choice, the full ring (stopping at the first node of a new zone) for the others."""
    zone = ring.zone_of(missing)
    tokens, owners = ring.zone_tokens(zone)
    start = bisect_left(tokens, h)
    seen: set[str] = set()
    members = _plan(ring, 1).sizes[zone]
    for owner in chain(islice(owners, start, None), islice(owners, start)):
        if owner in seen:
            continue
        if owner not in used and owner in up:
            return owner
        seen.add(owner)
        if len(seen) == members:
            break
    first = None
    new_zone_possible = len(zones_in_use) < len(ring.zones)
    for node in walk(ring, h):
        if node in used or node not in up:
            continue
        if first is None:
            first = node
            if not new_zone_possible:
                break
        if ring.zone_of(node) not in zones_in_use:
            return node
    return first


# -- replica load ---------------------------------------------------------------------------


def replica_loads(ring: Ring, n: int) -> dict[str, int]:
    """Hash positions each node stores as one of the ``n`` replicas (what it stores and
    serves). Sums to ``min(n, len(ring)) * RING_SIZE``. O(T) preference lists."""
    load = dict.fromkeys(ring.nodes, 0)
    for r in ring.ranges():
        size = r.size()
        for replica in preference_list(ring, r.end, n):
            load[replica.node] += size
    return load


def replicas_gained(old: Ring, new: Ring, n: int) -> dict[str, int]:
    """Hash positions each node of ``new`` replicates that it did not in ``old``: the data a
    membership change moves, by receiving node. Exact when ``new``'s tokens include ``old``'s
    (a join), since each of ``new``'s ranges then lies within one of ``old``'s."""
    gained = dict.fromkeys(new.nodes, 0)
    for r in new.ranges():
        before = {replica.node for replica in preference_list(old, r.end, n)}
        for replica in preference_list(new, r.end, n):
            if replica.node not in before:
                gained[replica.node] += r.size()
    return gained


def replica_balance(ring: Ring, n: int) -> float:
    """Max/mean replica load (1.0 is perfect; 1.0 for an empty ring)."""
    if not len(ring):
        return 1.0
    load = replica_loads(ring, n)
    return max(load.values()) * len(load) / sum(load.values())


def zone_shares(zone_sizes: dict[str, int], n: int) -> dict[str, float]:
    """Replicas per key each zone carries on average when replica load is as even as zone-aware
    placement allows (the allocator's per-zone targets; see ``replica_balance_bound``).

    Zone ``z`` holds between ``base[z]`` and ``top[z]`` of every key's replicas (``zone_quotas``:
    ``top = base + 1`` for zones that may take one of the ``extra``), and which zones take the
    extras may vary along the ring, so over the ring it carries any ``R[z]`` in
    ``[base[z], top[z]]`` with ``sum(R) = wanted``; every such vector is a mix of per-key
    choices. Spread over its nodes, each carries ``R[z] / size[z]``. Water-filling gives the
    ``R`` minimizing the largest ``R[z] / size[z]``: ``R[z] = clamp(t * size[z], base, top)``
    with the level ``t`` (found by bisection) at which they sum to ``wanted``.
    """
    level, base, extra = zone_quotas(zone_sizes, n)
    wanted = sum(base.values()) + extra
    top = {z: base[z] + (1 if extra and zone_sizes[z] > level else 0) for z in zone_sizes}

    def carried(t: float) -> dict[str, float]:
        return {z: min(max(t * size, base[z]), top[z]) for z, size in zone_sizes.items()}

    low, high = 0.0, float(max(top.values(), default=0))
    for _ in range(100):
        mid = (low + high) / 2
        if sum(carried(mid).values()) < wanted:
            low = mid
        else:
            high = mid
    return carried(high)


def replica_balance_bound(zone_sizes: dict[str, int], n: int) -> float:
    """The lowest max/mean replica load that zone-aware placement allows with these zones:
    the largest ``R[z] / size[z]`` of ``zone_shares`` over the mean ``sum(R) / nodes``.

    Equal zones give 1.0 (``R[z] = wanted / zones`` lies in every zone's interval), whether or
    not the zone count divides ``n``; 3 zones of 2, 1 and 1 nodes with N=3 give 4/3, since each
    zone must hold one replica of every key; 4 zones of 2, 1, 1, 1 with N=3 give 10/9 (a zone
    holds at most one replica of a key, so the 2-node zone carries at most 1 and the others
    2/3 each, against a mean of 3/5). The full derivation is in docs/architecture.md.
    """
    nodes = sum(zone_sizes.values())
    if nodes == 0:
        return 1.0
    shares = zone_shares(zone_sizes, n)
    worst = max(share / zone_sizes[z] for z, share in shares.items())
    return worst / (sum(shares.values()) / nodes)
