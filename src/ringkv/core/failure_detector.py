"""Phi accrual failure detector (Hayashibara et al., 2004), as in Cassandra and Akka.

Instead of a yes/no timeout, each peer gets a suspicion level ``phi`` computed from the history of
its heartbeat inter-arrival times: phi = -log10(P(a heartbeat arrives later than now)), modelled
as a normal distribution over a bounded window of recent intervals. ``phi(now) > threshold``
(default 8, Cassandra's ``phi_convict_threshold``) convicts the peer. Time is always an argument.

The defaults (heartbeats every 0.5 s, an acceptable pause of 2 s, a standard deviation of at
least 0.25 s) convict a silent peer about 3.8 s after its last heartbeat: long enough that a
loaded 2-core machine does not flap, short enough that a paused node is routed around quickly.
A crashed node is noticed sooner, when its connection breaks.

``Watch`` decides which members a member heartbeats (a constant number, not all of them) and
turns phi into verdicts: suspicion, indirect probes, conviction.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

DEFAULT_THRESHOLD = 8.0
DEFAULT_WINDOW = 200


@dataclass(slots=True)
class ArrivalWindow:
    """The bounded history of one peer's heartbeat inter-arrival times (seconds)."""

    max_size: int
    first_interval: float
    intervals: deque[float] = field(default_factory=deque)
    last: float | None = None
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, now: float) -> None:
        if self.last is not None:
            interval = now - self.last
            if interval < 0:
                return  # a clock that went backwards tells us nothing
            if not self.intervals:
                # Seed with an estimate so that the first real interval does not decide everything.
                self._push(self.first_interval)
            self._push(interval)
        self.last = now

    def _push(self, interval: float) -> None:
        self.intervals.append(interval)
        self.total += interval
        self.total_sq += interval * interval
        if len(self.intervals) > self.max_size:
            old = self.intervals.popleft()
            self.total -= old
            self.total_sq -= old * old

    def mean(self) -> float:
        return self.total / len(self.intervals) if self.intervals else self.first_interval

    def std_dev(self) -> float:
        n = len(self.intervals)
        if n < 2:
            return 0.0
        variance = max(self.total_sq / n - (self.total / n) ** 2, 0.0)
        return math.sqrt(variance)


