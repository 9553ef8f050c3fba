"""Token allocation: which tokens a joining node takes (Cassandra's token allocation algorithm).

Random tokens leave ownership lopsided (with 128 vnodes max/mean is typically 1.1-1.2 and up to
about 1.3 for 8-24 nodes), so ``allocate_tokens`` picks a joining node's tokens deterministically
to balance the load each node carries as one of the N zone-aware replicas of
``ringkv.core.placement`` (Cassandra's ``allocate_tokens_for_local_replication_factor`` and its
``ReplicationAwareTokenAllocator``), never moving an existing node's tokens: only the newcomer's
share of the data moves. Builds on ``ring`` and ``placement``. Pure code: no I/O, no clock reads,
no global randomness.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import statistics
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import NamedTuple, TypeVar

from ringkv.core.placement import pick_by_quota, zone_caps, zone_quotas, zone_shares
from ringkv.core.ring import DEFAULT_VNODES, RING_SIZE, Ring, initial_tokens
from ringkv.core.sharding import slice_start

__all__ = ["MIN_TOKENS_PER_SLICE", "allocate_tokens", "tokens_per_slice_suffice"]

_K = TypeVar("_K")

#: Tokens per slice below which a sharded node's tokens are allocated over the whole ring.
MIN_TOKENS_PER_SLICE = 16


def tokens_per_slice_suffice(count: int, slices: int) -> bool:
    """Whether a node of ``slices`` shards with ``count`` tokens gets them slice by slice
    (where its zones allow it, ``allocate_tokens``): at least ``MIN_TOKENS_PER_SLICE`` each."""
    return count >= MIN_TOKENS_PER_SLICE * slices


def _id_jitter(node_id: str, index: int) -> int:
    digest = hashlib.blake2b(f"{node_id}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def allocate_tokens(
    ring: Ring,
    node_id: str,
    count: int = DEFAULT_VNODES,
    zone: str | None = None,
    replicas: int | None = None,
    slices: int = 1,
) -> tuple[int, ...]:
    """Deterministic, balanced tokens (ascending) for ``node_id`` joining ``ring``.

    ``slices`` (a node's ``--shards``): a node of S shards serves each fixed slice of the token
    space from one process (``core.sharding``), so its busiest shard, not its total, is what
    saturates first. With ``slices > 1`` the tokens are allocated slice by slice
    (``_by_slice``): ``count / slices`` in each, balanced within the slice, so each of the
    newcomer's shards carries its share, and the nodes it takes load from give it up in every
    slice alike. As for one slice where the tokens are scored against the whole ring's walk
    (``_whole_ring_walk``), and with fewer than ``MIN_TOKENS_PER_SLICE`` tokens per slice: a
    ring of so few tokens per node balances each slice too coarsely, and alike in every slice,
    so the nodes' totals would drift apart.

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
    part of the ring (2 zones, or 4, with N=3), which zone takes the extra depends on how the
    zones' tokens interleave, so the tokens are chosen over the whole ring against the real
    walk of the preference list (``_replica_greedy``); each join there also looks one join
    ahead, so that the next zone to grow can still push the other zones out of the keys they
    must give up, and with 2 zones keeps its zone's own sub-ring evenly split, which is all
    that zone's nodes carry once the other zone takes every extra. Either way a new token only
    adds the
    newcomer to some ranges' lists, so only the newcomer's share of the data moves.

    Without ``zone`` (the earlier interface), the tokens balance primary ownership over the
    whole ring. Empty ring -> ``initial_tokens``. ``ValueError`` if ``node_id`` is already in
    the ring or ``count < 1``. Cost: O(T) to read the ring, plus O(count log T) for ``r == 1``;
    O(T) preference-list walks for ``_replica_greedy``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if node_id in ring:
        raise ValueError(f"node {node_id!r} is already in the ring")
    if not ring.sorted_tokens:
        return initial_tokens(node_id, count)  # evenly spaced: count / S in each slice
    walk = _whole_ring_walk(ring, zone, replicas)
    if slices > 1 and tokens_per_slice_suffice(count, slices) and walk is None:
        return _by_slice(ring, node_id, count, zone, replicas, slices)
    if zone is None or replicas is None:
        return _carve(ring, ring.sorted_tokens, ring.owned_positions(), len(ring), node_id, count)
    if walk == ONE_PER_ZONE:
        whole = _SubRing(ring.sorted_tokens, ring.token_owners, len(ring))
        return _carve_replicated(ring, whole, node_id, count, replicas)
    if walk == ZONES_COMPETE:
        return _replica_greedy(ring, node_id, zone, count, replicas)
    sizes = ring.zone_sizes()
    members = sizes.get(zone, 0)
    sizes[zone] = members + 1
    _, base, extra = zone_quotas(sizes, replicas)
    tokens, owners = ring.zone_tokens(zone)
    if not tokens:
        # First node of its zone: it holds the zone's whole share whatever its tokens are, so
        # they balance primary ownership (which replica comes first) across the whole ring.
        return _carve(ring, ring.sorted_tokens, ring.owned_positions(), len(ring), node_id, count)
    r = base[zone]
    if extra == 0 and 2 <= r < members + 1:
        return _carve_replicated(ring, _SubRing(tokens, owners, members), node_id, count, r)
    return _carve(ring, tokens, ring.zone_owned(zone), members, node_id, count)


ONE_PER_ZONE = "one node per zone"
ZONES_COMPETE = "zones compete for an extra replica"


def _whole_ring_walk(ring: Ring, zone: str | None, replicas: int | None) -> str | None:
    """Why the newcomer's tokens are scored against the walk over the whole ring, or None when
    they only meet its zone's sub-ring. ``ONE_PER_ZONE``: every zone (the newcomer's too) has
    one node, so distinct zones are distinct nodes, as in a single zone. ``ZONES_COMPETE``:
    zones take an extra replica for part of the ring only (2 zones, or 4, with N=3), so who
    holds a key depends on how the zones' tokens interleave (``_replica_greedy``). Neither is
    allocated slice by slice: their slices come out alike, so their errors add up (per slice,
    4 zones and 2 zones filled 5:3 missed the balance of the whole-ring walk at S=2)."""
    if zone is None or replicas is None or replicas >= len(ring) + 1:
        return None
    sizes = ring.zone_sizes()
    sizes[zone] = sizes.get(zone, 0) + 1
    if all(size == 1 for size in sizes.values()):
        return ONE_PER_ZONE
    return ZONES_COMPETE if zone_quotas(sizes, replicas)[2] else None


def _by_slice(
    ring: Ring, node_id: str, count: int, zone: str | None, replicas: int | None, slices: int
) -> tuple[int, ...]:
    """``allocate_tokens`` in each slice ``[a, b)`` of ``sharding.slice_start`` on its own: the
    ring's tokens in the slice, stretched to the whole token space, make a ring whose members
    are the nodes with tokens there; the newcomer's tokens for it (``count`` split evenly, the
    first slices taking the remainder) are mapped back between the same neighbours
    (``_into_slice``). Only the last few ranges of a slice see a different walk than on the
    real ring (there the walk goes on into the next slice, here it wraps to the slice's start),
    so the balance within each slice is that of a ring of the slice's tokens."""
    chosen: list[int] = []
    tokens, owners = ring.sorted_tokens, ring.token_owners
    for index in range(slices):
        a, b = slice_start(index, slices), slice_start(index + 1, slices)
        lo, hi = bisect_left(tokens, a), bisect_left(tokens, b)
        real = tokens[lo:hi]
        stretched = [(t - a) * RING_SIZE // (b - a) for t in real]  # strictly increasing
        held: dict[str, list[int]] = {}
        for token, owner in zip(stretched, owners[lo:hi], strict=True):
            held.setdefault(owner, []).append(token)
        part = Ring(held, {node: ring.zone_of(node) for node in held}) if held else Ring.empty()
        share = count // slices + (index < count % slices)
        picked = allocate_tokens(part, node_id, share, zone, replicas)
        chosen += _into_slice(picked, stretched, real, a, b)
    return _unclaimed(ring, chosen)


def _into_slice(
    picked: Iterable[int], stretched: list[int], real: Sequence[int], a: int, b: int
) -> list[int]:
    """Tokens ``picked`` on the stretched ring, as tokens of the slice ``[a, b)``: each between
    the real tokens of its stretched neighbours, at the same fraction of the way (the order,
    which decides every walk, is kept; rounding a stretched position back alone could land a
    token on or before its predecessor)."""
    out: list[int] = []
    out_stretched = -1
    for token in sorted(picked):
        j = bisect_left(stretched, token)
        prev_s, prev_r = (stretched[j - 1], real[j - 1]) if j else (-1, a - 1)
        if out and out[-1] > prev_r:  # the newcomer's own previous token is nearer
            prev_s, prev_r = out_stretched, out[-1]
        next_s, next_r = (stretched[j], real[j]) if j < len(stretched) else (RING_SIZE, b)
        room = next_r - prev_r
        step = (token - prev_s) * room // (next_s - prev_s)
        out.append(prev_r + min(max(step, 1), room - 1) if room >= 2 else prev_r)
        out_stretched = token
    return out


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


def _cost(deviation: float, newcomer: bool, under: float) -> float:
    """What a node's deviation from its target costs: a load below target counts ``under``
    times one above (the busiest node is what saturates first), the newcomer's either way."""
    if newcomer or deviation > 0:
        return deviation * deviation
    return deviation * deviation * under


# Score added for a newcomer token next to a token of its own zone, in squared per-token loads.
_NEIGHBOUR_PENALTY = 2.0
_POPS = (4, 8, 16, 64)  # queue entries re-scored per token, one greedy run each
# (pops, weight of a load below target, weight of the look-ahead, weight of the zone sub-ring's
# balance) of each run of _replica_greedy: how strongly a join should prepare the ring for the
# next one is a trade-off that no single weight gets right at every size, so runs try several.
_Run = tuple[int, float, float, float]
_RUNS_AHEAD: tuple[_Run, ...] = tuple(
    (pops, under, ahead, 0.0) for ahead in (0.3, 3.0) for under in (1.0, 0.25) for pops in (4, 16)
)
_RUNS: tuple[_Run, ...] = tuple(
    (pops, under, 0.0, 0.0) for under in (1.0, 0.25) for pops in _POPS
)  # no look-ahead
# Two zones competing for the extra replica: with and without the look-ahead, each with a
# light and a heavy weight on the sub-ring's balance.
_RUNS_TWO_ZONES: tuple[_Run, ...] = tuple(
    (pops, 1.0, ahead, sub)
    for ahead in (0.0, 0.3, 3.0)
    for sub in (0.0, 1.0)
    for pops in (4, 8, 16)
)
# With 2 zones, among the runs whose balance now is within _NOW_SLACK of the best one's, or
# at most _NOW_GOOD, the one that leaves the next join the least beyond its reach wins: a join
# that must push the smaller zone out of every extra (4/2, 6/3) has little room to spare.
# With 4 or more zones the run with the lowest larger-of-the-two wins, whatever its balance now
# (zones grown unevenly: the lowest balance now plus mean floor, see _replica_greedy).
_NOW_SLACK = 0.01
_NOW_GOOD = 1.03
# Above this many tokens the first queue is scored roughly and only two runs are made, so a
# join at 1,000 nodes costs about a second.
_EXACT_QUEUE_GAPS = 16_384
_RUNS_LARGE: tuple[_Run, ...] = ((16, 1.0, 1.0, 1.0), (16, 0.25, 1.0, 1.0))  # sub: 2 zones only


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


class _SubRing(NamedTuple):
    """The (sub-)ring a newcomer is placed in: a zone's tokens and owners, or the whole
    ring's, and how many nodes hold them."""

    tokens: tuple[int, ...]
    owners: tuple[str, ...]
    members: int


def _carve_replicated(
    ring: Ring, sub: _SubRing, node_id: str, count: int, r: int
) -> tuple[int, ...]:
    """The best of a few runs of ``_replicated_greedy`` (by the largest resulting load): the
    greedy is myopic and small changes in how stale its queue may get change the outcome by a
    few percent either way, so trying several and keeping the best is cheap insurance."""
    best: tuple[float, tuple[int, ...]] | None = None
    for pops in _POPS:
        peak, chosen = _replicated_greedy(ring, sub, node_id, count, r, pops)
        if best is None or peak < best[0]:
            best = (peak, chosen)
    assert best is not None
    return best[1]


def _replicated_greedy(
    ring: Ring, sub: _SubRing, node_id: str, count: int, r: int, pops: int
) -> tuple[float, tuple[int, ...]]:
    """Greedy balance of replicated ownership with ``r`` replicas inside one (sub-)ring ``sub``.

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
    tokens, members = sub.tokens, sub.members
    toks = list(tokens)
    own = list(sub.owners)
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


_WALK_WINDOW = 24  # tokens a walk looks at before falling back to the whole ring


class _Quotas:
    """The preference list's walk (``placement.pick_by_quota``) over a ring's token owners,
    optionally with a newcomer's token spliced in."""

    __slots__ = ("base", "extra", "top", "wanted", "zone_of")

    def __init__(self, sizes: dict[str, int], replicas: int, zone_of: dict[str, str]) -> None:
        self.base, self.top, self.extra, self.wanted = zone_caps(sizes, replicas)
        self.zone_of = zone_of

    def walk(self, owners: list[str], start: int, insert: int = -1, node: str = "") -> list[str]:
        """The replicas of the range ending at token ``start`` of ``owners`` (a ring's token
        owners in order): the preference list's walk. With ``insert >= 0``, as if ``node`` held
        a token just before index ``insert`` (``insert == start``: the range it would end)."""
        size = len(owners)
        end = start + _WALK_WINDOW
        if end <= size:
            # Nearly always settled within the next few tokens: walk a copied slice (fast), and
            # the whole ring only if it was not.
            if start <= insert < end:
                window = [*owners[start:insert], node, *owners[insert:end]]
            else:
                window = owners[start:end]
            chosen = pick_by_quota(
                window, self.zone_of, self.base, self.top, self.extra, self.wanted
            )
            if len(chosen) == self.wanted:
                return chosen
        at = owners.__getitem__  # indexed: islice would skip along the list
        if insert < 0:
            order = chain(map(at, range(start, size)), map(at, range(start)))
        elif insert >= start:
            order = chain(
                map(at, range(start, insert)), (node,), map(at, range(insert, size)),
                map(at, range(start)),
            )  # fmt: skip
        else:
            order = chain(
                map(at, range(start, size)), map(at, range(insert)), (node,),
                map(at, range(insert, start)),
            )  # fmt: skip
        return pick_by_quota(order, self.zone_of, self.base, self.top, self.extra, self.wanted)


def _same_zone(owners: list[str], zone_of: Mapping[str, str], zone: str, i: int, step: int) -> int:
    """Index of the nearest token of ``zone`` cyclically from index ``i``: at or after it
    (``step`` 1), or strictly before it (``step`` -1); -1 if the zone has none."""
    size = len(owners)
    first = 0 if step > 0 else 1
    for move in range(first, size + first):
        j = (i + step * move) % size
        if zone_of[owners[j]] == zone:
            return j
    return -1


def _two_zones(sizes: Mapping[str, int]) -> bool:
    """Two zones with N=3: each holds one replica of every key and they compete for the
    third, so joins look ahead for the larger zone and also balance their zone's sub-ring."""
    return len(sizes) == 2


def _looks_ahead(sizes: dict[str, int], replicas: int) -> bool:
    """Whether joins look ahead: with more zones than a key has replicas, each zone holding at
    most one of them (4 or more zones, N=3), or with two zones that compete for an extra."""
    _, top, extra, wanted = zone_caps(sizes, replicas)
    if _two_zones(sizes):
        return extra > 0
    return len(sizes) > wanted and max(top.values()) == 1


def _next_to_grow(sizes: dict[str, int], replicas: int) -> tuple[str, ...]:
    """The zones a look-ahead prepares for: with two zones the larger (its growth pushes the
    smaller one's extras out); with more the smallest (the operator grows the smallest zone
    first), or every zone once the sizes differ by more than one node (``_grown_unevenly``)."""
    if _two_zones(sizes):
        largest = max(sizes.values())
        return tuple(z for z in sorted(sizes) if sizes[z] == largest)
    if _grown_unevenly(sizes):
        return tuple(sorted(sizes))
    smallest = min(sizes.values())
    return tuple(z for z in sorted(sizes) if sizes[z] == smallest)


def _grown_unevenly(sizes: dict[str, int]) -> bool:
    """Whether the zones' sizes differ by more than one node: a cluster grown smallest zone
    first never gets there, so any zone may be the next to grow."""
    return max(sizes.values()) - min(sizes.values()) > 1


def _replica_greedy(
    ring: Ring, node_id: str, zone: str, count: int, replicas: int
) -> tuple[int, ...]:
    """The best of a few runs of ``_replica_greedy_run``, as for ``_carve_replicated``, by the
    larger of its balance now (the largest load over its target) and its floors (what it
    leaves the next join); with 2 zones only among the runs whose balance now is close to the
    best one's (``_NOW_SLACK``, ``_NOW_GOOD``). With zones grown unevenly, where any of them
    may grow next, by the sum of the balance now and the mean of the zones' floors: the
    highest floor is often one no run can lower (the newcomer's own zone's), and would
    decide nothing."""
    shared: list[object] = []  # the ring's lists and loads, read by the first run; first queues
    sizes = ring.zone_sizes()
    sizes[zone] = sizes.get(zone, 0) + 1
    runs = _RUNS_LARGE
    if len(ring.sorted_tokens) <= _EXACT_QUEUE_GAPS:
        if _two_zones(sizes):
            runs = _RUNS_TWO_ZONES
        else:
            runs = _RUNS_AHEAD if _looks_ahead(sizes, replicas) else _RUNS
    results = [
        _replica_greedy_run(ring, node_id, zone, count, replicas, run, shared) for run in runs
    ]
    if _two_zones(sizes):
        best_now = min(r.now for r in results)
        results = [r for r in results if r.now <= max(best_now + _NOW_SLACK, _NOW_GOOD)]
    elif _grown_unevenly(sizes) and results[0].floors:
        return min(results, key=lambda r: r.now + statistics.fmean(r.floors.values())).tokens
    return min(results, key=lambda r: max(r.now, r.ahead)).tokens


def _linear_changes(
    first: list[str],
    before: list[str],
    steps: list[tuple[int, list[str], list[str]]],
    keys_of: Callable[[list[str]], Iterable[_K]],
) -> dict[_K, tuple[float, int]]:
    """How a newcomer token at offset ``y`` in a gap changes what each key (a node, or a
    (node, zone) floor) carries, as (constant, slope) of ``y``: the gap's part up to the token
    gets the list ``first`` instead of ``before`` (slope), and each range ``(width, new, old)``
    before the gap whose walk reaches the token gets ``new`` instead of ``old`` (constant)."""
    lin: dict[_K, tuple[float, int]] = {}
    changes = [(first, 0, 1), (before, 0, -1)]
    changes += [(names, sign * width, 0) for width, new, old in steps
                for names, sign in ((new, 1), (old, -1))]  # fmt: skip
    for names, constant, slope in changes:
        for key in keys_of(names):
            a, b = lin.get(key, (0.0, 0))
            lin[key] = (a + constant, b + slope)
    return lin


class _RunResult(NamedTuple):
    """What one run of ``_replica_greedy_run`` leaves: the largest load over its target now,
    the floor the next join faces for each zone that may grow next (``nexts``), the highest
    floor overall (with 2 zones also the busiest share of the newcomer's zone's sub-ring), and
    the tokens."""

    now: float
    floors: dict[str, float]
    ahead: float
    tokens: tuple[int, ...]


def _replica_greedy_run(
    ring: Ring,
    node_id: str,
    zone: str,
    count: int,
    replicas: int,
    run: _Run,
    shared: list[object],
) -> _RunResult:
    """Greedy balance of replica load over the whole ring, for zones that take an extra replica
    for only part of it (2 zones, or 4, with N=3): who takes the extra depends on how the
    zones' tokens interleave, so no zone's sub-ring can be balanced alone.

    Every range's replicas are the preference list's walk (``_Quotas``). A newcomer token at
    ``x`` in a gap changes the lists of the few ranges before the gap whose walk reaches it
    (by one exchange: the walk is a matroid's greedy, so the newcomer replaces at most one node)
    and splits the gap, whose part up to ``x`` gets the newcomer first: every node's load is
    linear in ``x``. Each token goes where it most reduces the squared deviation of the loads
    from their targets (``placement.zone_shares`` spread over each zone's nodes, the
    newcomer's growing with each token), from Cassandra's lazy queue of gaps whose scores may
    be stale, re-scored exactly before one is taken. With ``ahead`` (2 zones, or 4+), the score
    also weighs the floors the next join will face (see ``nexts`` below), and with ``sub`` (2
    zones) the balance of the newcomer's zone's sub-ring (see ``sub_load``). O(T) walks
    to read the ring."""
    pops, under, ahead, sub_weight = run
    toks = list(ring.sorted_tokens)
    own = list(ring.token_owners)
    sizes = ring.zone_sizes()
    sizes[zone] = sizes.get(zone, 0) + 1
    zone_of = {node: ring.zone_of(node) for node in ring.nodes}
    zone_of[node_id] = zone
    quotas = _Quotas(sizes, replicas, zone_of)
    shares = zone_shares(sizes, replicas)
    target = {z: shares[z] / sizes[z] * RING_SIZE for z in sizes}
    if shared:
        lists: list[list[str]] = list(shared[0])  # type: ignore[call-overload]
        load: dict[str, float] = dict(shared[1])  # type: ignore[call-overload]
    else:
        lists = [quotas.walk(own, k) for k in range(len(own))]
        load = dict.fromkeys(zone_of, 0.0)
        for k, names in enumerate(lists):
            width = (toks[k] - toks[k - 1]) % RING_SIZE or RING_SIZE
            for name in names:
                load[name] += width
    goal = {node: target[zone_of[node]] for node in zone_of}
    # Look-ahead, with more zones than a key has replicas (4 or more zones, N=3): when a zone y
    # grows next, a node of another zone can only lose the keys where it is the last replica
    # and y is left out (the newcomer of y comes before it, and the node drops off the end),
    # so what it carries beyond those is a floor for the ring after that join. Each token here
    # also weighs how far that floor lies above the node's target after the join, for every
    # zone that may grow next (``_next_to_grow``), so later joins can still balance the ring.
    nexts: tuple[str, ...] = ()
    if _looks_ahead(sizes, replicas):  # weighed in the score only with ahead > 0
        nexts = _next_to_grow(sizes, replicas)
    next_goal: dict[str, dict[str, float]] = {}
    for grows in nexts:
        grown_sizes = {**sizes, grows: sizes[grows] + 1}
        grown = zone_shares(grown_sizes, replicas)
        next_goal[grows] = {z: grown[z] / grown_sizes[z] * RING_SIZE for z in sizes}

    def left_last(names: list[str]) -> list[tuple[str, str]]:
        """(last replica, next zone) for a range with replicas ``names`` whose last replica a
        node of that zone would push out, coming before it: the zone may take one more
        replica in its place."""
        last_zone = zone_of[names[-1]]
        held: dict[str, int] = {}
        for name in names[:-1]:
            held[zone_of[name]] = held.get(zone_of[name], 0) + 1
        if held.get(last_zone, 0) < quotas.base[last_zone]:
            return []  # the last replica is one its zone must have
        spare = quotas.extra - sum(max(0, c - quotas.base[z]) for z, c in held.items())
        out = []
        for y in nexts:
            count = held.get(y, 0)
            if y != last_zone and (count < quotas.base[y] or (count < quotas.top[y] and spare)):
                out.append((names[-1], y))
        return out

    pushable: dict[tuple[str, str], float] = {}
    if nexts:
        pushable = {(node, y): 0.0 for node in zone_of for y in nexts}
        for k, names in enumerate(lists):
            width = (toks[k] - toks[k - 1]) % RING_SIZE or RING_SIZE
            for key in left_last(names):
                pushable[key] += width

    # With a zone that holds a replica of every key (2 zones, N=3), a node's load is its share
    # of its zone's own sub-ring (the keys whose zone replica it is) plus the extras it holds;
    # once the zone's share falls to that one replica (its zone the smaller, the other grown)
    # the sub-ring share is all it carries. Only the zone's own joins can change how that
    # sub-ring is split, so each join also balances it, beside the replica loads.
    two_zones = _two_zones(sizes) and quotas.base[zone] >= 1
    sub_load: dict[str, float] = {}
    if two_zones:
        # Ring.zone_owned, but summed in floats as the scores are (its integer sums round
        # differently, and would move tokens).
        for k, owner in enumerate(own):
            if zone_of[owner] == zone:
                prev = _same_zone(own, zone_of, zone, k, -1)
                width = (toks[k] - toks[prev]) % RING_SIZE or RING_SIZE
                sub_load[owner] = sub_load.get(owner, 0.0) + width
        sub_load[node_id] = 0.0
    sub_goal = RING_SIZE / sizes[zone]

    def sub_changes(i: int) -> dict[str, tuple[float, int]]:
        """How a newcomer token at offset ``y`` in the gap ending at index i changes the
        sub-ring shares of its zone: it takes the part since the zone's previous token from
        the owner of the zone's next one."""
        if not two_zones:
            return {}
        prev = _same_zone(own, zone_of, zone, i, -1)
        nxt = _same_zone(own, zone_of, zone, i, 1)
        if prev < 0 or nxt < 0:
            return {}
        loser = own[nxt]
        if loser == node_id:
            return {}  # it takes the part from itself
        c0 = float((toks[i - 1] - toks[prev]) % RING_SIZE)
        return {node_id: (c0, 1), loser: (-c0, -1)}

    def effect(
        i: int,
    ) -> tuple[
        float, int, dict[str, tuple[float, int]], list[list[str]],
        dict[tuple[str, str], tuple[float, int]], dict[str, tuple[float, int]],
    ]:  # fmt: skip
        """Score, offset in the gap and per-node (constant, slope) load changes of a token in
        the gap ending at index i; and the new lists of the ranges before it, nearest first."""
        size = len(toks)
        gap = (toks[i] - toks[i - 1]) % RING_SIZE or RING_SIZE
        first = quotas.walk(own, i, i, node_id)
        changed: list[list[str]] = []
        steps: list[tuple[int, list[str], list[str]]] = []
        for back in range(1, size):
            j = (i - back) % size
            new = quotas.walk(own, j, i, node_id)
            if new == lists[j]:
                break
            changed.append(new)
            steps.append(((toks[j] - toks[j - 1]) % RING_SIZE or RING_SIZE, new, lists[j]))
        lin = _linear_changes(first, lists[i], steps, list)
        qlin = _linear_changes(first, lists[i], steps, left_last) if nexts else {}
        dev = {name: load[name] - goal[name] for name in lin}
        num = sum(b * (dev[n] + a) for n, (a, b) in lin.items())
        den = float(sum(b * b for _, b in lin.values()))
        sub = sub_changes(i)
        sub_dev = {
            n: sub_load[n] - sub_goal * (goal[n] / full if n == node_id else 1.0) for n in sub
        }
        num += sub_weight * sum(b * (sub_dev[n] + a) for n, (a, b) in sub.items())
        den += sub_weight * sum(b * b for _, b in sub.values())
        best_y = int(min(max(-num / den if den else gap / 2, 1), gap - 1))
        # Each affected floor as (now, constant, slope) in the token's offset.
        floors: list[tuple[float, float, int]] = []
        for n, (a, b) in lin.items():
            zone_n = zone_of[n]
            for z in nexts:
                if z != zone_n:
                    qa, qb = qlin.get((n, z), (0.0, 0))
                    now = load[n] - pushable[(n, z)] - next_goal[z][zone_n]
                    floors.append((now, a - qa, b - qb))
        floors_now = sum(now * now for now, _, _ in floors if now > 0)
        best_score = math.inf
        for y in {best_y, 1, max(1, gap // 2), max(1, gap - 1)}:
            score = sum(_cost(dev[n] + a + b * y, n == node_id, under)
                - _cost(dev[n], n == node_id, under)
                        for n, (a, b) in lin.items())  # fmt: skip
            for n, (a, b) in sub.items():
                d = sub_dev[n]
                score += sub_weight * ((d + a + b * y) ** 2 - d * d)
            if floors:
                after = 0.0
                for now, a, b in floors:
                    f = now + a + b * y
                    if f > 0:
                        after += f * f
                score += ahead * (after - floors_now)
            if score < best_score:
                best_score, best_y = score, y
        if interleave and (zone_of[own[i - 1]] == zone or zone_of[own[i]] == zone):
            best_score += _NEIGHBOUR_PENALTY * per_token * per_token
        return best_score, best_y, lin, changed, qlin, sub

    full = target[zone]
    per_token = full / count
    # When every zone holds a replica of each key and they compete for the extra (2 zones with
    # N=3), the extra goes to the zone whose next node comes first: two adjacent tokens of one
    # zone fix it there for good, and no later join could take it away when the zones' sizes
    # change. Interleaving zones keeps every range's extra open to the next newcomer.
    interleave = quotas.base[zone] >= 1
    goal[node_id] = full / count

    def rough(i: int) -> float:
        """Cheap score for a large ring's first queue: the newcomer takes up to a token's share
        of the gap from the last node of the gap's list."""
        width = (toks[i] - toks[i - 1]) % RING_SIZE
        loser = lists[i][-1]
        d, q, w = load[loser] - goal[loser], -per_token, min(width / 2, per_token)
        return (d - w) ** 2 - d * d + (q + w) ** 2 - q * q

    # First queues by the scoring that made them: runs that score alike start alike (a large
    # ring's rough queue does not depend on the run at all).
    queues: dict[tuple[float, float], list[tuple[float, int]]] = (
        shared[2] if shared else {}  # type: ignore[assignment]
    )
    kind = (0.0, 0.0) if len(toks) > _EXACT_QUEUE_GAPS else (under, ahead)
    if kind in queues:
        queue = list(queues[kind])
    else:
        score_of = (lambda i: effect(i)[0]) if len(toks) <= _EXACT_QUEUE_GAPS else rough
        queue = [
            (score_of(i), toks[i])
            for i in range(len(toks))
            if (toks[i] - toks[i - 1]) % RING_SIZE >= 2 or len(toks) == 1
        ]
        heapq.heapify(queue)
        queues[kind] = list(queue)
        if not shared:
            shared[:] = [list(lists), dict(load), queues]
    chosen: list[int] = []
    for placed in range(1, count + 1):
        goal[node_id] = full * placed / count
        best: (
            tuple[
                float, int, int, dict[str, tuple[float, int]], list[list[str]],
                dict[tuple[str, str], tuple[float, int]], dict[str, tuple[float, int]],
            ] | None
        ) = None  # fmt: skip
        for _ in range(pops):
            if not queue:
                break
            _, end = heapq.heappop(queue)
            i = bisect_left(toks, end)
            if i == len(toks) or toks[i] != end:
                continue  # stale entry
            if len(toks) > 1 and (end - toks[i - 1]) % RING_SIZE < 2:
                continue
            score, y, lin, changed, qlin, sub = effect(i)
            if best is None or score < best[0]:
                if best is not None:
                    heapq.heappush(queue, (best[0], best[1]))
                best = (score, end, y, lin, changed, qlin, sub)
            else:
                heapq.heappush(queue, (score, end))
            if queue and best[0] <= queue[0][0]:
                break
        if best is None:
            raise ValueError("no range on the ring is wide enough to split")
        _, end, y, lin, changed, qlin, sub = best
        y -= _id_jitter(node_id, placed) % max(1, y // 64)
        for name, (a, b) in lin.items():
            load[name] += a + b * y
        for key, (a, b) in qlin.items():
            pushable[key] += a + b * y
        for name, (a, b) in sub.items():
            sub_load[name] += a + b * y
        i = bisect_left(toks, end)
        size = len(toks)
        for back, new in enumerate(changed, start=1):
            lists[(i - back) % size] = new
        x = (toks[i - 1] + y) % RING_SIZE
        first = quotas.walk(own, i, i, node_id)
        at = bisect_left(toks, x)
        toks.insert(at, x)
        own.insert(at, node_id)
        lists.insert(at, first)
        chosen.append(x)
        for gap_end in (x, end):
            k = bisect_left(toks, gap_end)
            heapq.heappush(queue, (effect(k)[0], gap_end))
    peak = max(load[n] / goal[n] for n in load)
    floors = {
        y: max(
            (load[n] - pushable[(n, y)]) / next_goal[y][zone_of[n]] for n in load if zone_of[n] != y
        )
        for y in nexts
    }
    ahead_peak = max([0.0, *floors.values()])
    if two_zones:
        # What the zone's nodes will carry once it holds just its one replica of every key.
        ahead_peak = max(ahead_peak, max(sub_load.values()) / sub_goal)
    return _RunResult(peak, floors, ahead_peak, _unclaimed(ring, chosen))
