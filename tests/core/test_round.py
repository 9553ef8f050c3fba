"""ringkv.core.round: the quorum round of one request, fed events and time, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.errors import QuorumTimeout, Unavailable
from ringkv.core.placement import Replica, preference_list
from ringkv.core.quorum import Quorum
from ringkv.core.ring import Ring, initial_tokens, key_hash
from ringkv.core.round import (
    ReadRound,
    Targets,
    WriteRound,
    agreed_digest,
    differs,
    forward_target,
    reconcile,
    stale_replicas,
    targets,
)
from ringkv.core.versions import VClock, new_version

ZONES = {"n1": "z1", "n2": "z2", "n3": "z3", "n4": "z1", "n5": "z2"}
RING = Ring({n: initial_tokens(n, 16) for n in ZONES}, ZONES)
H = key_hash(b"k")


def _r(node: str, primary: bool = True, hint_for: str | None = None) -> Replica:
    return Replica(node, primary, hint_for)


def _always(node: str) -> bool:
    return True


# -- targets -----------------------------------------------------------------------------------


def test_targets_strict_uses_live_primaries_only() -> None:
    primaries = preference_list(RING, H, 3)
    down = primaries[1].node
    up = set(ZONES) - {down}
    t = targets(RING, RING, H, 3, up, strict=True, reading=False)
    assert t.primaries == primaries
    assert [r.node for r in t.live] == [r.node for r in primaries if r.node != down]
    assert t.pending == []


def test_targets_sloppy_gets_a_fallback_for_a_down_primary() -> None:
    primaries = preference_list(RING, H, 3)
    down = primaries[0].node
    t = targets(RING, RING, H, 3, set(ZONES) - {down}, strict=False, reading=False)
    assert len(t.live) == 3
    (fallback,) = [r for r in t.live if not r.primary]
    assert fallback.hint_for == down


def test_pending_replicas_only_for_writes_during_a_ring_change() -> None:
    future = RING.with_node("n6", "z3", initial_tokens("n6", 64))
    h = next(
        key_hash(k)
        for k in (b"k%d" % i for i in range(10_000))
        if "n6" in {r.node for r in preference_list(future, key_hash(k), 3)}
    )
    up = set(ZONES) | {"n6"}
    write = targets(RING, future, h, 3, up, strict=False, reading=False)
    assert [r.node for r in write.pending] == ["n6"]
    read = targets(RING, future, h, 3, up, strict=False, reading=True)
    assert read.pending == []
    assert targets(RING, RING, h, 3, up, False, False).pending == []


def test_an_empty_ring_has_no_targets() -> None:
    empty = Ring({}, {})
    assert targets(empty, empty, H, 3, set(), False, False) == Targets((), [], [])


def test_forward_goes_to_a_live_primary_chosen_by_the_hash() -> None:
    live = [_r("n1"), _r("n2"), _r("n4", False, "n3")]
    assert forward_target(Quorum(3, 2), live, 4) == "n1"
    assert forward_target(Quorum(3, 2), live, 5) == "n2"
    with pytest.raises(Unavailable) as err:
        forward_target(Quorum(3, 3), live[:2], 0)
    assert (err.value.required, err.value.alive) == (3, 2)


# -- writes ------------------------------------------------------------------------------------


def _write(required: int, live: list[Replica], pending: list[Replica] = (),  # type: ignore[assignment]
           primaries: tuple[Replica, ...] | None = None,
           alive: set[str] | None = None) -> WriteRound:  # fmt: skip
    prim = primaries if primaries is not None else tuple(r for r in live if r.primary)
    is_alive = _always if alive is None else alive.__contains__
    return WriteRound(Quorum(3, required), live[0], Targets(prim, live, list(pending)), is_alive)


def test_write_needs_w_acks_including_its_own() -> None:
    w = _write(2, [_r("n1"), _r("n2"), _r("n3")])
    assert [r.node for r in w.start(0.0, 1.0)] == ["n2", "n3"]
    assert not w.done
    assert w.ack()
    w.outcome()  # no error
    assert w.acks == 2


def test_write_with_w_one_is_done_at_once() -> None:
    w = _write(1, [_r("n1"), _r("n2"), _r("n3")])
    w.start(0.0, 1.0)
    assert w.done


def test_write_fails_as_soon_as_w_cannot_be_reached() -> None:
    w = _write(3, [_r("n1"), _r("n2"), _r("n3")])
    w.start(0.0, 1.0)
    assert w.fail()  # 1 ack + 1 outstanding < 3
    with pytest.raises(QuorumTimeout) as err:
        w.outcome()
    assert (err.value.required, err.value.acks) == (3, 1)


def test_write_times_out_at_its_deadline() -> None:
    w = _write(2, [_r("n1"), _r("n2")])
    w.start(10.0, 1.0)
    assert w.wakeup() == 11.0
    assert not w.tick(10.9)
    assert w.tick(11.0)
    assert w.wakeup() is None
    with pytest.raises(QuorumTimeout):
        w.outcome()


def test_pending_replicas_must_ack_too() -> None:
    live = [_r("n1"), _r("n2"), _r("n3")]
    w = _write(2, live, [_r("n6")])
    assert w.required == 3
    assert [r.node for r in w.start(0.0, 1.0)] == ["n2", "n3", "n6"]
    with pytest.raises(Unavailable) as err:  # the pending replica is down: 3 of 4 cannot do
        _write(3, live, [_r("n6")], alive=set(ZONES))
    assert (err.value.required, err.value.alive) == (4, 3)


def test_a_ring_smaller_than_n_demands_what_it_has() -> None:
    w = _write(3, [_r("n1"), _r("n2")])  # quorum for N=3, two nodes in the ring
    assert w.required == 2


def test_write_unavailable_before_anything_is_sent() -> None:
    with pytest.raises(Unavailable):
        _write(3, [_r("n1"), _r("n2")], primaries=(_r("n1"), _r("n2"), _r("n3")))


def test_hints_for_primaries_no_replica_covers() -> None:
    primaries = (_r("n1"), _r("n2"), _r("n3"))
    strict = _write(2, [_r("n1"), _r("n2")], primaries=primaries)
    assert strict.hinted == ["n3"]  # no fallback: the coordinator keeps n3's hint
    sloppy = _write(2, [_r("n1"), _r("n2"), _r("n4", False, "n3")], primaries=primaries)
    assert sloppy.hinted == []  # n4 holds it for n3
    down_pending = _write(2, [*primaries], [_r("n6")], alive=set(ZONES) - {"n6"})
    assert down_pending.hinted == ["n6"]


@settings(max_examples=300, deadline=None)
@given(
    n_live=st.integers(1, 6),
    required=st.integers(1, 6),
    events=st.lists(st.sampled_from(["ack", "fail", "tick"]), max_size=12),
)
def test_write_round_is_done_exactly_when_its_outcome_is_known(
    n_live: int, required: int, events: list[str]
) -> None:
    live = [_r(f"n{i}") for i in range(1, n_live + 1)]
    if required > n_live:
        with pytest.raises(Unavailable):
            _write(required, live, primaries=tuple(_r(f"n{i}") for i in range(1, 7)))
        return
    w = _write(required, live)
    sent = w.start(0.0, 1.0)
    answered = 0
    for event in events:
        if event == "tick":
            w.tick(2.0)
        elif answered < len(sent):
            answered += 1
            w.ack() if event == "ack" else w.fail()
        outstanding = len(sent) - answered
        reachable = w.acks + outstanding >= required
        assert w.done == (w.acks >= required or not reachable or w.timed_out)
        assert (w.wakeup() is None) == w.done  # never stalls: either done or waiting for time
    if w.done and w.acks < required:
        with pytest.raises(QuorumTimeout):
            w.outcome()
    elif w.acks >= required:
        w.outcome()


# -- reads -------------------------------------------------------------------------------------


def _read(required: int, live: list[Replica], me: str = "n1", *, delay: float = 0.1,
          primaries: tuple[Replica, ...] | None = None) -> ReadRound:  # fmt: skip
    prim = primaries if primaries is not None else tuple(r for r in live if r.primary)
    return ReadRound(Quorum(5, required), me, Targets(prim, live, []), 0.0, 1.0, delay)


FIVE = [_r(f"n{i}") for i in range(1, 6)]


def test_read_counts_the_local_copy_and_asks_the_rest_of_r() -> None:
    r = _read(3, FIVE)
    assert r.local == _r("n1")
    r.reply("n1", ())
    assert r.need == 2
    first = r.start()
    assert [x.node for x in first] == ["n2", "n3"]
    assert [x.node for x in r.spares] == ["n4", "n5"]
    assert not r.reply("n2", ())
    assert r.reply("n3", ())
    r.outcome()


def test_read_on_a_non_replica_asks_r_remote() -> None:
    r = _read(2, FIVE, me="n9")
    assert r.local is None
    assert [x.node for x in r.start()] == ["n1", "n2"]


def test_a_failed_replica_is_replaced_by_a_spare_and_marked_slow() -> None:
    r = _read(3, FIVE)
    r.reply("n1", ())
    r.start()
    step = r.fail("n2")
    assert [x.node for x in step.send] == ["n4"]
    assert step.slow == ["n2"]
    assert not r.done


def test_speculative_read_asks_the_spares_after_the_delay() -> None:
    r = _read(3, FIVE, delay=0.1)
    r.reply("n1", ())
    r.start()
    r.reply("n2", ())
    assert r.wakeup() == 0.1
    assert r.tick(0.05).send == []
    step = r.tick(0.1)
    assert [x.node for x in step.send] == ["n4", "n5"]
    assert step.slow == ["n3"]  # asked first, has not answered
    assert r.wakeup() == 1.0  # only the deadline is left
    assert r.reply("n4", ())
    r.outcome()


def test_read_times_out_with_the_replies_it_has() -> None:
    r = _read(3, FIVE)
    r.reply("n1", ())
    r.start(ask_all=True)
    r.reply("n5", ())
    assert r.tick(1.0).send == []
    assert r.done
    with pytest.raises(QuorumTimeout) as err:
        r.outcome()
    assert (err.value.required, err.value.acks) == (3, 2)


def test_read_fails_when_every_replica_failed() -> None:
    r = _read(2, FIVE[:2], me="n9")
    r.start()
    r.fail("n1")
    assert r.done
    with pytest.raises(QuorumTimeout):
        r.outcome()


def test_ask_all_sends_every_replica_at_once() -> None:
    r = _read(2, FIVE)
    r.reply("n1", ())
    assert len(r.start(ask_all=True)) == 4
    assert r.spares == []


def test_read_order_puts_slow_then_unconnected_replicas_last() -> None:
    r = _read(2, FIVE)
    r.reply("n1", ())
    r.order(0, now=10.0, slow={"n2": 20.0, "n3": 5.0}, connected=lambda n: n != "n4")
    assert [x.node for x in r.remote] == ["n3", "n5", "n4", "n2"]  # n3's mark expired


def test_read_order_starts_at_a_replica_chosen_by_the_hash() -> None:
    r = _read(2, FIVE, me="n9")
    r.order(2, now=0.0, slow={}, connected=_always)
    assert r.remote[0].node == "n3"


def test_read_unavailable_and_small_rings() -> None:
    with pytest.raises(Unavailable):
        _read(3, FIVE[:2], primaries=tuple(FIVE))
    r = _read(3, FIVE[:2])  # a ring of two nodes cannot demand three
    assert r.required == 2


@settings(max_examples=300, deadline=None)
@given(
    n_live=st.integers(1, 5),
    required=st.integers(1, 5),
    local=st.booleans(),
    ask_all=st.booleans(),
    events=st.lists(
        st.tuples(st.sampled_from(["reply", "fail", "tick"]), st.integers(0, 4), st.floats(0, 2)),
        max_size=20,
    ),
)
def test_read_round_properties(
    n_live: int, required: int, local: bool, ask_all: bool, events: list[tuple[str, int, float]]
) -> None:
    """Never asks a replica twice nor one not live; never stalls; done means R replied, or R
    can no longer reply, or time ran out."""
    live = FIVE[:n_live]
    required = min(required, n_live)
    r = _read(required, live, me="n1" if local else "n9", delay=0.5)
    if r.local is not None:
        r.reply("n1", ())
    asked = [x.node for x in r.start(ask_all)]
    answered: set[str] = set()
    now = 0.0
    for kind, pick, dt in events:
        if kind == "tick":
            now += dt
            asked += [x.node for x in r.tick(now).send]
        else:
            waiting = [n for n in asked if n not in answered]
            if not waiting:
                continue
            node = waiting[pick % len(waiting)]
            answered.add(node)
            if kind == "reply":
                r.reply(node, ())
            else:
                asked += [x.node for x in r.fail(node).send]
        assert len(asked) == len(set(asked))
        assert set(asked) <= {x.node for x in live} - {"n1" if local else ""}
        replies = len(r.answers)
        in_flight = len(asked) - len(answered)
        assert r.in_flight == in_flight
        could = replies + in_flight + len(r.spares)
        if replies >= required:
            assert r.done
        if r.done and replies < required:
            assert r.timed_out or replies + in_flight < required
            assert r.timed_out or not r.spares  # gives up only once every spare was tried
        if not r.done:  # something is still coming: an answer, or a tick that asks more
            assert in_flight > 0 or r.wakeup() is not None
            assert could >= required or in_flight > 0
    if r.done and len(r.answers) >= required:
        r.outcome()


# -- answers, read repair, digests -------------------------------------------------------------


def test_reconcile_and_stale_replicas() -> None:
    old = new_version((), VClock.empty(), "n1.1", b"a", 1)
    new = new_version((old,), old.clock(), "n2.1", b"b", 2)
    answers = {"n1": (old,), "n2": (new,), "n4": (old,)}
    final = reconcile(answers, "siblings")
    assert final == (new,)
    assert differs(answers, final)
    assert stale_replicas(answers, final, ["n1", "n2"]) == ["n1"]  # n4: a fallback
    assert not differs({"n2": (new,)}, final)


def test_agreed_digest() -> None:
    assert agreed_digest({"n1": ("e", True), "n2": ("e", True)}) == ("e", True)
    assert agreed_digest({"n1": ("e", True), "n2": ("f", True)}) is None


def test_read_required_on_an_empty_ring_names_the_quorum() -> None:
    from ringkv.core.round import read_required

    with pytest.raises(Unavailable) as err:
        read_required(Quorum(3, 2), (), [])
    assert (err.value.required, err.value.alive) == (2, 0)
    assert read_required(Quorum(3, 3), FIVE[:2], FIVE[:2]) == 2