class PhiAccrualFailureDetector:
    """Per-peer phi, fed with heartbeat arrival times; pure (``now`` is always passed in)."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        window: int = DEFAULT_WINDOW,
        min_std_dev: float = 0.25,
        acceptable_pause: float = 2.0,
        first_interval: float = 0.5,
    ) -> None:
        if threshold <= 0 or window < 2 or min_std_dev <= 0 or acceptable_pause < 0:
            raise ValueError("invalid failure detector parameters")
        self.threshold = threshold
        self.window = window
        self.min_std_dev = min_std_dev
        self.acceptable_pause = acceptable_pause
        self.first_interval = first_interval
        self._windows: dict[str, ArrivalWindow] = {}

    def heartbeat(self, peer: str, now: float) -> None:
        window = self._windows.get(peer)
        if window is None:
            window = ArrivalWindow(self.window, self.first_interval)
            self._windows[peer] = window
        window.add(now)

    def forget(self, peer: str) -> None:
        self._windows.pop(peer, None)

    def known(self, peer: str) -> bool:
        return peer in self._windows

    def phi(self, peer: str, now: float) -> float:
        """Suspicion level of ``peer`` at ``now``; ``inf`` for a peer never heard from."""
        window = self._windows.get(peer)
        if window is None or window.last is None:
            return math.inf
        elapsed = now - window.last
        mean = window.mean() + self.acceptable_pause
        std = max(window.std_dev(), self.min_std_dev)
        return phi_normal(elapsed, mean, std)

    def is_available(self, peer: str, now: float) -> bool:
        return self.phi(peer, now) < self.threshold


def phi_normal(elapsed: float, mean: float, std_dev: float) -> float:
    """-log10 of the normal tail probability, via the logistic approximation Akka uses.

    Accurate to about 1e-4 and, unlike ``erfc``, it does not underflow to ``inf`` for long pauses
    before it has to.
    """
    return max(0.0, _phi(elapsed, mean, std_dev))


def _phi(elapsed: float, mean: float, std_dev: float) -> float:
    y = (elapsed - mean) / std_dev
    exponent = -y * (1.5976 + 0.070566 * y * y)
    if exponent < -700:  # exp underflows; the tail is astronomically small
        return -exponent / math.log(10)  # -log10(e^exponent), approximately
    e = math.exp(exponent) if exponent < 700 else math.inf
    if elapsed > mean:
        return -math.log10(e / (1.0 + e))
    return -math.log10(1.0 - 1.0 / (1.0 + e)) if e != math.inf else 0.0


# -- who watches whom --------------------------------------------------------------------------

WATCHERS = 4
"""Members each member heartbeats (and is heartbeated by): constant, whatever the cluster size."""
INDIRECT_PROBES = 3
"""Members asked to probe a suspect on our behalf before we convict it (SWIM's ping-req)."""


def _order_key(node: str) -> tuple[bytes, str]:
    return hashlib.blake2b(node.encode(), digest_size=8).digest(), node


def watch_order(members: Iterable[str]) -> tuple[str, ...]:
    """The fixed order in which members watch their successors (by a hash of the id, so that
    a zone's or a rack's members are not neighbours)."""
    return tuple(sorted(set(members), key=_order_key))


class Watch:
    """Which members this one heartbeats, and its verdict on them: phi accrual conviction,
    confirmed by indirect probes (SWIM's ping-req). Pure: time is an argument, the caller
    sends the messages.

    Members are arranged in a fixed order (a hash of their ids); each member heartbeats the
    ``watchers`` members after it that it does not hold for dead (and any dead ones in between,
    so that it notices when they come back). So every member is watched by about ``watchers``
    others and sends ``watchers`` heartbeats per interval, whatever the cluster size, instead
    of one to every member. A target whose phi crosses the threshold becomes a *suspect*: the
    caller asks ``INDIRECT_PROBES`` other members to probe it; an answer counts as a heartbeat
    (``heard``). A suspect not heard from for ``confirm`` more seconds is *convicted*; the
    caller publishes the convictions through gossip (``ringkv.core.gossip.DOWN``) so that
    members that do not watch it learn of it, and any heartbeat acquits it.
    """

    def __init__(
        self,
        node_id: str,
        detector: PhiAccrualFailureDetector,
        watchers: int = WATCHERS,
        confirm: float = 0.5,
    ) -> None:
        self.node_id = node_id
        self.detector = detector
        self.watchers = watchers
        self.confirm = confirm
        self.suspects: dict[str, float] = {}  # node -> when it became a suspect
        self.convicted: set[str] = set()
        self._order: tuple[str, ...] = ()
        self._start = 0
        self._watched: set[str] = set()  # the targets of the last tick

    def targets(self, order: tuple[str, ...], dead: Container[str] = ()) -> list[str]:
        """The members to heartbeat: the next ``watchers`` live ones after us in ``order`` (a
        ``watch_order`` of the members, ourselves included), plus the dead ones met on the way.
        O(watchers) when ``order`` is the same object as last time."""
        if order is not self._order:
            self._order = order
            self._start = order.index(self.node_id) if self.node_id in order else -1
        if self._start < 0:
            return []
        start = self._start
        out: list[str] = []
        live = 0
        for step in range(1, len(order)):
            node = order[(start + step) % len(order)]
            out.append(node)
            if node not in dead and node not in self.convicted:
                live += 1
                if live == self.watchers:
                    break
        return out

    def alive(self, node: str, now: float) -> bool | None:
        """Our verdict on ``node``, or None while we have no verdict of our own: it was not a
        target at the last ``tick`` (it just became one when the members changed, and the
        history we hold of it, if any, is stale until ``tick`` gives it a fresh start)."""
        if node not in self._watched:
            return None
        return self.detector.is_available(node, now)

    def heard(self, node: str, now: float) -> None:
        """A heartbeat answer (direct or through an indirect probe) from ``node``."""
        self.detector.heartbeat(node, now)
        self.suspects.pop(node, None)
        self.convicted.discard(node)

    def tick(self, now: float, targets: Iterable[str]) -> list[str]:
        """Update the verdicts on ``targets``; returns the new suspects, to probe indirectly."""
        wanted = set(targets)
        for node in [n for n in self.suspects if n not in wanted]:
            del self.suspects[node]
        self.convicted &= wanted
        fresh = []
        for node in wanted:
            if node in self.convicted:
                continue
            if node not in self._watched or not self.detector.known(node):
                # A new target gets the benefit of the doubt: whatever we heard of it before
                # (when it was last ours, or learned through gossip) is not a history.
                self.detector.forget(node)
                self.detector.heartbeat(node, now)
                continue
            if self.detector.is_available(node, now):
                self.suspects.pop(node, None)
                continue
            since = self.suspects.get(node)
            if since is None:
                self.suspects[node] = now
                fresh.append(node)
            elif now - since >= self.confirm:
                del self.suspects[node]
                self.convicted.add(node)
        self._watched = wanted
        return fresh
