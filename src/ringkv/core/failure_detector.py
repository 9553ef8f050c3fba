"""Phi accrual failure detector (Hayashibara et al., 2004), as in Cassandra and Akka.

Instead of a yes/no timeout, each peer gets a suspicion level ``phi`` computed from the history of
its heartbeat inter-arrival times: phi = -log10(P(a heartbeat arrives later than now)), modelled
as a normal distribution over a bounded window of recent intervals. ``phi(now) > threshold``
(default 8, Cassandra's ``phi_convict_threshold``) convicts the peer. Time is always an argument.

The defaults (heartbeats every 0.5 s, an acceptable pause of 2 s, a standard deviation of at
least 0.25 s) convict a silent peer about 3.8 s after its last heartbeat: long enough that a
loaded 2-core machine does not flap, short enough that a paused node is routed around quickly.
A crashed node is noticed sooner, when its connection breaks.
"""

from __future__ import annotations

import math
from collections import deque
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
