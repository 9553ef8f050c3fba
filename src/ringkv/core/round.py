"""The quorum round of one request: whom to ask, how many must answer, and when it is over.

As riak_core's ``get_fsm``/``put_fsm`` (and etcd-raft's ``Node``), a round does no I/O and reads
no clock. The coordinator (``ringkv.node.coordinator``) builds it from the ring state, sends
what it asks for, and feeds it what happens: ``reply``/``ack``, ``fail``, and the time
(``tick(now)``, when ``wakeup()`` says). The round answers what to send next, which replicas
to ask last from now on (slow ones, as Cassandra's dynamic snitch), when it is done, and with
which outcome (``outcome()`` raises the error of ``ringkv.core.errors``).

- ``targets``: a key's primaries, the live replicas to use (fallbacks unless strict), and the
  pending replicas of a ring change in progress.
- ``WriteRound``: the required count (pending replicas must ack too; a ring smaller than N
  cannot demand more than it has), where a write goes when this node is not a replica,
  which replicas the coordinator keeps hints for, and the tally of acks.
- ``ReadRound`` (and ``read_required``, which batches share): R, the order replicas are asked
  in, the first R and the spares asked when one fails or the speculative read delay passes,
  and the tally of replies.
- ``reconcile``, ``stale_replicas``, ``agreed_digest``: the answer, read repair, digest reads.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any, NamedTuple

from ringkv.core.errors import QuorumTimeout, Unavailable
from ringkv.core.placement import Replica, preference_list, sloppy_preference_list
from ringkv.core.quorum import Quorum
from ringkv.core.ring import Ring
from ringkv.core.versions import ConflictMode, Version, merge_siblings

NO_REPLICAS: tuple[Replica, ...] = ()


class Targets(NamedTuple):
    primaries: tuple[Replica, ...]
    live: list[Replica]
    pending: list[Replica]


class Step(NamedTuple):
    """What to do after an event: replicas to ask now, nodes to ask last for a while."""

    send: list[Replica]
    slow: list[str]


_NOTHING = Step([], [])


def targets(
    ring: Ring, future: Ring, h: int, n: int, up: Container[str], strict: bool, reading: bool
) -> Targets:
    """Live primaries, plus a fallback for each down primary unless the request is strict.
    While the ring changes (``future`` is not ``ring``), writes also go to the key's pending
    replicas: nodes that will replicate it once the change completes, which must ack too, as
    in Cassandra. ``up``: the nodes a request may use (for reads, not those still filling)."""
    if not len(ring):
        return Targets(NO_REPLICAS, [], [])
    primaries = preference_list(ring, h, n)
    if strict:
        live = [r for r in primaries if r.node in up]
    else:
        live = list(sloppy_preference_list(ring, h, n, up))
    pending: list[Replica] = []
    if not reading and future is not ring and len(future):
        current = {r.node for r in primaries}
        pending = [r for r in preference_list(future, h, n) if r.node not in current]
    return Targets(primaries, live, pending)


def forward_target(quorum: Quorum, live: Sequence[Replica], h: int) -> str:
    """The replica a non-replica sends a write to: one of the key's live primaries chosen by
    the key's hash, so coordinating writes is spread like the replica load, not like primary
    ownership. ``Unavailable`` when too few replicas are live."""
    if len(live) < quorum.required or not live:
        raise Unavailable(quorum.required, len(live))
    primaries = [r for r in live if r.primary] or list(live)
    return primaries[h % len(primaries)].node


class WriteRound:
    """A write coordinated by a replica (``me``): it stores its copy, sends ``others`` the
    record and is done once ``required`` acks (its own included) came, or cannot."""

    __slots__ = ("acks", "deadline", "failures", "hinted", "others", "required", "timed_out")

    def __init__(
        self,
        quorum: Quorum,
        me: Replica,
        t: Targets,
        alive: Callable[[str], bool],
    ) -> None:
        primaries, live, pending = t
        required = min(quorum.required, len(primaries)) + len(pending)
        live_pending = [r for r in pending if alive(r.node)]
        if len(live) + len(live_pending) < required:
            raise Unavailable(required, len(live) + len(live_pending))
        self.required = required
        self.others = [r for r in live if r.node != me.node] + live_pending
        # Primaries and pending replicas neither a live replica nor a fallback covers: the
        # coordinator keeps their hint.
        covered = {r.node for r in live} | {r.hint_for for r in live if r.hint_for}
        self.hinted = [
            r.node
            for r in (*primaries, *pending)
            if r.node not in covered and r not in live_pending
        ]
        self.acks = 1  # the coordinator's own copy
        self.failures = 0
        self.deadline = 0.0
        self.timed_out = False

    def start(self, now: float, timeout: float) -> list[Replica]:
        """The replicas to send the record to now; the round is over at ``now + timeout``."""
        self.deadline = now + timeout
        return self.others

    @property
    def done(self) -> bool:
        acks = self.acks
        return (
            acks >= self.required
            or acks + len(self.others) - (acks - 1) - self.failures < self.required
            or self.timed_out
        )

    def ack(self) -> bool:
        self.acks += 1
        return self.done

    def fail(self) -> bool:
        self.failures += 1
        return self.done

    def wakeup(self) -> float | None:
        return None if self.done else self.deadline

    def tick(self, now: float) -> bool:
        if now >= self.deadline:
            self.timed_out = True
        return self.done

    def outcome(self) -> None:
        if self.acks < self.required:
            raise QuorumTimeout(self.required, self.acks)


def read_required(quorum: Quorum, primaries: Sequence[Replica], live: Sequence[Replica]) -> int:
    """R for this key: a ring smaller than N (a forming cluster) cannot demand more replies
    than it has replicas; ``Unavailable`` when fewer replicas are live."""
    required = min(quorum.required, len(primaries)) or quorum.required
    if len(live) < required or not live:
        raise Unavailable(required, len(live))
    return required


class ReadRound:
    """A read: ``required`` replies (the coordinator's own copy counts, read first), from the
    live replicas in ``order``; ``start`` says whom to ask first, ``fail`` and ``tick`` whom
    next. ``answers`` keeps every reply, also those after the round is done (read repair)."""

    __slots__ = (
        "answers",
        "deadline",
        "first",
        "in_flight",
        "live",
        "local",
        "me",
        "remote",
        "required",
        "spares",
        "speculate_at",
        "timed_out",
    )

    def __init__(
        self,
        quorum: Quorum,
        me: str,
        t: Targets,
        now: float,
        timeout: float,
        speculative_delay: float,
    ) -> None:
        primaries, live, _ = t
        self.required = read_required(quorum, primaries, live)
        self.me = me
        self.local: Replica | None = None
        self.remote: list[Replica] = []
        for r in live:
            if r.node == me:
                self.local = r
            else:
                self.remote.append(r)
        self.live = live
        self.answers: dict[str, Any] = {}
        self.in_flight = 0
        self.spares: list[Replica] = []
        self.first: list[Replica] = []
        self.speculate_at = now + speculative_delay
        self.deadline = now + timeout
        self.timed_out = False

    @property
    def primaries(self) -> list[str]:
        """The live primaries: read repair updates them when stale (fallbacks: handoff)."""
        return [r.node for r in self.live if r.primary]

    @property
    def need(self) -> int:
        """Remote replies still needed beyond the answers already in (the local copy)."""
        return self.required - len(self.answers)

    def order(
        self, h: int, now: float, slow: Mapping[str, float], connected: Callable[[str], bool]
    ) -> None:
        """Start at a replica chosen by the key's hash, so reads are spread like the replica
        load rather than falling on the first replicas of each list; ask replicas slow lately
        (``slow``: node -> until when) last, then ones not connected (being reconnected to:
        only slow). Only matters when fewer than all remote replicas are asked first."""
        remote = self.remote
        if self.need >= len(remote):
            return
        turn = h % len(remote)
        remote[:] = remote[turn:] + remote[:turn]
        remote.sort(key=lambda r: (slow.get(r.node, 0.0) > now, not connected(r.node)))

    def start(self, ask_all: bool = False) -> list[Replica]:
        """The replicas to ask now: the first ``need``, or all (``ask_all``: background read
        repair compares every replica); the others are spares."""
        need, remote = self.need, self.remote
        if need >= len(remote) or ask_all:
            first, self.spares = list(remote), []
        else:
            first, self.spares = remote[:need], remote[need:]
        self.first = first
        self.in_flight = len(first)
        return first

    @property
    def done(self) -> bool:
        replies = len(self.answers)
        required = self.required
        return replies >= required or replies + self.in_flight < required or self.timed_out

    def reply(self, node: str, answer: Any) -> bool:
        """``node``'s answer (the coordinator's own copy: before ``start``)."""
        answers = self.answers
        answers[node] = answer
        if node != self.me:
            self.in_flight -= 1
        replies, required = len(answers), self.required
        return replies >= required or replies + self.in_flight < required or self.timed_out

    def fail(self, node: str) -> Step:
        """A replica failed (or answered garbage): ask the next spare, and ask it last a while."""
        ongoing = not self.done  # a spare replaces it while the round is still on
        self.in_flight -= 1
        if self.spares and ongoing:
            self.in_flight += 1
            return Step([self.spares.pop(0)], [node])
        return Step([], [node])

    def wakeup(self) -> float | None:
        if self.done:
            return None
        if self.spares:
            return min(self.speculate_at, self.deadline)
        return self.deadline

    def tick(self, now: float) -> Step:
        """Past the speculative read delay, the replicas asked first that have not answered
        are slow: ask the spares too. Past the deadline the round is over."""
        step = _NOTHING
        if now >= self.deadline:
            self.timed_out = True
        elif self.spares and now >= self.speculate_at and not self.done:
            answers = self.answers
            slow = [r.node for r in self.first if r.node not in answers]
            send, self.spares = self.spares, []
            self.in_flight += len(send)
            step = Step(send, slow)
        return step

    def outcome(self) -> None:
        replies = len(self.answers)
        if replies < self.required:
            raise QuorumTimeout(self.required, replies)


def reconcile(answers: Mapping[str, Sequence[Version]], mode: ConflictMode) -> tuple[Version, ...]:
    """The read's answer: every reply merged into the versions none obsoletes."""
    return merge_siblings((), [v for vs in answers.values() for v in vs], mode)


def stale_replicas(
    answers: Mapping[str, Sequence[Version]], final: Sequence[Version], primaries: Sequence[str]
) -> list[str]:
    """The primaries whose reply differs from the reconciled ``final``: read repair sends them
    ``final`` (fallbacks are left to hinted handoff)."""
    dots = {v.dot for v in final}
    return [n for n, vs in answers.items() if n in primaries and {v.dot for v in vs} != dots]


def differs(answers: Mapping[str, Sequence[Version]], final: Sequence[Version]) -> bool:
    """Whether some reply is not the reconciled answer (a read repair is needed)."""
    dots = {v.dot for v in final}
    return any({v.dot for v in vs} != dots for vs in answers.values())


def agreed_digest(digests: Mapping[str, tuple[str, bool]]) -> tuple[str, bool] | None:
    """A digest read's answer when every replica's digest is the same, else None (a full
    read settles it, with read repair)."""
    values = set(digests.values())
    return next(iter(values)) if len(values) == 1 else None
