"""Tests for ringkv.core.versions: clocks, dotted versions, siblings, tombstones, HLC, codecs.

The sibling-set properties run over *histories*: a small simulation of replicas (one per actor)
where coordinators write with contexts read from any earlier state, and replicas exchange either
whole records or single versions (``Coordinator.put`` replicates only the new version). The
simulation also tracks the true causal history of every version -- the dots its writer had
actually read -- so "obsoletes" can be checked against what really happened.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ringkv.core.versions import (
    CONFLICT_MODES,
    DEFAULT_MAX_CLOCK_ENTRIES,
    HLC_LOGICAL_BITS,
    MAX_CONTEXT_CHARS,
    ConflictMode,
    MalformedContext,
    MalformedRecord,
    VClock,
    Version,
    context_of,
    decode_context,
    decode_record,
    encode_context,
    encode_record,
    hlc_now,
    hlc_observe,
    hlc_wall_ms,
    live_values,
    make_actor,
    merge_siblings,
    new_version,
    version_from_wire,
    version_to_wire,
)

EMPTY = VClock.empty()
Dot = tuple[str, int]

# --- strategies ------------------------------------------------------------------------------

ACTOR_NAMES = ("a", "b", "c", "d", "e", "n1#1", "n1#2")
actors = st.sampled_from(ACTOR_NAMES)
counters = st.integers(min_value=1, max_value=6)
wall_stamps = st.integers(min_value=0, max_value=50)


@st.composite
def clocks(draw: st.DrawFn, max_size: int = 6) -> VClock:
    """Small clocks over few actors with small counters, so comparisons often go either way."""
    entries = draw(st.dictionaries(actors, st.tuples(counters, wall_stamps), max_size=max_size))
    return VClock(entries)


def counter_map(clock: VClock) -> dict[str, int]:
    return {actor: clock.get(actor) for actor in clock if clock.get(actor) > 0}


def dots(versions: Iterable[Version]) -> set[Dot]:
    return {v.dot for v in versions}


# --- history simulation ----------------------------------------------------------------------

SIM_ACTORS = ("n0#1", "n1#1", "n2#1")

# ("w", actor, read selector, kind, wall ms): write at replica ``actor``; kind 0 = value with the
# context of one earlier state, 1 = tombstone with it, 2 = blind value (empty context), 3 = value
# with the context of two earlier states merged (a quorum read).
# ("r", source, destination, version selector, unused): replicate from source to destination.
write_ops = st.tuples(
    st.just("w"),
    st.integers(0, len(SIM_ACTORS) - 1),
    st.integers(0, 10_000),
    st.integers(0, 3),
    st.integers(0, 40),
)
replicate_ops = st.tuples(
    st.just("r"),
    st.integers(0, len(SIM_ACTORS) - 1),
    st.integers(0, len(SIM_ACTORS) - 1),
    st.integers(0, 10_000),
    st.just(0),
)
Op = tuple[str, int, int, int, int]
histories = st.lists(st.one_of(write_ops, replicate_ops), min_size=1, max_size=24)


@dataclass
class History:
    """The outcome of simulating ``ops``: every state ever held, every version ever written."""

    mode: ConflictMode
    whole_records: bool
    causal_hlc: bool
    replicas: list[tuple[Version, ...]] = field(default_factory=list)
    snapshots: list[tuple[Version, ...]] = field(default_factory=list)
    created: list[Version] = field(default_factory=list)
    seen: dict[Dot, frozenset[Dot]] = field(default_factory=dict)
    hlc: list[int] = field(default_factory=list)
    counter: int = 0

    def read(self, selector: int, kind: int) -> tuple[Version, ...]:
        first = self.snapshots[selector % len(self.snapshots)]
        if kind != 3:
            return first
        second = self.snapshots[(selector // 7) % len(self.snapshots)]
        return merge_siblings(first, second, self.mode)

    def write(self, actor_index: int, selector: int, kind: int, wall: int) -> Version:
        actor = SIM_ACTORS[actor_index]
        blind = kind == 2
        read = () if blind else self.read(selector, kind)
        context = context_of(read)
        last = self.hlc[actor_index]
        if self.causal_hlc and read:
            timestamp = hlc_observe(last, max(v.timestamp for v in read), wall)
        else:
            timestamp = hlc_now(last, wall)  # what Coordinator._tick does: the wall clock only
        self.hlc[actor_index] = timestamp
        self.counter += 1
        value = None if kind == 1 else b"v%d" % self.counter
        current = self.replicas[actor_index]
        version = new_version(current, context, actor, value, timestamp)
        self.seen[version.dot] = frozenset(dot for v in read for dot in (v.dot, *self.seen[v.dot]))
        self.created.append(version)
        self.replicas[actor_index] = merge_siblings(current, [version], self.mode)
        self.snapshots.append(self.replicas[actor_index])
        return version

    def replicate(self, source: int, destination: int, selector: int) -> None:
        state = self.replicas[source]
        if not state or source == destination:
            return
        incoming = state if self.whole_records else (state[selector % len(state)],)
        self.replicas[destination] = merge_siblings(self.replicas[destination], incoming, self.mode)
        self.snapshots.append(self.replicas[destination])

    def pick(self, selector: int) -> tuple[Version, ...]:
        return self.snapshots[selector % len(self.snapshots)]

    def truly_obsolete(self, versions: Sequence[Version]) -> set[Dot]:
        """Dots some other version's writer had actually read (directly or transitively)."""
        return {v.dot for v in versions if any(v.dot in self.seen[o.dot] for o in versions)}


