"""Gossip state: versioned endpoint states and the digest exchange (Cassandra's gms).

Each node owns one ``EndpointState``: a *generation* (chosen at process start, so a restarted
node's news always beats its previous life's), a heartbeat version, and application states
(zone, addresses, status, tokens, ...) each stamped with the version at which it last changed.
All versions of one node come from one counter, so ``(generation, max_version)`` orders any two
snapshots of a node's state and stale news never overwrites fresh news.

Heartbeats are not gossiped (a table whose every entry changes every half second would differ
on every exchange); liveness comes from ringkv.core.failure_detector's ``Watch``, and a
member's conviction travels as the convicting member's ``DOWN`` application state. So the
tables of two members are normally identical, and a round costs a summary:

1. SYN: the initiator sends ``summary()``: one hash per bucket of members (``DIGEST_BUCKETS``,
   by a hash of the id), kept up to date incrementally as states change.
2. The receiver answers ``digests_in(differing(summary))``: node -> (generation, max_version)
   for the members of the buckets that differ only (nothing when the tables agree).
3. ACK2: the initiator answers with ``reconcile(digests, buckets)``: the deltas the receiver
   lacks and requests for what the initiator lacks; the receiver applies the deltas and replies
   with ``deltas_for(requests)``.

So a round sends digests and deltas of what differs, never the whole table. The earlier
exchange (SYN with every digest, answered by ``handle_syn``) is still served, so that members
running older code keep gossiping with newer ones.

Members that left or were removed are ``evict``-ed after a grace period, and then quarantined:
news of them at the generation they had (from a peer that has not evicted them yet) is
ignored, so a stale peer cannot bring them back. Both periods follow the hint window and the
tombstone grace (``departure_periods``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Digest = tuple[int, int]  # (generation, max_version)
Delta = dict[str, Any]  # {"g": generation, "h": heartbeat, "a": {key: [value, version]}}

# Application state keys.
ZONE = "zone"
ADDRESS = "address"
PEER_ADDRESS = "peer"
STATUS = "status"
TOKENS = "tokens"
INCARNATION = "incarnation"
REMOVED = "removed"  # {node: generation} this member force-removed
REMOVING = "removing"  # {"node": id, "generation": g} while this member re-replicates it
CHANGE = "change"  # progress of the membership change this member drives
CLEANUP = "cleanup"  # the ring this member sees and its cleanup progress (ringkv.core.cleanup)
DOWN = "down"  # {node: [generation, version]} members this one convicts (see core.failure_detector)
#: {"count", "peer": [addresses], "client": [addresses]} of a node served by several shards
SHARDS = "shards"
ALIVE = "alive"  # a counter a member bumps to refute a conviction of itself
WRITES_REFUSED = "writes_refused"  # why its disk refuses writes now ("" when it takes them)

DIGEST_BUCKETS = 32
"""Buckets of the SYN summary: enough that one change costs the digests of ~1/32 of the
members, few enough that the summary itself is a few hundred bytes."""
_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=1 << 16)
def bucket_of(node: str) -> int:
    """The summary bucket of a member (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(node.encode(), digest_size=4).digest(), "big") % (
        DIGEST_BUCKETS
    )


def _digest_hash(node: str, digest: Digest) -> int:
    raw = f"{node}\x00{digest[0]}\x00{digest[1]}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


# Member statuses (docs/operations-ring.md, "Node states"), declared here once: the node's
# membership, cleanup and observability and the operator's plan all import them.
NORMAL = "normal"
JOINING = "joining"
LEAVING = "leaving"
LEFT = "left"
STARTING = "starting"
REPLACING = "replacing"
MEMBER_STATES = (NORMAL, JOINING, LEAVING, LEFT, STARTING, REPLACING)

#: A member in one of these owns ranges now: it holds its tokens' data (reads, the "from"
#: side of streaming).
RING_STATUSES = (NORMAL, LEAVING, REPLACING)
#: The ring as it is now, built from the members that hold tokens: ``starting`` counts only
#: with tokens (a replacement waiting for an admin ``replace``, which keeps the dead node's
#: place instead of dropping its ranges). See ``in_ring``.
CURRENT_STATUSES = (*RING_STATUSES, STARTING)
#: The ring once the change in progress completes (writes go to both rings).
FUTURE_STATUSES = (NORMAL, JOINING, REPLACING, STARTING)
#: Members that take writes but must not answer reads yet.
UNREADABLE_STATUSES = (JOINING, REPLACING, STARTING)
#: Members that answer reads: in the current ring and readable.
READABLE_STATUSES = tuple(s for s in CURRENT_STATUSES if s not in UNREADABLE_STATUSES)
#: A member running a ring change of its own (or interrupted in one; it resumes on restart).
CHANGE_STATUSES = (JOINING, LEAVING, REPLACING)
#: Members whose disk holds (or is receiving) ranges of the ring: losing one loses replicas.
DATA_STATUSES = (NORMAL, JOINING, LEAVING, REPLACING)


