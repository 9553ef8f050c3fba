"""Cleanup: which token ranges a node may delete once a ring change is over (Cassandra's
``nodetool cleanup``, run automatically; riak_core deletes a vnode's data only after handoff).

A ring change copies data to the new replicas but leaves it on the old ones. Those stale copies
waste disk, overstate ``ringkv_stored_keys`` and -- worse -- resurrect deleted keys: a delete
after the change reaches only the new replicas, their tombstones are purged after the grace
period, and a later change that hands the range back to the old node brings the old value back.

This module decides, as a pure function of the ring, the members' states and what they report,
whether a node may clean now and which ranges (``cleanup_plan``):

- the node must have run for ``START_SETTLE_MS`` (its ring is complete), be a ``normal`` ring
  member, and no change may be pending: the future
  ring equals the ring, nobody is ``joining``/``leaving``/``replacing`` (alive or not: an
  interrupted change resumes), no removal is running, no node holds a dead node's place waiting
  for an admin ``replace`` (``starting`` with tokens), no change was cancelled or failed within
  ``SETTLE_MS``, and every live ring member reports the same ring version (so no coordinator
  still routes writes by the old ring);
- a range qualifies when this node does not replicate it and every one of its replicas is alive
  and ``normal`` (they are the ones that must hold the data once ours is gone).

The node (``ringkv.node.cleanup``) still confirms, batch by batch, that every replica holds each
record before it deletes the batch (a one-way anti-entropy exchange: ``records_to_hand_off``).
Pure code: time is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ringkv.core import gossip as g
from ringkv.core.placement import preference_list
from ringkv.core.ring import RING_SIZE, Ring

__all__ = [
    "CLEANUP_STATES",
    "SETTLE_MS",
    "START_SETTLE_MS",
    "CleanupPlan",
    "MemberInfo",
    "cleanup_plan",
    "foreign_ranges",
    "hold_reason",
    "range_bounds",
    "records_to_hand_off",
]

#: A cancelled or failed change holds cleanup back this long (views of the ring settle first).
SETTLE_MS = 10_000
#: A node that has just started holds cleanup this long: its ring may still be partial until
#: gossip has told it of every member, and a partial ring misplaces ranges.
START_SETTLE_MS = 5_000
#: What a node reports about its cleanup (``/v1/status``, ``/v1/admin/progress``):
#: ``pending`` (its ring has changed, cleanup has not started), ``held`` (waiting, with a
#: reason), ``running``, ``done`` (nothing it does not replicate is left for this ring);
#: ``unknown`` in ``/v1/admin/progress`` for a member that reports none (an older version).
CLEANUP_STATES = ("pending", "held", "running", "done", "unknown")

Range = tuple[int, int]  # ring positions (start, end], wrapping when start >= end


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """What gossip says of one member."""

    status: str
    alive: bool
    has_tokens: bool = True
    removing: str | None = None  # the node it is removing, if any
    ring_version: str | None = None  # the ring version it reports seeing
    change_state: str | None = None  # state of the change report it publishes, if any
    change_updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class CleanupPlan:
    """``hold``: why nothing may be cleaned now (None: go ahead). ``ready``: the ranges to
    clean now; ``waiting``: ranges this node does not replicate that must wait, with why."""

    hold: str | None
    ready: tuple[Range, ...] = ()
    waiting: tuple[tuple[Range, str], ...] = field(default_factory=tuple)


def _replicas(ring: Ring, position: int, n: int) -> tuple[str, ...]:
    return tuple(r.node for r in preference_list(ring, position, n))


def foreign_ranges(ring: Ring, node: str, n: int) -> list[tuple[Range, tuple[str, ...]]]:
    """The ranges of ``ring`` that ``node`` does not replicate, with their replicas, adjacent
    ranges with the same replicas joined (in ring order)."""
    out: list[tuple[Range, tuple[str, ...]]] = []
    for r in ring.ranges():
        replicas = _replicas(ring, r.end, n)
        if node in replicas:
            continue
        if out and out[-1][0][1] == r.start and set(out[-1][1]) == set(replicas):
            (start, _), same = out[-1]
            out[-1] = ((start, r.end), same)
        else:
            out.append(((r.start, r.end), replicas))
    if len(out) > 1 and out[-1][0][1] == out[0][0][0] and set(out[-1][1]) == set(out[0][1]):
        (start, _), same = out.pop()
        out[0] = ((start, out[0][0][1]), same)  # the last range wraps into the first
    return out


def hold_reason(
    node: str,
    ring: Ring,
    future_ring: Ring,
    members: Mapping[str, MemberInfo],
    now_ms: int,
    started_ms: int = 0,
) -> str | None:
    """Why ``node`` may not clean anything now, or None (see the module docstring).
    ``started_ms``: when this node (its view of the cluster) started."""
    if now_ms - started_ms < START_SETTLE_MS:
        return "just started: waiting for gossip to settle"
    me = members.get(node)
    if node not in ring or me is None or me.status != g.NORMAL:
        return f"{node} is not a normal ring member"
    if future_ring != ring:
        return "a ring change is pending"
    for other, info in sorted(members.items()):
        if info.status in g.CHANGE_STATUSES:
            return f"{other} is {info.status}"
        if info.removing:
            return f"{other} is removing {info.removing}"
        if info.status == g.STARTING and info.has_tokens:
            return f"{other} holds a node's place and waits for replace"
        if info.change_state in ("cancelled", "failed") and (
            now_ms - info.change_updated_ms < SETTLE_MS
        ):
            return f"a ring change driven by {other} {info.change_state} moments ago"
    version = ring.version
    for other in ring.nodes:
        seen = members.get(other)
        if seen is not None and seen.alive and seen.ring_version != version:
            return f"{other} does not see ring {version} yet"
    return None


def cleanup_plan(
    node: str,
    ring: Ring,
    future_ring: Ring,
    n: int,
    members: Mapping[str, MemberInfo],
    now_ms: int,
    started_ms: int = 0,
) -> CleanupPlan:
    """What ``node`` may clean now."""
    hold = hold_reason(node, ring, future_ring, members, now_ms, started_ms)
    if hold is not None:
        return CleanupPlan(hold)
    ready: list[Range] = []
    waiting: list[tuple[Range, str]] = []
    for span, replicas in foreign_ranges(ring, node, n):
        blocked = [
            r for r in replicas
            if r not in members or not members[r].alive or members[r].status != g.NORMAL
        ]  # fmt: skip
        if blocked:
            waiting.append((span, f"replica {blocked[0]} is not up and normal"))
        else:
            ready.append(span)
    return CleanupPlan(None, tuple(ready), tuple(waiting))


def range_bounds(start: int, end: int) -> list[tuple[int, int]]:
    """The range (start, end] as inclusive, non-wrapping position intervals [lo, hi]."""
    if start < end:
        return [(start + 1, end)]
    out = []
    if start + 1 < RING_SIZE:
        out.append((start + 1, RING_SIZE - 1))
    out.append((0, end))
    return out


def records_to_hand_off(ours: Sequence[tuple[bytes, bytes]], theirs: Iterable[int]) -> list[bytes]:
    """Keys of ``ours`` ((key, record digest) pairs) a replica reported holding differently
    (``theirs``: indexes into ``ours``): they are sent to it before ours are deleted. A
    replica's record that merely differs may well be newer; merging ours into it is harmless."""
    return [ours[i][0] for i in sorted(set(theirs)) if 0 <= i < len(ours)]