def simulate(
    ops: Sequence[Op],
    mode: ConflictMode = "siblings",
    whole_records: bool = True,
    causal_hlc: bool = False,
) -> History:
    history = History(mode, whole_records, causal_hlc)
    history.replicas = [() for _ in SIM_ACTORS]
    history.snapshots = [()]
    history.hlc = [0 for _ in SIM_ACTORS]
    for op, x, y, z, wall in ops:
        if op == "w":
            history.write(x, y, z, wall)
        else:
            history.replicate(x, y, z)
    return history


def assert_merge_algebra(history: History, i: int, j: int, k: int) -> None:
    mode = history.mode
    a, b, c = history.pick(i), history.pick(j), history.pick(k)
    assert dots(merge_siblings(a, b, mode)) == dots(merge_siblings(b, a, mode))
    assert dots(merge_siblings(a, a, mode)) == dots(merge_siblings((), a, mode))
    ab = merge_siblings(a, b, mode)
    assert dots(merge_siblings(ab, b, mode)) == dots(ab)  # absorbing what is already merged
    left = merge_siblings(merge_siblings(a, b, mode), c, mode)
    right = merge_siblings(a, merge_siblings(b, c, mode), mode)
    assert dots(left) == dots(right)
    # And both equal the one-shot merge of everything.
    assert dots(left) == dots(merge_siblings((), (*a, *b, *c), mode))


selectors = st.integers(0, 10_000)


# --- VClock ----------------------------------------------------------------------------------


def test_vclock_basics() -> None:
    clock = EMPTY.increment("a", 10).increment("a", 20).increment("b", 30)
    assert clock.get("a") == 2
    assert clock.get("b") == 1
    assert clock.get("zz") == 0
    assert len(clock) == 2
    assert set(clock) == {"a", "b"}
    assert clock.entries["a"] == (2, 20)
    assert clock.with_entry("c", 7, 1).get("c") == 7
    assert len(EMPTY) == 0
    assert VClock.empty() is EMPTY
    assert make_actor("n1", 3) == "n1#3"


def test_vclock_merge_keeps_later_timestamp_for_equal_counters() -> None:
    older = VClock({"a": (3, 100)})
    newer = VClock({"a": (3, 200)})
    assert older.merge(newer).entries["a"] == (3, 200)
    assert newer.merge(older).entries["a"] == (3, 200)
    # A higher counter wins regardless of timestamps.
    assert VClock({"a": (5, 1)}).merge(VClock({"a": (4, 999)})).entries["a"] == (5, 1)


@settings(max_examples=100, deadline=None)
@given(clocks(), clocks(), clocks())
def test_vclock_merge_is_commutative_associative_idempotent(
    a: VClock, b: VClock, c: VClock
) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(EMPTY) == a
    assert EMPTY.merge(a) == a


@settings(max_examples=100, deadline=None)
@given(clocks(), clocks())
def test_vclock_merge_is_the_least_upper_bound(a: VClock, b: VClock) -> None:
    merged = a.merge(b)
    assert merged.descends(a)
    assert merged.descends(b)
    assert set(merged) == set(a) | set(b)
    for actor in merged:
        assert merged.get(actor) == max(a.get(actor), b.get(actor))


@settings(max_examples=100, deadline=None)
@given(clocks(), clocks(), clocks())
def test_vclock_descends_is_a_partial_order(a: VClock, b: VClock, c: VClock) -> None:
    assert a.descends(a)
    assert a.descends(EMPTY)
    if a.descends(b) and b.descends(a):
        assert counter_map(a) == counter_map(b)  # antisymmetric (timestamps play no part)
    if a.descends(b) and b.descends(c):
        assert a.descends(c)
    # Anything that descends both a and b descends their merge.
    if c.descends(a) and c.descends(b):
        assert c.descends(a.merge(b))


