"""Clock bounds: how far ahead of the local wall clock a clock from outside may be.

A node's hybrid logical clock only moves forward, and it adopts the timestamps it is shown: a
client's context (its vector clock entries carry the wall time of each increment, and the
counters of this node's own actor become its next dots) and the versions peers replicate. So a
forged or corrupt clock far in the future would move the node's clock there for good, and its
next versions would carry it to every replica (or overflow the encoding). As CockroachDB's
``--max-offset``, nothing from outside may name a time more than a bounded skew ahead of the
receiving node's wall clock; whatever does is refused whole, before anything is stored or
observed. Legitimate clocks stay within the bound as long as the nodes' wall clocks do.

Pure: the wall clock is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable

from ringkv.core.versions import HLC_LOGICAL_BITS, VClock, Version

#: Default of ``--max-clock-skew`` (seconds): how far ahead of this node's wall clock a clock
#: from a client or a peer may be. NTP keeps nodes within milliseconds; a refusal costs only
#: the one request, so the bound is generous.
DEFAULT_MAX_CLOCK_SKEW = 5.0

_LOGICAL_MASK = (1 << HLC_LOGICAL_BITS) - 1


class ClockSkew(ValueError):
    """A clock from outside is too far ahead of the local wall clock (or out of range)."""


def max_skew_ms(seconds: float) -> int:
    return int(seconds * 1000)


def hlc_limit(wall_ms: int, skew_ms: int) -> int:
    """The largest hybrid-logical-clock timestamp (and dot counter) acceptable at ``wall_ms``.

    Dot counters are drawn from the HLC too (``new_version``), so the same limit bounds both.
    """
    return ((wall_ms + skew_ms) << HLC_LOGICAL_BITS) | _LOGICAL_MASK


def check_clock(clock: VClock, wall_ms: int, skew_ms: int, what: str = "clock") -> None:
    """Raise ``ClockSkew`` unless every entry of ``clock`` is within the bound."""
    latest_ms = wall_ms + skew_ms
    limit = hlc_limit(wall_ms, skew_ms)
    for actor, (counter, ts_ms) in clock.entries.items():
        if ts_ms > latest_ms:
            raise ClockSkew(
                f"{what} entry {actor!r} is dated {ts_ms - wall_ms} ms ahead of this node's clock"
                f" (at most {skew_ms} ms allowed, see --max-clock-skew)"
            )
        if counter > limit:
            raise ClockSkew(
                f"{what} entry {actor!r} has counter {counter}, beyond what any node's clock can"
                f" have produced by now (at most {limit})"
            )


def check_versions(
    versions: Iterable[Version], wall_ms: int, skew_ms: int, what: str = "version"
) -> None:
    """Raise ``ClockSkew`` unless every version's timestamp, dot and context are within the
    bound: the check on records a peer sends (replication, hints, streaming, repair)."""
    limit = hlc_limit(wall_ms, skew_ms)
    for version in versions:
        if version.timestamp > limit:
            ahead = (version.timestamp >> HLC_LOGICAL_BITS) - wall_ms
            raise ClockSkew(
                f"{what} of {version.actor!r} is timestamped {ahead} ms ahead of this node's"
                f" clock (at most {skew_ms} ms allowed, see --max-clock-skew)"
            )
        if version.counter > limit:
            raise ClockSkew(f"{what} of {version.actor!r} has an out-of-range dot counter")
        check_clock(version.context, wall_ms, skew_ms, f"{what} context")