def in_ring(status: str, has_tokens: bool) -> bool:
    """Whether a member with this status owns ranges now (is part of the current ring)."""
    return status in RING_STATUSES or (status == STARTING and has_tokens)


@dataclass(slots=True)
class EndpointState:
    generation: int
    heartbeat: int = 0
    app: dict[str, tuple[Any, int]] = field(default_factory=dict)

    @property
    def max_version(self) -> int:
        return max([self.heartbeat, *(version for _, version in self.app.values())])

    def digest(self) -> Digest:
        return (self.generation, self.max_version)

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.app.get(key)
        return entry[0] if entry is not None else default

    def delta_since(self, version: int) -> Delta:
        """Everything that changed after ``version`` (the whole state for version -1)."""
        return {
            "g": self.generation,
            "f": version,  # the version this delta starts from; -1 means the whole state
            "h": self.heartbeat,
            "a": {k: [v, ver] for k, (v, ver) in self.app.items() if ver > version},
        }


class Gossiper:
    """The membership view of one node and the pure steps of a gossip round."""

    def __init__(self, node_id: str, generation: int, app: Mapping[str, Any]) -> None:
        self.node_id = node_id
        self._version = 0
        self.states: dict[str, EndpointState] = {node_id: EndpointState(generation)}
        # The summary: per bucket, the sum of its members' digest hashes (mod 2**64), kept up to
        # date by every change (``_touch``) so that a SYN costs O(buckets), not O(members).
        self._buckets = [0] * DIGEST_BUCKETS
        # node -> (generation, until): evicted members whose old news is ignored.
        self.quarantine: dict[str, tuple[int, float]] = {}
        self._touch(node_id, None)
        for key, value in app.items():
            self.set_app(key, value)

    def _touch(self, node: str, before: Digest | None) -> None:
        """Move ``node``'s contribution to the summary from digest ``before`` (None: it had no
        state) to its current digest (or none if it went)."""
        bucket = bucket_of(node)
        total = self._buckets[bucket]
        if before is not None:
            total -= _digest_hash(node, before)
        state = self.states.get(node)
        if state is not None:
            total += _digest_hash(node, state.digest())
        self._buckets[bucket] = total & _MASK

    def adopt(self, states: Mapping[str, EndpointState]) -> None:
        """Take ``states`` (other members' states, not our own) as known: for a simulator or a
        test that starts from a converged cluster. The objects may be shared between
        gossipers, since ``apply`` never changes a state in place."""
        for node, state in states.items():
            if node == self.node_id:
                continue
            before = self.states.get(node)
            self.states[node] = state
            self._touch(node, before.digest() if before is not None else None)

    # -- local changes ----------------------------------------------------------------------

    @property
    def local(self) -> EndpointState:
        return self.states[self.node_id]

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def beat(self) -> None:
        """Advance the local heartbeat version (not done by ringkv's nodes any more: see the
        module docstring; kept for the exchange's own tests and older peers)."""
        before = self.local.digest()
        self.local.heartbeat = self._next_version()
        self._touch(self.node_id, before)

    def set_app(self, key: str, value: Any) -> None:
        current = self.local.app.get(key)
        if current is not None and current[0] == value:
            return
        before = self.local.digest()
        self.local.app[key] = (value, self._next_version())
        self._touch(self.node_id, before)

    # -- the exchange -----------------------------------------------------------------------

    def digests(self) -> dict[str, Digest]:
        return {node: state.digest() for node, state in self.states.items()}

    def summary(self) -> list[int]:
        """The SYN: one hash per bucket of members."""
        return list(self._buckets)

    def differing(self, summary: Iterable[int]) -> list[int]:
        """Buckets whose hash differs from ours (all of them if ``summary`` is malformed)."""
        theirs = list(summary)
        if len(theirs) != DIGEST_BUCKETS:
            return list(range(DIGEST_BUCKETS))
        return [b for b in range(DIGEST_BUCKETS) if int(theirs[b]) != self._buckets[b]]

    def digests_in(self, buckets: Iterable[int]) -> dict[str, Digest]:
        """Digests of our members in ``buckets``."""
        wanted = set(buckets)
        if not wanted:
            return {}
        return {
            node: state.digest() for node, state in self.states.items() if bucket_of(node) in wanted
        }

    def reconcile(
        self, digests: Mapping[str, Iterable[int]], buckets: Iterable[int]
    ) -> tuple[dict[str, Delta], dict[str, Digest]]:
        """``handle_syn`` restricted to ``buckets``: deltas the peer lacks and requests for what
        we lack, given the peer's digests of those buckets."""
        deltas, requests = self._compare(digests)
        wanted = set(buckets)
        for node, state in self.states.items():
            if node not in digests and bucket_of(node) in wanted:
                deltas[node] = state.delta_since(-1)
        return deltas, requests

    def handle_syn(
        self, digests: Mapping[str, Iterable[int]]
    ) -> tuple[dict[str, Delta], dict[str, Digest]]:
        """Answer a SYN: deltas where we know more, requests where the sender knows more."""
        deltas, requests = self._compare(digests)
        for node, state in self.states.items():
            if node not in digests:
                deltas[node] = state.delta_since(-1)
        return deltas, requests

    def _compare(
        self, digests: Mapping[str, Iterable[int]]
    ) -> tuple[dict[str, Delta], dict[str, Digest]]:
        deltas: dict[str, Delta] = {}
        requests: dict[str, Digest] = {}
        for node, raw in digests.items():
            generation, version = tuple(raw)
            mine = self.states.get(node)
            if mine is None:
                if not self._quarantined(node, int(generation)):
                    requests[node] = (-1, -1)
            elif mine.generation > generation:
                deltas[node] = mine.delta_since(-1)
            elif mine.generation < generation:
                requests[node] = (-1, -1)
            elif mine.max_version > version:
                deltas[node] = mine.delta_since(version)
            elif mine.max_version < version:
                requests[node] = mine.digest()
        return deltas, requests

    def _quarantined(self, node: str, generation: int) -> bool:
        entry = self.quarantine.get(node)
        return entry is not None and generation <= entry[0]

    def deltas_for(self, requests: Mapping[str, Iterable[int]]) -> dict[str, Delta]:
        """The ACK2 deltas for requests (generation, version) received in an ACK."""
        deltas: dict[str, Delta] = {}
        for node, raw in requests.items():
            generation, version = tuple(raw)
            mine = self.states.get(node)
            if mine is None:
                continue
            deltas[node] = mine.delta_since(version if mine.generation == generation else -1)
        return deltas

    def apply(self, deltas: Mapping[str, Delta]) -> set[str]:
        """Merge received deltas; returns the nodes whose state advanced.

        News about ourselves is ignored (we are the only source of our own state), except that
        a higher generation of our own id means another process claims it: the caller decides.
        """
        changed: set[str] = set()
        for node, delta in deltas.items():
            if node == self.node_id:
                continue
            generation = int(delta["g"])
            mine = self.states.get(node)
            if mine is None and self._quarantined(node, generation):
                continue  # an evicted member, from a peer that has not evicted it yet
            before = mine.digest() if mine is not None else None
            if mine is None or generation > mine.generation:
                if int(delta.get("f", -1)) != -1:
                    continue  # a partial delta cannot found a state; a full one will come
                fresh = EndpointState(generation)
                changed.add(node)  # a new life, even if the delta carries nothing else
            elif generation < mine.generation:
                continue  # news from a previous life
            else:
                fresh = None
            # Copy on write: a state object is never changed once another may hold it.
            heartbeat = int(delta.get("h", 0))
            base = fresh if fresh is not None else mine
            assert base is not None
            newer = {
                key: (value, int(version))
                for key, (value, version) in dict(delta.get("a", {})).items()
                if key not in base.app or version > base.app[key][1]
            }
            if fresh is None and not newer and heartbeat <= base.heartbeat:
                continue
            self.states[node] = EndpointState(
                base.generation, max(heartbeat, base.heartbeat), {**base.app, **newer}
            )
            changed.add(node)
            self._touch(node, before)
        return changed

    def remove(self, node: str) -> None:
        """Forget a node entirely (only for nodes that have left the cluster)."""
        if node != self.node_id:
            state = self.states.pop(node, None)
            if state is not None:
                self._touch(node, state.digest())

    def evict(self, node: str, until: float) -> None:
        """Drop a departed member's state and ignore news of its current generation (or older)
        until ``until``: Cassandra's quarantine of removed endpoints."""
        state = self.states.get(node)
        if node == self.node_id or state is None:
            return
        self.quarantine[node] = (state.generation, until)
        self.remove(node)

    def expire(self, now: float) -> None:
        """End the quarantines that are over."""
        for node in [n for n, (_, until) in self.quarantine.items() if until <= now]:
            del self.quarantine[node]