@settings(max_examples=150, deadline=None)
@given(clocks(), clocks())
def test_vclock_concurrent_iff_neither_descends(a: VClock, b: VClock) -> None:
    assert a.concurrent(b) == (not a.descends(b) and not b.descends(a))
    assert a.concurrent(b) == b.concurrent(a)
    assert a.dominates(b) == (a.descends(b) and counter_map(a) != counter_map(b))
    assert not (a.dominates(b) and b.dominates(a))
    assert not a.concurrent(a)
    assert not a.dominates(a)
    # Exactly one of: equal counters, a > b, b > a, concurrent.
    outcomes = [
        counter_map(a) == counter_map(b),
        a.dominates(b),
        b.dominates(a),
        a.concurrent(b),
    ]
    assert sum(outcomes) == 1


def test_vclock_concurrent_example() -> None:
    a = EMPTY.increment("a", 1)
    b = EMPTY.increment("b", 1)
    assert a.concurrent(b)
    assert a.merge(b).dominates(a)
    assert a.merge(b).dominates(b)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=3), st.tuples(counters, st.integers(0, 1000)), max_size=30
    ),
    st.integers(min_value=1, max_value=12),
    st.data(),
)
def test_vclock_prune(
    entries: dict[str, tuple[int, int]], max_entries: int, data: st.DataObject
) -> None:
    clock = VClock(entries)
    keep = data.draw(st.sampled_from([None, *entries]) if entries else st.none())
    pruned = clock.prune(max_entries, keep=keep)
    assert len(pruned) <= max_entries
    assert len(pruned) == min(len(clock), max_entries)
    if keep is not None:
        assert keep in pruned.entries
    assert clock.descends(pruned)  # pruning only forgets
    assert all(pruned.entries[actor] == clock.entries[actor] for actor in pruned)
    if len(clock) <= max_entries:
        assert pruned == clock
    else:
        # The survivors (apart from ``keep``) are the most recently incremented entries.
        dropped = set(clock) - set(pruned)
        kept_others = [actor for actor in pruned if actor != keep]
        for gone in dropped:
            for stayed in kept_others:
                assert clock.entries[gone][1] <= clock.entries[stayed][1]


def test_vclock_prune_drops_oldest_first() -> None:
    clock = VClock({"old": (9, 1), "mid": (1, 5), "new": (1, 9)})
    assert set(clock.prune(2)) == {"mid", "new"}
    assert set(clock.prune(2, keep="old")) == {"old", "new"}
    assert set(clock.prune(1, keep="old")) == {"old"}
    assert clock.prune(3) is clock


def test_vclock_wire_round_trip_and_validation() -> None:
    clock = VClock({"a": (1, 2), "b": (3, 4)})
    assert VClock.from_wire(clock.to_wire()) == clock
    assert VClock.from_wire({}) == EMPTY
    bad: list[object] = [
        [],
        None,
        {"": [1, 2]},
        {1: [1, 2]},
        {"x" * 513: [1, 2]},
        {"a": [1]},
        {"a": [1, 2, 3]},
        {"a": "12"},
        {"a": [-1, 2]},
        {"a": [1, -2]},
        {"a": [True, 2]},
        {"a": [1.0, 2]},
        {"a": [1 << 63, 0]},
    ]
    for raw in bad:
        with pytest.raises(ValueError):
            VClock.from_wire(raw)


# --- dotted versions -------------------------------------------------------------------------


def test_version_dot_clock_obsoletes_and_size() -> None:
    v = Version("a", 2, VClock({"b": (1, 5)}), b"xyz", (7 << HLC_LOGICAL_BITS) + 3)
    assert v.dot == ("a", 2)
    assert not v.is_tombstone
    assert v.clock() == VClock({"b": (1, 5), "a": (2, 7)})
    w = Version("c", 1, v.clock(), None, 1)
    assert w.is_tombstone
    assert w.obsoletes(v)
    assert not v.obsoletes(w)
    assert not v.obsoletes(v)  # a version's context never covers its own dot
    assert w.clock().get("c") == 1
    assert v.size() == 3 + 32 * 2
    assert w.size() == 32 * 3
    # A context that already covers the dot is the clock.
    covered = Version("a", 1, VClock({"a": (4, 0)}), b"", 0)
    assert covered.clock() is covered.context


@given(clocks(), actors, counters, actors)
def test_version_seen_is_the_clocks_counter(
    context: VClock, actor: str, counter: int, other: str
) -> None:
    v = Version(actor, counter, context, b"", 0)
    assert v.seen(other) == v.clock().get(other)
    assert v.seen(actor) == v.clock().get(actor)


