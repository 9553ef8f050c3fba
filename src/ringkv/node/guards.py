"""Guards: the node-side checks on clocks from outside, and log lines that cannot flood.

- ``ClockGuard`` applies ``ringkv.core.clock_bounds`` with this node's wall clock and
  ``--max-clock-skew``: a client context or a peer's versions from too far in the future are
  refused (and counted, and logged at most once in a while) before anything is observed or
  stored.
- ``LogLimiter``: a warning that outside input can trigger is logged at most once per interval
  per kind; the lines held back are counted in the next one. Anyone who can reach a port must
  not be able to fill the node's log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ringkv.core.clock_bounds import ClockSkew, check_clock, check_versions, max_skew_ms
from ringkv.core.versions import VClock, Version

log = logging.getLogger(__name__)

#: Seconds between two log lines of one kind (see LogLimiter).
LOG_INTERVAL = 10.0


class LogLimiter:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message`` unless a line of ``kind`` was logged within the interval; returns
        whether it was logged."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            message += " (%d more like it not logged)"
            args = (*args, held)
        self.logger.warning(message, *args)
        return True


class ClockGuard:
    """``--max-clock-skew`` applied to clocks from clients and peers."""

    def __init__(
        self,
        max_skew_seconds: float,
        on_reject: Callable[[str], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.skew_ms = max_skew_ms(max_skew_seconds)
        self.on_reject = on_reject  # called with "client" or "peer" for each refusal
        self.wall = wall
        self.limiter = LogLimiter(log)

    def _now_ms(self) -> int:
        return int(self.wall() * 1000)

    def check_context(self, clock: VClock, source: str = "client") -> None:
        """Raise ``ClockSkew`` for a context naming a clock too far ahead."""
        try:
            check_clock(clock, self._now_ms(), self.skew_ms, "context")
        except ClockSkew as exc:
            self._refused(source, exc)
            raise

    def check_versions(self, versions: Iterable[Version], source: str = "peer") -> None:
        """Raise ``ClockSkew`` for versions (from a peer) timestamped too far ahead."""
        try:
            check_versions(versions, self._now_ms(), self.skew_ms)
        except ClockSkew as exc:
            self._refused(source, exc)
            raise

    def admits(self, versions: Iterable[Version], source: str = "peer") -> bool:
        """``check_versions`` as a yes or no (a batch skips the records it refuses)."""
        try:
            self.check_versions(versions, source)
        except ClockSkew:
            return False
        return True

    def _refused(self, source: str, exc: ClockSkew) -> None:
        if self.on_reject is not None:
            self.on_reject(source)
        self.limiter.warning(f"clock-{source}", "refused a clock from a %s: %s", source, exc)


def clock_guard(max_skew_seconds: float, metrics: Any) -> ClockGuard:
    """The node's guard, counting refusals in ``ringkv_refused_input_total{reason="clock"}``."""
    return ClockGuard(
        max_skew_seconds, lambda source: metrics.refused_input.labels(source, "clock").inc()
    )