KEEP_DEPARTED_ROUNDS = 60
"""Gossip rounds a departed member stays in gossip state at least: news reaches every member of
a 5,000-member cluster within about 10 rounds (benchmarks/membership_sim.py), so 60 leaves a wide
margin when the hint window is set very short."""


def departure_periods(
    hint_window: float, tombstone_grace: float, gossip_interval: float
) -> tuple[float, float]:
    """``(keep, quarantine)``: how long a member that left or was removed stays in gossip state
    after we saw it depart, and then how long news of it is ignored (``Gossiper.evict``).

    Both follow settings the node already has, rather than a constant of their own:

    - ``keep`` is the hint window (at least ``KEEP_DEPARTED_ROUNDS`` gossip rounds): a member
      unreachable for up to the hint window is expected back with its state and catches up
      from hints, so within that window it must still be able to learn the departure from
      gossip itself, not only be ignored by the others.
    - ``quarantine`` is the tombstone grace (at least ``keep``): the longest a member can be
      away and come back with its old state (longer, it refuses to start or wipes itself;
      see ``ringkv.core.absence``), so stale news of the departed member that any returning
      member carries is older than that. The same horizon guards deleted values against
      resurrection; a departed member is the membership's tombstone.
    """
    keep = max(hint_window, KEEP_DEPARTED_ROUNDS * gossip_interval)
    return keep, max(tombstone_grace, keep)


