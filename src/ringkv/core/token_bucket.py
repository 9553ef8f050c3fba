"""A token bucket: how long to wait so that background work averages ``rate`` units a second.

Streaming, anti-entropy, cleanup and key listing each pace themselves with one; the rate is an
argument of every ``take`` because operators may change it while the work runs.
"""

from __future__ import annotations


class TokenBucket:
    """Credit accrues at ``rate`` per second up to one second's worth (the largest burst)."""

    __slots__ = ("at", "level")

    def __init__(self, now: float, level: float = 0.0) -> None:
        self.level = level
        self.at = now

    def take(self, amount: float, rate: float, now: float) -> float:
        """Spend ``amount``; the seconds to wait before doing more (0 while in credit)."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.level = min(rate, self.level + (now - self.at) * rate) - amount
        self.at = now
        return -self.level / rate if self.level < 0 else 0.0
