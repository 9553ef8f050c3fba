"""Gossip state: versioned endpoint states and the three-message digest exchange (Cassandra's gms).

Each node owns one ``EndpointState``: a *generation* (chosen at process start, so a restarted
node's news always beats its previous life's), a heartbeat version, and application states
(zone, addresses, status, tokens, ...) each stamped with the version at which it last changed.
All versions of one node come from one counter, so ``(generation, max_version)`` orders any two
snapshots of a node's state and stale news never overwrites fresh news.

A round (``Gossiper`` is a pure state machine; the node moves the messages):

1. SYN: the initiator sends ``digests()``: node -> (generation, max_version).
2. ACK: the receiver answers ``handle_syn(digests)``: the deltas the initiator lacks, plus
   requests for the nodes where the initiator knows more.
3. ACK2: the initiator applies the deltas and sends ``deltas_for(requests)``.
"""

from __future__ import annotations

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

# Statuses: see ringkv.node.membership for what each means for reads, writes and the ring.
NORMAL = "normal"
JOINING = "joining"
LEAVING = "leaving"
LEFT = "left"
STARTING = "starting"
REPLACING = "replacing"


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
        for key, value in app.items():
            self.set_app(key, value)

    # -- local changes ----------------------------------------------------------------------

    @property
    def local(self) -> EndpointState:
        return self.states[self.node_id]

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def beat(self) -> None:
        """Advance the local heartbeat (every heartbeat interval)."""
        self.local.heartbeat = self._next_version()

    def set_app(self, key: str, value: Any) -> None:
        current = self.local.app.get(key)
        if current is not None and current[0] == value:
            return
        self.local.app[key] = (value, self._next_version())

    # -- the exchange -----------------------------------------------------------------------

    def digests(self) -> dict[str, Digest]:
        return {node: state.digest() for node, state in self.states.items()}

    def handle_syn(
        self, digests: Mapping[str, Iterable[int]]
    ) -> tuple[dict[str, Delta], dict[str, Digest]]:
        """Answer a SYN: deltas where we know more, requests where the sender knows more."""
        deltas: dict[str, Delta] = {}
        requests: dict[str, Digest] = {}
        for node, raw in digests.items():
            generation, version = tuple(raw)
            mine = self.states.get(node)
            if mine is None:
                requests[node] = (-1, -1)
            elif mine.generation > generation:
                deltas[node] = mine.delta_since(-1)
            elif mine.generation < generation:
                requests[node] = (-1, -1)
            elif mine.max_version > version:
                deltas[node] = mine.delta_since(version)
            elif mine.max_version < version:
                requests[node] = mine.digest()
        for node, state in self.states.items():
            if node not in digests:
                deltas[node] = state.delta_since(-1)
        return deltas, requests

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
            if mine is None or generation > mine.generation:
                if int(delta.get("f", -1)) != -1:
                    continue  # a partial delta cannot found a state; a full one will come
                mine = EndpointState(generation)
                self.states[node] = mine
            elif generation < mine.generation:
                continue  # news from a previous life
            advanced = False
            heartbeat = int(delta.get("h", 0))
            if heartbeat > mine.heartbeat:
                mine.heartbeat = heartbeat
                advanced = True
            for key, (value, version) in dict(delta.get("a", {})).items():
                current = mine.app.get(key)
                if current is None or version > current[1]:
                    mine.app[key] = (value, int(version))
                    advanced = True
            if advanced:
                changed.add(node)
        return changed

    def remove(self, node: str) -> None:
        """Forget a node entirely (only for nodes that have left the cluster)."""
        if node != self.node_id:
            self.states.pop(node, None)
