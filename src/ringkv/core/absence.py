"""Absence: whether a node was away too long to rejoin with the data it has.

Tombstones are purged once they are older than ``--tombstone-grace``. A node that was down
longer than that, while the rest of the cluster kept running, may hold values whose deletes the
others have since forgotten; serving or streaming them would bring deleted data back (the
famous Cassandra ``gc_grace_seconds`` trap). Such a node must not rejoin as it is: it is wiped
and comes back as a replacement of itself (same id and tokens, data streamed from the others).

"The cluster kept running" is judged by the peers' uptimes: if a peer has been up at least as
long as this node was away, the cluster went on without it. When no peer has (the whole cluster
was down, or restarted meanwhile), nothing was purged behind this node's back by a peer that
ran all along, and it starts as usual.

Pure: times are arguments.
"""

from __future__ import annotations

from collections.abc import Iterable


def alive_interval(grace_seconds: float) -> float:
    """How often a running node records that it is alive: a fraction of the grace, so that
    the absence measured at start-up overestimates the real one by little."""
    return min(max(grace_seconds / 10, 0.2), 60.0)


def away_too_long(
    last_alive_ms: int | None,
    now_ms: int,
    grace_seconds: float,
    peer_uptimes_seconds: Iterable[float],
) -> str | None:
    """Why this node must not rejoin with its data, or None when it may."""
    if last_alive_ms is None:
        return None  # a new (or wiped) data directory
    away_ms = now_ms - last_alive_ms
    if away_ms <= grace_seconds * 1000:
        return None
    longest = max(peer_uptimes_seconds, default=None)
    if longest is None or longest * 1000 < away_ms:
        return None
    return (
        f"this node was down for {away_ms / 1000:.0f} s, longer than --tombstone-grace "
        f"({grace_seconds:g} s), while the cluster kept running (a peer has been up "
        f"{longest:.0f} s): its data may hold values deleted since, whose tombstones the others "
        "have purged, and serving or streaming them would bring deleted data back"
    )