def test_two_blind_writes_through_the_same_actor_are_siblings() -> None:
    first = new_version((), EMPTY, "n1#1", b"one", 1)
    record = merge_siblings((), [first])
    second = new_version(record, EMPTY, "n1#1", b"two", 2)
    assert second.dot != first.dot
    record = merge_siblings(record, [second])
    assert dots(record) == {first.dot, second.dot}
    assert sorted(live_values(record)) == [b"one", b"two"]
    # Reading both and writing over them resolves the conflict.
    third = new_version(record, context_of(record), "n2#1", b"three", 3)
    assert merge_siblings(record, [third]) == (third,)


def test_concurrent_writes_through_different_actors_are_siblings() -> None:
    base = new_version((), EMPTY, "a", b"base", 1)
    ctx = context_of([base])
    left = new_version([base], ctx, "a", b"left", 2)
    right = new_version([base], ctx, "b", b"right", 3)
    merged = merge_siblings([base, left], [base, right])
    assert merged == tuple(sorted((left, right), key=lambda v: v.dot))
    assert merge_siblings(merged, [base]) == merged  # an old version never comes back


def test_merge_result_is_sorted_and_deduplicated() -> None:
    a = Version("b", 1, EMPTY, b"1", 1)
    b = Version("a", 1, EMPTY, b"2", 2)
    merged = merge_siblings([a, b, a], [b])
    assert [v.dot for v in merged] == [("a", 1), ("b", 1)]
    assert merge_siblings((), ()) == ()


# A history that loses an update if coordinators replicate only the new version (as
# Coordinator.put once did): n0 holds x (which read y) and x2 (a blind write through n0); n2
# receives x2 and a client reading n2 writes z. Had n2 received x2 alone, z's context (one entry
# per actor: x2's counter) would cover x although z's writer never saw it, and merge order would
# decide whether y survives. With whole-record replication (new_version's documented contract)
# n2 receives x as well, so z's writer really has seen x.
LOST_UPDATE_OPS: list[Op] = [
    ("w", 1, 0, 0, 0),  # y through n1 (context of the empty initial state)
    ("r", 1, 0, 0, 0),  # n0 <- n1
    ("w", 0, 2, 0, 1),  # x through n0, context read from n0 = {y}
    ("w", 0, 0, 2, 2),  # x2 through n0, blind
    ("r", 0, 2, 1, 0),  # n2 <- n0
    ("w", 2, 5, 0, 3),  # z through n2, context read from n2
]


@settings(max_examples=80, deadline=None)
@example(ops=LOST_UPDATE_OPS, i=6, j=3, k=1)
@given(histories, selectors, selectors, selectors)
def test_merge_siblings_algebra_with_whole_record_replication(
    ops: list[Op], i: int, j: int, k: int
) -> None:
    history = simulate(ops, whole_records=True)
    assert_merge_algebra(history, i, j, k)


@settings(max_examples=100, deadline=None)
@example(ops=LOST_UPDATE_OPS)
@given(histories)
def test_obsoletes_matches_true_causality_with_whole_record_replication(ops: list[Op]) -> None:
    """A version is dropped exactly when some writer had really read it: no lost updates."""
    history = simulate(ops, whole_records=True)
    survivors = merge_siblings((), history.created)
    expected = {v.dot for v in history.created} - history.truly_obsolete(history.created)
    assert dots(survivors) == expected
    for state in history.snapshots:
        assert dots(state) == {v.dot for v in state} - history.truly_obsolete(state)


def test_blind_write_sibling_survives_with_whole_record_replication() -> None:
    """The LOST_UPDATE_OPS scenario step by step."""
    y = new_version((), EMPTY, "n1#1", b"y", 1)
    replica0 = merge_siblings((), [y])
    x = new_version(replica0, context_of(replica0), "n0#1", b"x", 2)  # x saw y
    replica0 = merge_siblings(replica0, [x])
    x2 = new_version(replica0, EMPTY, "n0#1", b"x2", 3)  # blind: a sibling of x
    replica0 = merge_siblings(replica0, [x2])
    assert dots(replica0) == {x.dot, x2.dot}
    # Why the whole record must travel: a context read from x2 alone would cover x too.
    assert context_of([x2]).get("n0#1") >= x.counter
    replica2 = merge_siblings((), replica0)  # the whole record is replicated
    z = new_version(replica2, context_of(replica2), "n2#1", b"z", 4)  # z saw x and x2 (and y)
    assert merge_siblings(replica0, [z]) == (z,)
    # A concurrent blind write through n2 keeps everything.
    w = new_version(replica2, EMPTY, "n2#1", b"w", 5)
    assert dots(merge_siblings(replica0, [w])) == {x.dot, x2.dot, w.dot}


