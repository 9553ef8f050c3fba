"""Replica placement: the preference list (Dynamo's and riak_core's "preference list"; Cassandra's
"replica placement strategy", here a zone-aware take on NetworkTopologyStrategy's rack awareness).

A key with hash ``h`` is stored on ``n`` nodes found by walking the ring clockwise from the first
token ``>= h`` and taking distinct nodes, so the first replica is the primary owner of ``h`` and a
membership change only shifts the lists of the ranges next to the changed tokens. The walk skips
nodes whose zone already holds its share: when the ring has at least ``n`` zones every replica
lands in a different zone, and with fewer zones the replicas are spread as evenly as the zones'
sizes allow (water-filling; ties go to whichever zone comes first clockwise). Results are
memoized on the ``Ring`` per (token index, n), so a lookup is a bisect plus a dict hit.
``sloppy_preference_list`` replaces down primaries with fallbacks (``primary=False``,
``hint_for=...``) drawn from the rest of the clockwise ``walk``.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from itertools import chain, islice

from ringkv.core.ring import _PLACEMENT_CACHE_LIMIT, Ring

__all__ = ["Replica", "preference_list", "sloppy_preference_list", "walk", "zone_quotas"]


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


def _compute(ring: Ring, idx: int, n: int) -> tuple[Replica, ...]:
    """Uncached preference list: walk clockwise, taking a node while its zone is under quota."""
    zone_sizes = ring._zone_sizes  # counted once per ring, not per lookup
    level, base, extra = zone_quotas(zone_sizes, n)
    wanted = sum(base.values()) + extra
    taken = dict.fromkeys(zone_sizes, 0)
    chosen: list[Replica] = []
    for node in _walk_from(ring, idx):
        zone = ring.zone_of(node)
        count = taken[zone]
        if count < base[zone]:
            pass
        elif count == level and zone_sizes[zone] > level and extra > 0:
            extra -= 1
        else:
            continue
        taken[zone] = count + 1
        chosen.append(Replica(node))
        if len(chosen) == wanted:
            break
    return tuple(chosen)


def preference_list(ring: Ring, h: int, n: int) -> tuple[Replica, ...]:
    """The ``n`` replicas for hash position ``h``: distinct nodes clockwise from ``token_index(h)``.

    Zone-aware: with at least ``n`` zones all replicas are in distinct zones; otherwise each
    zone gets ``floor`` or ``ceil`` of an even share, capped by its node count (the surplus goes
    to the other zones), with ties broken in ring order. The first replica is always the owner of
    ``h``. Fewer than ``n`` nodes -> all nodes. Empty ring -> ``()``. Every entry is primary.
    Memoized on the ring per (token index, n).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not ring.sorted_tokens:
        return ()
    idx = ring.token_index(h)
    cache = ring._placement_cache
    key = (idx, n)
    found = cache.get(key)
    if found is None:
        found = _compute(ring, idx, n)
        if len(cache) >= _PLACEMENT_CACHE_LIMIT:
            cache.clear()
        cache[key] = found
    return found


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
    candidates = [node for node in walk(ring, h) if node not in used and node in up]
    for missing in down:
        if not candidates:
            break
        zones_in_use = {ring.zone_of(r.node) for r in chosen}
        same_zone = [c for c in candidates if ring.zone_of(c) == ring.zone_of(missing)]
        new_zone = [c for c in candidates if ring.zone_of(c) not in zones_in_use]
        pick = (same_zone or new_zone or candidates)[0]
        candidates.remove(pick)
        chosen.append(Replica(pick, primary=False, hint_for=missing))
    return tuple(chosen)
