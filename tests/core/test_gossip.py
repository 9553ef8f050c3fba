"""Tests for ringkv.core.gossip: endpoint states and the SYN / ACK / ACK2 digest exchange.

The property tests simulate a few ``Gossiper`` instances that change their own state (beats,
application states, restarts with a higher generation) and gossip in random pairings, with ACKs
that may be delivered late (stale news). Every node records each state it ever had; after every
``apply`` every view of a node must equal one of that node's past states, and views never move
backwards. After a few complete rounds every view is identical.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core import gossip
from ringkv.core.gossip import (
    STATUS,
    TOKENS,
    ZONE,
    Delta,
    Digest,
    EndpointState,
    Gossiper,
)

NAMES = ("n0", "n1", "n2", "n3", "n4")
KEYS = (ZONE, STATUS, TOKENS, "k3")

Snapshot = tuple[int, int, tuple[tuple[str, Any, int], ...]]


def freeze(value: Any) -> Any:
    return tuple(freeze(v) for v in value) if isinstance(value, list | tuple) else value


def snapshot(state: EndpointState) -> Snapshot:
    app = tuple(sorted((k, freeze(v), ver) for k, (v, ver) in state.app.items()))
    return (state.generation, state.heartbeat, app)


def view(gossiper: Gossiper) -> dict[str, Snapshot]:
    return {node: snapshot(state) for node, state in gossiper.states.items()}


@dataclass
class Sim:
    size: int
    gossipers: list[Gossiper] = field(default_factory=list)
    history: dict[str, set[Snapshot]] = field(default_factory=dict)
    pending: list[tuple[int, int, dict[str, Delta], dict[str, Digest]]] = field(
        default_factory=list
    )
    generation_base: int = 1000

    def __post_init__(self) -> None:
        for index in range(self.size):
            name = NAMES[index]
            self.history[name] = set()
            self.gossipers.append(Gossiper(name, self.generation_base, {ZONE: f"z{index}"}))
            self.record(index)

    def record(self, index: int) -> None:
        gossiper = self.gossipers[index]
        self.history[gossiper.node_id].add(snapshot(gossiper.local))

    # -- local changes --------------------------------------------------------------------------

    def beat(self, index: int) -> None:
        self.gossipers[index].beat()
        self.record(index)

    def set_app(self, index: int, key: str, value: Any) -> None:
        self.gossipers[index].set_app(key, value)
        self.record(index)

    def restart(self, index: int) -> None:
        # Messages in flight to or from the old process are lost: a late ACK or ACK2 reaching
        # the new process is the known bug of test_partial_delta_reaching_a_restarted_node.
        self.pending = [p for p in self.pending if index not in p[:2]]
        old = self.gossipers[index]
        app = {key: old.local.get(key) for key in old.local.app}
        self.gossipers[index] = Gossiper(old.node_id, old.local.generation + 1, app)
        self.record(index)

    # -- the exchange ---------------------------------------------------------------------------

    def apply(self, index: int, deltas: dict[str, Delta]) -> set[str]:
        gossiper = self.gossipers[index]
        before = view(gossiper)
        local = snapshot(gossiper.local)
        changed = gossiper.apply(copy.deepcopy(deltas))
        after = view(gossiper)
        assert snapshot(gossiper.local) == local  # news about ourselves is ignored
        for node, state in after.items():
            # Every view is a state the node really had: stale news never mixes in.
            assert state in self.history[node], (node, state)
            if node in before:
                old = before[node]
                assert (state[0], max_version(state)) >= (old[0], max_version(old))
        # apply reports exactly the nodes whose state it advanced.
        assert changed == {node for node in after if after[node] != before.get(node)}
        return changed

    def syn(self, initiator: int, receiver: int) -> None:
        """SYN now; the ACK (and so the ACK2) is queued for later delivery."""
        digests = self.gossipers[initiator].digests()
        deltas, requests = self.gossipers[receiver].handle_syn(digests)
        self.pending.append((initiator, receiver, copy.deepcopy(deltas), dict(requests)))

    def deliver(self, which: int) -> None:
        if not self.pending:
            return
        initiator, receiver, deltas, requests = self.pending.pop(which % len(self.pending))
        self.apply(initiator, deltas)
        ack2 = self.gossipers[initiator].deltas_for(requests)
        self.apply(receiver, ack2)

    def round(self, initiator: int, receiver: int) -> None:
        if initiator == receiver:
            return
        self.syn(initiator, receiver)
        self.deliver(-1)

    def full_rounds(self, passes: int = 2) -> None:
        for _ in range(passes):
            for i in range(self.size):
                for j in range(self.size):
                    self.round(i, j)


def max_version(snap: Snapshot) -> int:
    return max([snap[1], *(ver for _, _, ver in snap[2])])


index_ = st.integers(0, len(NAMES) - 1)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("beat"), index_, st.just(0), st.just(0)),
        st.tuples(st.just("set"), index_, st.integers(0, len(KEYS) - 1), st.integers(0, 3)),
        st.tuples(st.just("round"), index_, index_, st.just(0)),
        st.tuples(st.just("syn"), index_, index_, st.just(0)),
        st.tuples(st.just("deliver"), st.integers(0, 100), st.just(0), st.just(0)),
        st.tuples(st.just("restart"), index_, st.just(0), st.just(0)),
    ),
    max_size=40,
)


def run(size: int, operations: list[tuple[str, int, int, int]]) -> Sim:
    sim = Sim(size)
    for op, x, y, z in operations:
        if op == "deliver":
            sim.deliver(x)
            continue
        x %= size
        y %= size
        if op == "beat":
            sim.beat(x)
        elif op == "set":
            value: Any = [z, z + 1] if KEYS[y] == TOKENS else f"v{z}"
            sim.set_app(x, KEYS[y], value)
        elif op == "round":
            sim.round(x, y)
        elif op == "syn" and x != y:
            sim.syn(x, y)
        elif op == "restart":
            sim.restart(x)
    return sim


# --- convergence -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.integers(2, len(NAMES)), ops)
def test_views_converge(size: int, operations: list[tuple[str, int, int, int]]) -> None:
    sim = run(size, operations)
    while sim.pending:  # late ACKs arrive after all: stale news must not undo anything
        sim.deliver(0)
    sim.full_rounds()
    truth = {g.node_id: snapshot(g.local) for g in sim.gossipers}
    for gossiper in sim.gossipers:
        assert view(gossiper) == truth
        assert gossiper.digests() == sim.gossipers[0].digests()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, len(NAMES)), ops, st.integers(0, 2**32))
def test_views_converge_with_random_pairings(
    size: int, operations: list[tuple[str, int, int, int]], seed: int
) -> None:
    """Enough random rounds (not a fixed schedule) also converge."""
    rng = random.Random(seed)
    sim = run(size, operations)
    sim.pending.clear()  # those ACKs are lost
    truth = {g.node_id: snapshot(g.local) for g in sim.gossipers}
    for _ in range(50):
        for _ in range(size):
            i, j = rng.sample(range(size), 2)
            sim.round(i, j)
        if all(view(g) == truth for g in sim.gossipers):
            break
    assert all(view(g) == truth for g in sim.gossipers)


def test_a_round_makes_both_sides_agree() -> None:
    a = Gossiper("a", 1, {ZONE: "za"})
    b = Gossiper("b", 1, {ZONE: "zb"})
    c = Gossiper("c", 1, {ZONE: "zc"})
    a.apply(c.handle_syn({})[0])  # a learns about c
    for _ in range(3):
        a.beat()
        b.beat()
    deltas, requests = b.handle_syn(a.digests())
    assert set(deltas) == {"b"}  # b knows itself better; a knows nothing else b lacks
    assert set(requests) == {"a", "c"}
    assert requests == {"a": (-1, -1), "c": (-1, -1)}
    assert a.apply(deltas) == {"b"}
    assert b.apply(a.deltas_for(requests)) == {"a", "c"}
    assert view(a) == view(b)
    assert a.states["b"].get(ZONE) == "zb"
    assert b.states["c"].get(ZONE) == "zc"


# --- stale news ------------------------------------------------------------------------------


def node_history(generations: int, steps: list[tuple[int, int]]) -> list[Delta]:
    """Full deltas of node x at many points of its life, across restarts."""
    snapshots: list[Delta] = []
    gossiper = Gossiper("x", 10, {ZONE: "z", STATUS: "starting"})
    snapshots.append(gossiper.local.delta_since(-1))
    for kind, value in steps:
        if kind == 0:
            gossiper.beat()
        elif kind == 1:
            gossiper.set_app(STATUS, f"s{value}")
        elif kind == 2:
            gossiper.set_app(TOKENS, [value])
        elif kind == 3 and gossiper.local.generation < 10 + generations:
            gossiper = Gossiper("x", gossiper.local.generation + 1, {ZONE: "z"})
        snapshots.append(copy.deepcopy(gossiper.local.delta_since(-1)))
    return snapshots


def freshness(delta: Delta) -> tuple[int, int]:
    versions = [ver for _, ver in delta["a"].values()]
    return (delta["g"], max([delta["h"], *versions]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), max_size=20),
    st.data(),
)
def test_stale_news_never_overwrites_fresher_state(
    steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    snapshots = node_history(3, steps)
    order = data.draw(st.permutations(range(len(snapshots))))
    chosen = order[: data.draw(st.integers(1, len(order)))]
    observer = Gossiper("y", 1, {})
    best: Delta = {"g": -1, "h": -1, "a": {}}
    for index in chosen:
        delta = snapshots[index]
        before = observer.states["x"].delta_since(-1) if "x" in observer.states else None
        changed = observer.apply({"x": copy.deepcopy(delta)})
        if freshness(delta) > freshness(best):
            best = delta
        state = observer.states["x"]
        assert state.delta_since(-1) == best  # the freshest snapshot, nothing mixed in
        assert state.digest() == freshness(best)
        assert changed == ({"x"} if state.delta_since(-1) != before else set())


def test_lower_generation_is_ignored() -> None:
    observer = Gossiper("y", 1, {})
    observer.apply({"x": {"g": 5, "h": 3, "a": {ZONE: ["new", 1]}}})
    stale = {"x": {"g": 4, "h": 99, "a": {ZONE: ["old", 98], "k": ["v", 97]}}}
    assert observer.apply(stale) == set()
    state = observer.states["x"]
    assert (state.generation, state.heartbeat, state.get(ZONE), state.get("k")) == (
        5,
        3,
        "new",
        None,
    )


def test_lower_versions_are_ignored() -> None:
    observer = Gossiper("y", 1, {})
    observer.apply({"x": {"g": 5, "h": 10, "a": {ZONE: ["new", 8], STATUS: ["normal", 9]}}})
    changed = observer.apply(
        {"x": {"g": 5, "h": 4, "a": {ZONE: ["old", 2], STATUS: ["old", 9], "k": ["v", 3]}}}
    )
    state = observer.states["x"]
    assert state.heartbeat == 10
    assert state.get(ZONE) == "new"
    assert state.get(STATUS) == "normal"  # an equal version is not newer
    assert state.get("k") == "v"  # but a key we never had is news
    assert changed == {"x"}
    assert observer.apply({"x": {"g": 5, "h": 10, "a": {}}}) == set()


def test_restarted_node_replaces_its_old_state_everywhere() -> None:
    nodes = [Gossiper(name, 100, {ZONE: name, STATUS: "normal", "old": True}) for name in NAMES]
    for _ in range(20):
        for g in nodes:
            g.beat()
    sim_rounds(nodes)
    assert all(snapshot(g.states["n2"]) == snapshot(nodes[2].local) for g in nodes)
    assert nodes[0].states["n2"].get("old") is True
    # n2 restarts: a higher generation, its version counter starts over, "old" is gone.
    nodes[2] = Gossiper("n2", 101, {ZONE: "n2", STATUS: "joining"})
    nodes[2].beat()
    assert nodes[2].local.max_version < nodes[0].states["n2"].max_version
    sim_rounds(nodes)
    for g in nodes:
        state = g.states["n2"]
        assert state.generation == 101
        assert state.get(STATUS) == "joining"
        assert state.get("old") is None
        assert snapshot(state) == snapshot(nodes[2].local)
    # And the restarted node relearned everyone else.
    assert set(nodes[2].states) == set(NAMES)


def sim_rounds(nodes: list[Gossiper], passes: int = 2) -> None:
    for _ in range(passes):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    deltas, requests = b.handle_syn(a.digests())
                    a.apply(deltas)
                    b.apply(a.deltas_for(requests))


def test_partial_delta_reaching_a_restarted_node() -> None:
    a = Gossiper("a", 1000, {ZONE: "za"})
    b = Gossiper("b", 1000, {ZONE: "zb"})
    sim_rounds([a, b])
    a.beat()
    deltas, requests = b.handle_syn(a.digests())  # ACK: b asks for a's news after version 1
    assert requests == {"a": (1000, 1)}
    b = Gossiper("b", 1001, {ZONE: "zb"})  # b restarts before the ACK2 arrives
    a.apply(deltas)
    b.apply(a.deltas_for(requests))  # {"a": {"g": 1000, "h": 2, "a": {}}}: no zone
    sim_rounds([a, b])
    assert snapshot(b.states["a"]) == snapshot(a.local)  # b never learns a's zone


def test_apply_ignores_news_about_itself() -> None:
    me = Gossiper("me", 5, {ZONE: "z1"})
    me.beat()
    before = snapshot(me.local)
    for delta in (
        {"g": 5, "h": 100, "a": {ZONE: ["forged", 100]}},
        {"g": 6, "h": 1, "a": {ZONE: ["impostor", 1]}},
        {"g": 4, "h": 1, "a": {}},
    ):
        assert me.apply({"me": delta}) == set()
        assert snapshot(me.local) == before
    # News about others in the same batch still applies.
    assert me.apply({"me": {"g": 9, "h": 9, "a": {}}, "x": {"g": 1, "h": 1, "a": {}}}) == {"x"}
    assert snapshot(me.local) == before


# --- what the exchange sends -----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(2, len(NAMES)), ops, st.data())
def test_deltas_only_contain_entries_newer_than_the_digest(
    size: int, operations: list[tuple[str, int, int, int]], data: st.DataObject
) -> None:
    sim = run(size, operations)
    receiver = sim.gossipers[data.draw(st.integers(0, size - 1))]
    known = sorted(receiver.states)
    # A digest that claims arbitrary knowledge about some of the nodes (and some unknown ones).
    digests: dict[str, Digest] = {}
    for node in data.draw(st.lists(st.sampled_from([*known, "zz"]), unique=True)):
        mine = receiver.states.get(node)
        generation = mine.generation if mine is not None else 1000
        generation += data.draw(st.sampled_from([0, 0, 0, -1, 1]))
        digests[node] = (generation, data.draw(st.integers(-1, 30)))
    deltas, requests = receiver.handle_syn(digests)
    for node, state in receiver.states.items():
        if node not in digests:
            assert deltas[node] == state.delta_since(-1)  # the sender has never heard of it
            assert node not in requests
            continue
        generation, version = digests[node]
        if generation < state.generation:
            assert deltas[node] == state.delta_since(-1)
        elif generation > state.generation:
            assert requests[node] == (-1, -1)
            assert node not in deltas
        elif version < state.max_version:
            assert deltas[node]["g"] == state.generation
            assert deltas[node]["h"] == state.heartbeat
            assert deltas[node]["a"] == {
                k: [v, ver] for k, (v, ver) in state.app.items() if ver > version
            }
            assert all(ver > version for _, ver in deltas[node]["a"].values())
        elif version > state.max_version:
            assert requests[node] == state.digest()
            assert node not in deltas
        else:
            assert node not in deltas
            assert node not in requests
    if "zz" in digests:
        assert requests["zz"] == (-1, -1)
    # ACK2: deltas_for answers requests the same way.
    answers = receiver.deltas_for(
        {**{n: (s.generation, v) for n, s in receiver.states.items() for v in [3]}, "zz": (1, 1)}
    )
    assert "zz" not in answers
    for delta in answers.values():
        assert all(ver > 3 for _, ver in delta["a"].values())
    stale = receiver.deltas_for({n: (s.generation - 1, 50) for n, s in receiver.states.items()})
    for node, delta in stale.items():
        assert delta == receiver.states[node].delta_since(-1)


def test_identical_views_exchange_nothing() -> None:
    a = Gossiper("a", 1, {ZONE: "za"})
    b = Gossiper("b", 1, {ZONE: "zb"})
    sim_rounds([a, b])
    deltas, requests = b.handle_syn(a.digests())
    assert deltas == {}
    assert requests == {}
    assert a.deltas_for({}) == {}


# --- endpoint state and local changes --------------------------------------------------------


def test_endpoint_state_basics() -> None:
    state = EndpointState(7)
    assert state.max_version == 0
    assert state.digest() == (7, 0)
    assert state.get(ZONE) is None
    assert state.get(ZONE, "dflt") == "dflt"
    state.app[ZONE] = ("z", 3)
    state.app[TOKENS] = ([1, 2], 5)
    state.heartbeat = 4
    assert state.max_version == 5
    assert state.digest() == (7, 5)
    full = {"g": 7, "f": -1, "h": 4, "a": {ZONE: ["z", 3], TOKENS: [[1, 2], 5]}}
    assert state.delta_since(-1) == full
    assert state.delta_since(3) == {"g": 7, "f": 3, "h": 4, "a": {TOKENS: [[1, 2], 5]}}
    assert state.delta_since(5) == {"g": 7, "f": 5, "h": 4, "a": {}}


def test_local_versions_come_from_one_counter() -> None:
    g = Gossiper("a", 1, {ZONE: "z", STATUS: "starting"})
    assert g.local.app == {ZONE: ("z", 1), STATUS: ("starting", 2)}
    g.beat()
    assert g.local.heartbeat == 3
    g.set_app(STATUS, "starting")  # unchanged value: no new version
    assert g.local.max_version == 3
    g.set_app(STATUS, "normal")
    assert g.local.app[STATUS] == ("normal", 4)
    g.beat()
    assert g.local.digest() == (1, 5)
    assert g.digests() == {"a": (1, 5)}


def test_remove() -> None:
    a = Gossiper("a", 1, {})
    a.apply({"b": {"g": 1, "h": 1, "a": {}}})
    a.remove("b")
    assert "b" not in a.states
    a.remove("a")  # never forgets itself
    assert "a" in a.states
    a.remove("nobody")


def test_member_states_are_declared_once_and_agree() -> None:
    """The status sets the node's membership and the operator's plan both use."""
    from ringkv.core import gossip as g

    assert set(g.MEMBER_STATES) == {"normal", "joining", "leaving", "left", "starting",
                                    "replacing"}  # fmt: skip
    assert g.READABLE_STATUSES == (g.NORMAL, g.LEAVING)
    for status in g.MEMBER_STATES:
        # a member holding tokens is in the ring the nodes build exactly when in_ring says so
        assert g.in_ring(status, True) == (status in g.CURRENT_STATUSES)
        assert not g.in_ring(status, False) or status in g.RING_STATUSES
        assert (status in g.CHANGE_STATUSES) <= (status in g.DATA_STATUSES)
    assert g.LEFT not in g.DATA_STATUSES and g.STARTING not in g.DATA_STATUSES


# -- the shards of one node follow one view ------------------------------------------------------

_FOLLOW_KEYS = (gossip.TOKENS, gossip.STATUS, gossip.CLEANUP, gossip.DOWN, gossip.SHARDS)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "set", "set", "join", "leave", "restart", "follow"]),
            st.integers(min_value=0, max_value=5),
            st.sampled_from(_FOLLOW_KEYS),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=40,
    )
)
def test_a_follower_polling_for_changes_holds_the_leaders_view(steps: list[Any]) -> None:
    """Whatever changes in between (app states, members arriving, leaving, restarting), a
    follower that asks only for what it lacks ends up holding exactly the leader's states,
    and is told to rebuild its rings whenever what places keys changed."""
    leader: dict[str, gossip.EndpointState] = {}
    follower: dict[str, gossip.EndpointState] = {}

    def placement(states: dict[str, gossip.EndpointState]) -> dict[str, Any]:
        return {
            node: (state.generation, {k: state.app.get(k) for k in gossip.PLACEMENT_STATES})
            for node, state in states.items()
        }

    def follow() -> None:
        before = placement(follower)
        known = {n: list(s.digest()) for n, s in follower.items()}
        deltas, gone = gossip.view_changes(leader, known)
        placed = gossip.follow_view(follower, deltas, gone)
        assert placed or placement(leader) == before

    for version, (action, member, key, value) in enumerate(steps, 1):
        node = f"n{member}"
        if action == "follow":
            follow()
        elif action == "join" and node not in leader:
            leader[node] = gossip.EndpointState(version, 0, {gossip.STATUS: ("normal", version)})
        elif action == "leave" and node in leader:
            del leader[node]
        elif action == "restart" and node in leader:
            leader[node] = gossip.EndpointState(leader[node].generation + 1, 0, {})
        elif action == "set" and node in leader:
            leader[node].app[key] = (value, version)
    follow()
    assert follower.keys() == leader.keys()
    for node, state in leader.items():
        assert follower[node].generation == state.generation
        assert follower[node].app == state.app
    # nothing changed since: the next poll carries nothing
    held = {n: list(s.digest()) for n, s in follower.items()}
    assert gossip.view_changes(leader, held) == ({}, [])


def test_only_changes_that_place_keys_ask_for_new_rings() -> None:
    state = gossip.EndpointState(7, 0, {gossip.STATUS: ("normal", 1), gossip.CLEANUP: ({}, 2)})
    state.app[gossip.CLEANUP] = ({"done": True}, 3)
    assert not gossip.places_keys({"n1": state.delta_since(2)}, ["n1"])
    state.app[gossip.TOKENS] = ([5, 9], 4)
    assert gossip.places_keys({"n1": state.delta_since(3)}, ["n1"])
    assert gossip.places_keys({"n1": state.delta_since(-1)}, ["n1"])  # new to us, or restarted
    assert gossip.places_keys({}, ["n1"])  # changed without a delta we can read: rebuild
    assert not gossip.places_keys({"n1": state.delta_since(4)}, [])