@settings(max_examples=150, deadline=None)
@given(histories, selectors)
def test_write_with_context_of_all_siblings_replaces_them_all(ops: list[Op], i: int) -> None:
    history = simulate(ops, whole_records=False)
    state = history.pick(i)
    for index, actor in enumerate(SIM_ACTORS):
        current = history.replicas[index]
        for value in (b"new", None):
            version = new_version(current, context_of(state), actor, value, 1 << 40)
            assert merge_siblings(state, [version]) == (version,)
            assert merge_siblings([version], state) == (version,)


@settings(max_examples=150, deadline=None)
@given(histories, selectors)
def test_new_version_dot_is_fresh(ops: list[Op], i: int) -> None:
    history = simulate(ops, whole_records=False)
    for index, actor in enumerate(SIM_ACTORS):
        current = history.replicas[index]
        for context in (EMPTY, context_of(history.pick(i)), context_of(current)):
            version = new_version(current, context, actor, b"v", 1)
            assert version.dot not in dots(current)
            assert version.dot not in {v.dot for v in history.created}
            assert not context_of(current).get(actor) >= version.counter
            assert version.context == context  # small contexts are not pruned
            # A blind write never obsoletes anything: it only adds a sibling.
            if context == EMPTY:
                assert dots(merge_siblings(current, [version])) == dots(current) | {version.dot}


def test_new_version_prunes_big_contexts() -> None:
    big = VClock({f"x{i}": (1, i) for i in range(DEFAULT_MAX_CLOCK_ENTRIES + 10)})
    version = new_version((), big, "me", b"v", 1)
    assert len(version.context) == DEFAULT_MAX_CLOCK_ENTRIES
    assert big.descends(version.context)
    small = new_version((), big, "me", b"v", 1, max_clock_entries=5)
    assert len(small.context) == 5
    assert set(small.context) == {f"x{i}" for i in range(55, 60)}  # the most recent
    # The counter accounts for the actor's own entry even when pruning drops it.
    own = VClock({"me": (7, 0), **{f"x{i}": (1, 100 + i) for i in range(10)}})
    assert new_version((), own, "me", b"v", 1, max_clock_entries=3).counter == 8


@settings(max_examples=150, deadline=None)
@given(histories)
def test_context_of_covers_every_version(ops: list[Op]) -> None:
    history = simulate(ops, whole_records=False)
    for state in history.snapshots:
        context = context_of(state)
        for version in state:
            assert context.descends(version.clock())
            assert context.get(version.actor) >= version.counter
        assert context == context_of(reversed(state))
    assert context_of(()) == EMPTY


def test_tombstone_obsoletes_what_its_context_covers() -> None:
    a = new_version((), EMPTY, "a", b"one", 1)
    b = new_version([a], EMPTY, "b", b"two", 2)
    record = merge_siblings([a], [b])
    assert sorted(live_values(record)) == [b"one", b"two"]
    # A delete that saw only a: a goes, b stays.
    tomb = new_version(record, context_of([a]), "a", None, 3)
    after = merge_siblings(record, [tomb])
    assert dots(after) == {b.dot, tomb.dot}
    assert live_values(after) == [b"two"]
    # A delete that saw everything leaves only the tombstone, which hides nothing live.
    tomb2 = new_version(after, context_of(after), "b", None, 4)
    final = merge_siblings(after, [tomb2])
    assert final == (tomb2,)
    assert live_values(final) == []
    # A write over the tombstone brings the key back.
    again = new_version(final, context_of(final), "c", b"back", 5)
    assert merge_siblings(final, [again]) == (again,)
    assert live_values(merge_siblings(final, [again])) == [b"back"]


@settings(max_examples=60, deadline=None)
@given(histories)
def test_live_values_hides_tombstones(ops: list[Op]) -> None:
    history = simulate(ops, whole_records=True)
    for state in history.snapshots:
        values = live_values(state)
        assert values == [v.value for v in state if not v.is_tombstone]
        assert None not in values
        assert len(values) == sum(1 for v in state if v.value is not None)


def test_lww_keeps_the_highest_timestamp() -> None:
    a = Version("a", 1, EMPTY, b"a", 30)
    b = Version("b", 1, EMPTY, b"b", 50)
    c = Version("c", 1, EMPTY, b"c", 40)
    assert merge_siblings([a, b], [c], "lww") == (b,)
    assert merge_siblings([c], [a], "lww") == (c,)
    # Equal timestamps: the dot breaks the tie, the same way on every replica.
    d = Version("d", 1, EMPTY, b"d", 50)
    assert merge_siblings([b], [d], "lww") == (d,)
    assert merge_siblings([d], [b], "lww") == (d,)
    # A tombstone with the highest timestamp wins too.
    t = Version("e", 1, EMPTY, None, 99)
    assert merge_siblings([a, b, c], [t], "lww") == (t,)
    assert live_values(merge_siblings([a, b, c], [t], "lww")) == []