def convicted(states: Mapping[str, EndpointState], among: Iterable[str] | None = None) -> set[str]:
    """Members some other member convicts in its ``DOWN`` state, at their current generation
    and version: a member refutes a conviction by bumping its ``ALIVE`` counter, which makes
    the version named in the conviction stale. ``among``: the members whose ``DOWN`` to read
    (default all; a caller that tracks which members convict anyone passes those)."""
    out: set[str] = set()
    for member in states if among is None else among:
        state = states.get(member)
        if state is None:
            continue
        entry = state.app.get(DOWN)
        if not entry or not entry[0]:
            continue
        for node, raw in dict(entry[0]).items():
            if node == member or node in out:
                continue
            target = states.get(node)
            if target is None:
                continue
            generation, version = raw
            if int(generation) == target.generation and int(version) >= target.max_version:
                out.add(node)
    return out


# -- one node's shards: followers of one view ----------------------------------------------------

#: Application states that decide where keys go (the rings, the shards of each member): a
#: follower rebuilds its rings only when one of them changes (``follow_view``).
PLACEMENT_STATES = frozenset({TOKENS, STATUS, ZONE, REMOVED, REMOVING, SHARDS})


def places_keys(deltas: Mapping[str, Delta], nodes: Iterable[str]) -> bool:
    """Whether applying ``deltas`` changed ``nodes`` in a way that can move keys: a member's
    whole state (it is new to us, or restarted) or a change to one of ``PLACEMENT_STATES``.
    Progress reports, convictions and the like leave the rings as they are, and rebuilding
    them sorts every token of the ring."""
    for node in nodes:
        delta = deltas.get(node)
        if delta is None or int(delta.get("f", -1)) < 0:
            return True
        if not PLACEMENT_STATES.isdisjoint(delta.get("a") or ()):
            return True
    return False


def view_changes(
    states: Mapping[str, EndpointState], known: Mapping[str, Iterable[int]]
) -> tuple[dict[str, Delta], list[str]]:
    """What a follower holding ``known`` (member -> its digest, (generation, max_version)) lacks
    of ``states``: the deltas since what it holds, and the members it holds that are gone. The
    shards of a node follow the first shard's view this way, so that a poll costs what changed,
    not the whole table (megabytes of tokens at a thousand members)."""
    deltas: dict[str, Delta] = {}
    for node, state in states.items():
        have = known.get(node)
        generation, version = tuple(have) if have is not None else (-1, -1)
        if int(generation) != state.generation:
            deltas[node] = state.delta_since(-1)
        elif int(version) < state.max_version:
            deltas[node] = state.delta_since(int(version))
    return deltas, [node for node in known if node not in states]


def follow_view(
    states: dict[str, EndpointState], deltas: Mapping[str, Delta], gone: Iterable[str]
) -> bool:
    """Apply ``view_changes`` to a follower's ``states`` (in place); whether anything that
    places keys (``PLACEMENT_STATES``, a member's arrival, departure or restart) changed."""
    placement = False
    for node in gone:
        placement |= states.pop(node, None) is not None
    for node, delta in deltas.items():
        app = {str(k): (v, int(ver)) for k, (v, ver) in dict(delta["a"]).items()}
        generation, since = int(delta["g"]), int(delta["f"])
        current = states.get(node)
        if since < 0 or current is None or current.generation != generation:
            states[node] = EndpointState(generation, int(delta["h"]), app)
            placement = True
        else:
            current.app.update(app)
            current.heartbeat = int(delta["h"])
    return placement or places_keys(deltas, deltas)
