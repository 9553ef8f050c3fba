"""Streaming plans: which token ranges move where when the ring changes (Cassandra's
RangeStreamer and pending ranges; Riak's ``cluster plan``).

A membership change turns the *current* ring into a *future* ring. Cut the hash space at every
token of either ring; for each slice, the nodes that replicate it in the future ring but not
now must receive its data from a node that replicates it now. Nothing else moves, so a join
moves about K/N of the data and a departure about the departing node's share.

``plan_transfers`` computes that list; ``plan_rebuild`` covers a replacement (same id and
tokens, empty disk), where the rings are equal but one node must get all of its ranges back.
Both are pure: liveness is passed in.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from ringkv.core.placement import preference_list
from ringkv.core.ring import RING_SIZE, Ring


@dataclass(frozen=True, slots=True)
class Transfer:
    """Copy the records in ring positions (start, end] from ``source`` to ``target``."""

    start: int
    end: int
    source: str | None  # None: no live replica holds the range (reported, not executed)
    target: str

    def size(self) -> int:
        return (self.end - self.start) % RING_SIZE or RING_SIZE


def _slices(rings: Iterable[Ring]) -> list[tuple[int, int]]:
    tokens = sorted({t for ring in rings for t in ring.sorted_tokens})
    if not tokens:
        return []
    return [(tokens[i - 1], tokens[i]) for i in range(1, len(tokens))] + [(tokens[-1], tokens[0])]


def _replicas(ring: Ring, position: int, n: int) -> list[str]:
    return [r.node for r in preference_list(ring, position, n)] if len(ring) else []


def _choose_source(candidates: list[str], alive: Container[str], prefer: str | None) -> str | None:
    if prefer is not None and prefer in candidates and prefer in alive:
        return prefer
    return next((c for c in candidates if c in alive), None)


def _coalesce(transfers: list[Transfer]) -> list[Transfer]:
    """Join adjacent slices with the same source and target into one transfer."""
    out: list[Transfer] = []
    for t in transfers:
        last = out[-1] if out else None
        if last is not None and (last.source, last.target, last.end) == (
            t.source,
            t.target,
            t.start,
        ):
            out[-1] = Transfer(last.start, t.end, t.source, t.target)
        else:
            out.append(t)
    return out


def plan_transfers(
    current: Ring,
    future: Ring,
    n: int,
    alive: Container[str],
    prefer_source: str | None = None,
) -> list[Transfer]:
    """Transfers that give every future replica the slices it does not replicate now.

    Sources are current replicas that are alive, ``prefer_source`` first (a leaving node
    streams its own data). Sorted by target, then ring position.
    """
    transfers: list[Transfer] = []
    for start, end in _slices([current, future]):
        now = _replicas(current, end, n)
        later = _replicas(future, end, n)
        for target in later:
            if target not in now:
                source = _choose_source([x for x in now if x != target], alive, prefer_source)
                transfers.append(Transfer(start, end, source, target))
    transfers.sort(key=lambda t: (t.target, t.start))
    return _coalesce(transfers)


def plan_rebuild(ring: Ring, n: int, node: str, alive: Container[str]) -> list[Transfer]:
    """Transfers that refill ``node`` (same tokens, empty disk) from its ranges' other replicas."""
    transfers: list[Transfer] = []
    for start, end in _slices([ring]):
        replicas = _replicas(ring, end, n)
        if node in replicas:
            source = _choose_source([x for x in replicas if x != node], alive, None)
            transfers.append(Transfer(start, end, source, node))
    return _coalesce(transfers)


def moved_fraction(transfers: Iterable[Transfer]) -> float:
    """Hash space moved, in replicas' worth of the whole ring (1.0 = one full copy)."""
    return sum(t.size() for t in transfers) / RING_SIZE