@st.composite
def causal_version_sets(draw: st.DrawFn) -> list[Version]:
    """Versions with unique dots whose timestamps respect causality, as an HLC that observes
    what the writer read guarantees: a version's context covers only older versions."""
    count = draw(st.integers(min_value=1, max_value=8))
    stamps = draw(st.lists(st.integers(0, 10_000), min_size=count, max_size=count, unique=True))
    made: list[Version] = []
    for timestamp in sorted(stamps):
        actor = draw(st.sampled_from(("a", "b", "c")))
        read = draw(st.lists(st.sampled_from(made), unique_by=lambda v: v.dot)) if made else []
        previous = max((v.counter for v in made if v.actor == actor), default=0)
        value = draw(st.none() | st.just(b"v%d" % timestamp))
        made.append(Version(actor, previous + 1, context_of(read), value, timestamp))
    return draw(st.permutations(made))


@settings(max_examples=80, deadline=None)
@given(causal_version_sets(), st.data())
def test_lww_keeps_exactly_one_version_the_highest_timestamp(
    versions: list[Version], data: st.DataObject
) -> None:
    newest = max(versions, key=lambda v: v.timestamp)
    assert merge_siblings((), versions, "lww") == (newest,)
    assert merge_siblings(versions[::-1], (), "lww") == (newest,)
    # Any way of splitting the versions over three replicas, merged in any order.
    owner = data.draw(st.lists(st.integers(0, 2), min_size=len(versions), max_size=len(versions)))
    a, b, c = ([v for v, o in zip(versions, owner, strict=True) if o == n] for n in range(3))

    def lww(x: Sequence[Version], y: Sequence[Version]) -> tuple[Version, ...]:
        return merge_siblings(x, y, "lww")

    ra, rb, rc = lww((), a), lww((), b), lww((), c)
    for state in (ra, rb, rc):
        assert len(state) <= 1
    assert lww(lww(ra, rb), rc) == lww(ra, lww(rb, rc)) == lww(lww(rc, ra), rb) == (newest,)


@settings(max_examples=60, deadline=None)
@given(histories)
def test_lww_replicas_hold_at_most_one_version(ops: list[Op]) -> None:
    history = simulate(ops, mode="lww", whole_records=False)
    for state in history.snapshots:
        assert len(state) <= 1


# n0 writes; n1 writes with a later timestamp; n0 receives it and, in lww mode, keeps only n1's
# version -- whose clock does not cover n0's dot. A counter derived from the record alone would
# make n0's next blind write reuse its first dot; new_version's counter is at least the
# (per-actor strictly increasing) HLC timestamp, so it cannot.
DOT_REUSE_OPS: list[Op] = [
    ("w", 0, 0, 2, 10),
    ("w", 1, 0, 2, 20),
    ("r", 1, 0, 0, 0),
    ("w", 0, 0, 2, 30),
]


@settings(max_examples=60, deadline=None)
@example(ops=DOT_REUSE_OPS)
@given(histories)
def test_lww_dots_are_never_reused(ops: list[Op]) -> None:
    history = simulate(ops, mode="lww", whole_records=False)
    created = [v.dot for v in history.created]
    assert len(created) == len(set(created))


def test_lww_newer_write_reaches_every_replica() -> None:
    old = new_version((), EMPTY, "a", b"old", 100)
    replica_a = merge_siblings((), [old], "lww")
    replica_r = merge_siblings((), [old], "lww")
    other = new_version((), EMPTY, "b", b"other", 200)
    replica_a = merge_siblings(replica_a, [other], "lww")  # the replica R missed this write
    assert replica_a == (other,)
    new = new_version(replica_a, EMPTY, "a", b"new", 300)  # a blind write through a again
    assert not replica_a[0].clock().get("a")  # the record no longer knows a's first dot
    replica_a = merge_siblings(replica_a, [new], "lww")
    replica_r = merge_siblings(replica_r, [new], "lww")  # replicated to R
    assert new.dot != old.dot
    assert live_values(replica_a) == live_values(replica_r) == [b"new"]


def test_lww_merge_is_associative_under_clock_skew() -> None:
    p = Version("a", 1, EMPTY, b"p", 300)
    q = Version("b", 1, VClock({"a": (1, 0)}), b"q", 100)  # saw p, but its clock was behind
    r = Version("c", 1, EMPTY, b"r", 200)  # concurrent with both
    left = merge_siblings(merge_siblings([p], [q], "lww"), [r], "lww")
    right = merge_siblings([p], merge_siblings([q], [r], "lww"), "lww")
    assert left == right
    assert merge_siblings((), [p, q, r], "lww") == (p,)  # the highest timestamp, as documented


