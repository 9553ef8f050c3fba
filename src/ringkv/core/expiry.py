"""Expiry (TTL): when a version stops being live, and when it may be purged.

A write with a TTL carries its expiry -- wall-clock milliseconds -- inside the version it creates
(``Version.expires``), so the expiry travels with the version through replication, read repair,
hints, anti-entropy and streaming, and replicas that hold the same dots agree on it (their
Merkle trees stay equal). Each node judges expiry against its own clock when it reads: from
``expires`` on, the version is not live and reads as absent. Nodes whose clocks differ by d
disagree for at most d around the expiry instant; ``skew_ms`` -- the node's ``--max-clock-skew``,
the bound the cluster's clocks must stay within anyway (``ringkv.core.clock_bounds``) -- is how
much longer purging and overwriting expired values wait.

An expired version behaves like a tombstone written at its expiry: it still supersedes what its
context covers (so an older value cannot reappear from under it), a write whose context covers
it replaces it as it would a tombstone, and it is purged by the tombstone purge (anti-entropy,
after ``--tombstone-grace`` and an exchange with every replica; at the first pass when it
superseded nothing), never by a scan on the request path. Writes also cover the values that
expired beyond the skew (``covering_expired``), so blind writes do not pile up dead siblings.

Pure: the clock is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ringkv.core.versions import VClock, Version, context_of, hlc_wall_ms

#: Largest ``ttl=`` accepted: ten years, in seconds. ``ttl=0`` means "never expires".
MAX_TTL_SECONDS = 10 * 365 * 86400


def parse_ttl(raw: str) -> int:
    """``ttl=`` as whole seconds 0..MAX_TTL_SECONDS; ``ValueError`` with a reason otherwise."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise ValueError(f"ttl={raw!r} must be a whole number of seconds")
    ttl = int(text)
    if ttl > MAX_TTL_SECONDS:
        raise ValueError(f"ttl={raw} is above the limit of {MAX_TTL_SECONDS} seconds")
    return ttl


def expires_at(now_ms: int, ttl_seconds: int) -> int:
    """The ``expires`` of a version written at ``now_ms`` with that TTL (0: no expiry)."""
    return now_ms + ttl_seconds * 1000 if ttl_seconds > 0 else 0


def is_expired(version: Version, now_ms: int) -> bool:
    return 0 < version.expires <= now_ms


def is_live(version: Version, now_ms: int) -> bool:
    """A value a reader sees: not a tombstone, not expired."""
    return version.value is not None and not (0 < version.expires <= now_ms)


def live_versions(versions: Iterable[Version], now_ms: int) -> list[Version]:
    return [v for v in versions if is_live(v, now_ms)]


def remaining_ms(version: Version, now_ms: int) -> int | None:
    """Milliseconds until the version expires (None: it never does)."""
    return max(0, version.expires - now_ms) if version.expires else None


def dead_since(version: Version, skew_ms: int) -> int | None:
    """Wall-clock ms from which a version is dead everywhere (a tombstone from when it was
    written, an expiring value from its expiry plus the allowed skew); None while it lives."""
    if version.value is None:
        return hlc_wall_ms(version.timestamp)
    if version.expires:
        return version.expires + skew_ms
    return None


def covering_expired(
    context: VClock, current: Iterable[Version], now_ms: int, skew_ms: int
) -> VClock:
    """``context`` extended to cover the versions of ``current`` that expired more than the
    allowed skew ago: a coordinator writes over them as over versions the client read, so
    expired values do not pile up as siblings under blind writes (they are dead everywhere,
    and the new version still supersedes everything they superseded)."""
    dead = [v for v in current if v.expires and v.expires + skew_ms <= now_ms]
    return context.merge(context_of(dead)) if dead else context


def purgeable(
    versions: Sequence[Version], horizon_ms: int, skew_ms: int, now_ms: int | None = None
) -> bool:
    """A record whose every version (at least one) was dead before ``horizon_ms``: tombstones
    and expired values only. The tombstone purge removes such records.

    With ``now_ms``, also a record of values written over nothing (an empty context: a key
    written once with a TTL) that all expired, beyond the allowed skew, before ``now_ms``: they
    superseded nothing, so dropping them can bring nothing back, and they go without waiting for
    the grace period."""
    if not versions:
        return False
    if now_ms is not None and all(
        v.value is not None and 0 < v.expires <= now_ms - skew_ms and not len(v.context)
        for v in versions
    ):
        return True
    for version in versions:
        since = dead_since(version, skew_ms)
        if since is None or since >= horizon_ms:
            return False
    return True