@settings(max_examples=100, deadline=None)
@given(histories, selectors, selectors, selectors)
def test_merge_siblings_is_commutative_and_idempotent_in_every_history(
    ops: list[Op], i: int, j: int, k: int
) -> None:
    for mode in CONFLICT_MODES:
        history = simulate(ops, mode=mode, whole_records=False)
        a, b = history.pick(i), history.pick(j)
        assert dots(merge_siblings(a, b, mode)) == dots(merge_siblings(b, a, mode))
        assert merge_siblings(a, a, mode) == merge_siblings((), a, mode)
        once = merge_siblings(a, history.pick(k), mode)
        assert merge_siblings(once, once, mode) == once


# --- encodings -------------------------------------------------------------------------------

wire_actors = st.text(min_size=1, max_size=20)
wire_ints = st.integers(min_value=0, max_value=(1 << 63) - 1)


@st.composite
def wire_clocks(draw: st.DrawFn) -> VClock:
    entries = draw(
        st.dictionaries(
            st.text(min_size=1, max_size=30), st.tuples(wire_ints, wire_ints), max_size=8
        )
    )
    return VClock(entries)


@st.composite
def versions_(draw: st.DrawFn) -> Version:
    return Version(
        draw(wire_actors),
        draw(st.integers(min_value=1, max_value=(1 << 64) - 1)),
        draw(wire_clocks()),
        draw(st.none() | st.binary(max_size=40)),
        draw(st.integers(min_value=0, max_value=(1 << 64) - 1)),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(versions_(), max_size=5))
def test_record_round_trip(record: list[Version]) -> None:
    data = encode_record(record)
    assert isinstance(data, bytes)
    assert decode_record(data) == tuple(record)
    for version in record:
        assert version_from_wire(version_to_wire(version)) == version


@settings(max_examples=60, deadline=None)
@given(histories)
def test_record_round_trip_of_simulated_histories(ops: list[Op]) -> None:
    history = simulate(ops, whole_records=False)
    for state in history.snapshots:
        assert decode_record(encode_record(state)) == state
        context = context_of(state)
        assert decode_context(encode_context(context)) == context


@settings(max_examples=100, deadline=None)
@given(wire_clocks())
def test_context_round_trip(clock: VClock) -> None:
    token = encode_context(clock)
    assert token.isascii()
    assert "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_context(token) == clock
    assert decode_context(f"  {token}\n") == clock


def test_decode_context_edge_cases() -> None:
    assert decode_context("") == EMPTY
    assert decode_context("   ") == EMPTY
    assert decode_context(encode_context(EMPTY)) == EMPTY
    with pytest.raises(MalformedContext, match="too long"):
        decode_context("A" * (MAX_CONTEXT_CHARS + 1))
    many = VClock({f"a{i}": (1, 1) for i in range(5)})
    assert decode_context(encode_context(many), max_entries=5) == many
    with pytest.raises(MalformedContext, match="more than 4"):
        decode_context(encode_context(many), max_entries=4)
    assert decode_context("gA") == EMPTY  # 0x80: an empty msgpack map
    for token in ("!!!", "A", "é", "\x00", "kA", "kQ", "kaFh"):  # bad base64 or not a clock
        with pytest.raises(MalformedContext):
            decode_context(token)


def token_of(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def assert_malformed_context(token: str) -> None:
    try:
        clock = decode_context(token)
    except MalformedContext:
        return
    assert isinstance(clock, VClock)


def assert_malformed_record(data: bytes) -> None:
    try:
        record = decode_record(data)
    except MalformedRecord:
        return
    assert isinstance(record, tuple)
    assert all(isinstance(v, Version) for v in record)


@settings(max_examples=250, deadline=None)
@given(st.binary(max_size=200))
def test_decode_record_of_arbitrary_bytes_raises_only_malformed_record(data: bytes) -> None:
    assert_malformed_record(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_decode_context_of_arbitrary_bytes_raises_only_malformed_context(data: bytes) -> None:
    assert_malformed_context(token_of(data))
    assert_malformed_context(data.decode("latin-1"))


@settings(max_examples=250, deadline=None)
@given(st.text(max_size=200))
def test_decode_context_of_arbitrary_text_raises_only_malformed_context(token: str) -> None:
    assert_malformed_context(token)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/"))
def test_decode_context_of_base64ish_text_raises_only_malformed_context(token: str) -> None:
    assert_malformed_context(token)


msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
msgpack_keys = st.text(max_size=4) | st.binary(max_size=4) | st.integers(-5, 5) | st.none()
msgpack_data = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(msgpack_keys, children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def near_valid_records(draw: st.DrawFn) -> Any:
    """A well-formed record wire with one field replaced by random data."""
    version = version_to_wire(draw(versions_()))
    position = draw(st.integers(0, 4))
    version[position] = draw(msgpack_data)
    if draw(st.booleans()):
        clock = draw(st.dictionaries(st.text(max_size=3) | st.integers(0, 3), msgpack_data))
        version[2] = clock
    return [version] if draw(st.booleans()) else version


@settings(max_examples=150, deadline=None)
@given(msgpack_data)
def test_decoders_reject_structurally_wrong_msgpack(raw: Any) -> None:
    packed = msgpack.packb(raw, use_bin_type=True)
    assert_malformed_record(packed)
    assert_malformed_context(token_of(packed))
    assert_malformed_record(msgpack.packb([raw], use_bin_type=True))
    assert_malformed_context(token_of(msgpack.packb({"a": raw}, use_bin_type=True)))


@settings(max_examples=80, deadline=None)
@given(near_valid_records())
def test_decode_record_rejects_near_valid_records(raw: Any) -> None:
    assert_malformed_record(msgpack.packb(raw, use_bin_type=True))


@settings(max_examples=60, deadline=None)
@given(st.lists(versions_(), min_size=1, max_size=3), st.data())
def test_decode_record_of_truncated_or_corrupted_bytes(
    record: list[Version], data: st.DataObject
) -> None:
    encoded = encode_record(record)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    assert_malformed_record(encoded[:cut])
    position = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[position] ^= data.draw(st.integers(1, 255))
    assert_malformed_record(bytes(flipped))
    assert_malformed_record(encoded + b"\x00")
    assert_malformed_context(token_of(bytes(flipped)))


def test_decode_record_rejects_known_bad_inputs() -> None:
    bad = [
        b"",
        b"\xc1",  # never-used msgpack byte
        msgpack.packb({"a": 1}),
        msgpack.packb([["a", 1, {}, 0]]),  # 4 elements
        msgpack.packb([["", 1, {}, 0, b"v"]]),  # empty actor
        msgpack.packb([["a", 0, {}, 0, b"v"]]),  # counter 0
        msgpack.packb([["a", True, {}, 0, b"v"]]),  # bool counter
        msgpack.packb([["a", 1, {}, -1, b"v"]]),  # negative timestamp
        msgpack.packb([["a", 1, {}, 0, "text"]]),  # str value
        msgpack.packb([["a", 1, {"b": [1]}, 0, b"v"]]),  # bad clock entry
        msgpack.packb([["a", 1, [], 0, b"v"]]),  # clock not a map
        msgpack.packb([["a", 1, {1: [1, 1]}, 0, b"v"]]),  # non-str map key
        msgpack.packb([]) + b"\x90",  # extra data
        b"\x91" * 10_000 + b"\x90",  # deeply nested
    ]
    for data in bad:
        with pytest.raises(MalformedRecord):
            decode_record(data)
    assert decode_record(msgpack.packb([])) == ()


# --- hybrid logical clock --------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1 << 45), min_size=1, max_size=50))
def test_hlc_now_strictly_increases_even_when_the_wall_clock_goes_back(walls: list[int]) -> None:
    last = 0
    for wall in walls:
        now = hlc_now(last, wall)
        assert now > last
        assert hlc_wall_ms(now) >= wall  # never behind the wall clock
        assert hlc_wall_ms(now) >= hlc_wall_ms(last)
        last = now


def test_hlc_now_examples() -> None:
    first = hlc_now(0, 1000)
    assert first == 1000 << HLC_LOGICAL_BITS
    assert hlc_wall_ms(first) == 1000
    # The wall clock goes back: the logical part ticks instead.
    assert hlc_now(first, 900) == first + 1
    assert hlc_now(first + 1, 1000) == first + 2
    # The wall clock moves on: the logical part resets.
    assert hlc_now(first + 2, 1001) == 1001 << HLC_LOGICAL_BITS


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=0, max_value=1 << 60),
    st.integers(min_value=0, max_value=1 << 60),
    st.integers(min_value=0, max_value=1 << 40),
)
def test_hlc_observe_exceeds_the_received_timestamp(last: int, received: int, wall: int) -> None:
    observed = hlc_observe(last, received, wall)
    assert observed > received
    assert observed > last
    assert hlc_wall_ms(observed) >= wall
    assert observed == hlc_now(max(last, received), wall)


def test_hlc_observe_example() -> None:
    local = hlc_now(0, 100)
    remote = (500 << HLC_LOGICAL_BITS) + 7  # a peer whose clock is ahead
    observed = hlc_observe(local, remote, 100)
    assert observed == remote + 1
    assert hlc_now(observed, 100) > observed
