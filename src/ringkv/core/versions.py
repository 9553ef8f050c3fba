"""Versions: vector clocks, dotted versions, sibling sets, tombstones and hybrid logical clocks.

Every stored version carries a *dot* -- the (actor, counter) event that created it -- and the
*context*: the vector clock of everything the writer had seen when it wrote (as in dotted version
vectors, Preguica et al.; Riak 2.0's ``dvv_enabled``). Version ``a`` makes version ``b`` obsolete
exactly when ``a.context`` covers ``b``'s dot. That rule lets two blind writes through the same
coordinator become siblings instead of one silently replacing the other, which plain per-node
vector clocks get wrong.

An actor is a node id plus the incarnation persisted in its data directory (``n1#3``): a node that
returns with an empty disk gets a new incarnation, so its new dots never collide with old ones.

A tombstone is a version whose value is ``None``; it obsoletes what its context covers, exactly
like a write. In last-write-wins mode a record keeps a single version: the one with the highest
hybrid-logical-clock timestamp (ties broken by dot).

Everything here is pure: timestamps are arguments.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

ConflictMode = Literal["siblings", "lww"]
CONFLICT_MODES: tuple[ConflictMode, ...] = ("siblings", "lww")

#: Clocks larger than this are pruned, oldest entries first (Riak's ``big_vclock`` is 50).
DEFAULT_MAX_CLOCK_ENTRIES = 50
#: A context header longer than this is refused before decoding.
MAX_CONTEXT_CHARS = 16 * 1024

HLC_LOGICAL_BITS = 16
_HLC_LOGICAL_MASK = (1 << HLC_LOGICAL_BITS) - 1


class MalformedContext(ValueError):
    """A client-supplied context could not be decoded."""


class MalformedRecord(ValueError):
    """Stored or received version bytes could not be decoded."""


def make_actor(node_id: str, incarnation: int) -> str:
    """The clock actor for a node incarnation."""
    return f"{node_id}#{incarnation}"


@dataclass(frozen=True, slots=True)
class VClock:
    """An immutable vector clock: actor -> (counter, wall-clock ms of the last increment).

    The timestamps only serve pruning (drop the oldest entries when the clock grows past a bound);
    they play no part in ordering.
    """

    entries: Mapping[str, tuple[int, int]]

    @staticmethod
    def empty() -> VClock:
        return _EMPTY

    def get(self, actor: str) -> int:
        entry = self.entries.get(actor)
        return entry[0] if entry is not None else 0

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def descends(self, other: VClock) -> bool:
        """True when this clock has seen everything ``other`` has (``self >= other``)."""
        return all(self.get(actor) >= counter for actor, (counter, _) in other.entries.items())

    def dominates(self, other: VClock) -> bool:
        """Strictly newer: descends and differs."""
        return self.descends(other) and not other.descends(self)

    def concurrent(self, other: VClock) -> bool:
        return not self.descends(other) and not other.descends(self)

    def merge(self, other: VClock) -> VClock:
        """Pointwise maximum (keeping the later timestamp for equal counters)."""
        if not other.entries:
            return self
        if not self.entries:
            return other
        merged = dict(self.entries)
        for actor, entry in other.entries.items():
            mine = merged.get(actor)
            if mine is None or entry > mine:
                merged[actor] = entry
        return VClock(merged)

    def with_entry(self, actor: str, counter: int, now_ms: int) -> VClock:
        merged = dict(self.entries)
        merged[actor] = (counter, now_ms)
        return VClock(merged)

    def increment(self, actor: str, now_ms: int) -> VClock:
        return self.with_entry(actor, self.get(actor) + 1, now_ms)

    def prune(self, max_entries: int, keep: str | None = None) -> VClock:
        """Drop the least recently incremented entries until at most ``max_entries`` remain.

        ``keep`` (the writing actor) is never dropped. Pruning only ever produces extra siblings,
        never a lost write: a pruned context covers less, so it obsoletes less.
        """
        if len(self.entries) <= max_entries:
            return self
        ordered = sorted(self.entries.items(), key=lambda item: (item[1][1], item[0]), reverse=True)
        kept: dict[str, tuple[int, int]] = {}
        if keep is not None and keep in self.entries:
            kept[keep] = self.entries[keep]
        for actor, entry in ordered:
            if len(kept) >= max_entries:
                break
            kept.setdefault(actor, entry)
        return VClock(kept)

    def to_wire(self) -> dict[str, list[int]]:
        return {actor: [counter, ts] for actor, (counter, ts) in self.entries.items()}

    @staticmethod
    def from_wire(raw: object) -> VClock:
        """Decode and validate; ``ValueError`` for anything but a well-formed clock."""
        if not isinstance(raw, dict):
            raise ValueError("clock must be a map")
        if not raw:
            return _EMPTY  # the usual context of a record: every decode shares one
        entries: dict[str, tuple[int, int]] = {}
        for actor, entry in raw.items():
            if type(actor) is not str or not actor or len(actor) > 512:
                raise ValueError("clock actor must be a non-empty string")
            # Checked one by one, without a generator: this runs for every record read.
            if (type(entry) is not list and type(entry) is not tuple) or len(entry) != 2:
                raise ValueError("clock entry must be [counter, timestamp] of non-negative ints")
            counter, timestamp = entry
            if (
                type(counter) is not int
                or type(timestamp) is not int
                or not 0 <= counter < _INT63
                or not 0 <= timestamp < _INT63
            ):
                raise ValueError("clock entry must be [counter, timestamp] of non-negative ints")
            entries[actor] = (counter, timestamp)
        return VClock(entries)


_EMPTY = VClock({})
_INT63 = 1 << 63


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a key: the value (``None`` for a tombstone), its dot and context."""

    actor: str
    counter: int
    context: VClock
    value: bytes | None
    timestamp: int  # hybrid logical clock, see hlc_now
    #: Wall-clock ms from which the value reads as absent (0: never; see ``ringkv.core.expiry``).
    #: Set when the version is created and never changed, so replicas that agree on the dots
    #: agree on the expiry too.
    expires: int = 0

    @property
    def dot(self) -> tuple[str, int]:
        return (self.actor, self.counter)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def clock(self) -> VClock:
        """The context plus this version's own dot: what a reader of this version has seen."""
        if self.context.get(self.actor) >= self.counter:
            return self.context
        return self.context.with_entry(self.actor, self.counter, self.timestamp >> HLC_LOGICAL_BITS)

    def seen(self, actor: str) -> int:
        """``clock().get(actor)`` without building the clock: the highest counter of ``actor``
        this version covers (its context, plus its own dot)."""
        seen = self.context.get(actor)
        return self.counter if actor == self.actor and self.counter > seen else seen

    def obsoletes(self, other: Version) -> bool:
        """True when this version was written by someone who had seen ``other``."""
        return self.context.get(other.actor) >= other.counter

    def size(self) -> int:
        return (len(self.value) if self.value is not None else 0) + 32 * (len(self.context) + 1)


def merge_siblings(
    current: Iterable[Version], incoming: Iterable[Version], mode: ConflictMode = "siblings"
) -> tuple[Version, ...]:
    """Merge two version sets into the set of versions no other version obsoletes.

    Commutative, associative and idempotent, so replicas can apply writes, repairs and
    anti-entropy in any order and converge. Result order is deterministic (by dot).
    """
    if mode == "lww":
        # The highest timestamp wins outright (ties by dot); taking it over all versions, not
        # only the causally surviving ones, keeps the merge associative under clock skew.
        # Equal keys mean one dot, so one version: the first seen is kept. (One pass, no
        # intermediate dict: this runs on every write at every replica.)
        best: Version | None = None
        best_key: tuple[int, str, int] = (-1, "", 0)
        for version in (*current, *incoming):
            key = (version.timestamp, version.actor, version.counter)
            if best is None or key > best_key:
                best, best_key = version, key
        return () if best is None else (best,)
    by_dot: dict[tuple[str, int], Version] = {}
    for version in (*current, *incoming):
        by_dot.setdefault(version.dot, version)
    candidates = list(by_dot.values())
    survivors = [
        v for v in candidates if not any(o is not v and o.obsoletes(v) for o in candidates)
    ]
    survivors.sort(key=lambda v: v.dot)
    return tuple(survivors)


def context_of(versions: Iterable[Version]) -> VClock:
    """The clock covering every given version: the context handed back to a reader."""
    clock = VClock.empty()
    for version in versions:
        clock = clock.merge(version.clock())
    return clock


def new_version(
    current: Sequence[Version],
    context: VClock,
    actor: str,
    value: bytes | None,
    timestamp: int,
    max_clock_entries: int = DEFAULT_MAX_CLOCK_ENTRIES,
    expires: int = 0,
) -> Version:
    """Create the version a coordinator writes over ``current`` (its local record).

    The new dot's counter is above every counter this actor has used for the key and at least
    the (per-node strictly increasing) HLC timestamp, so an actor never reuses a dot, not even
    after a tombstone purge erased the key's history. The context is the client's (what the
    client has seen), pruned to a bounded size.

    Coordinators must replicate the whole merged record, not only the new version: a replica
    holding dot (A, c) then also holds every live version A wrote before it, which is what makes
    "context[A] >= c covers every dot (A, <= c)" safe.
    """
    highest = max((v.seen(actor) for v in current), default=0)
    counter = max(highest + 1, context.get(actor) + 1, timestamp)
    pruned = context.prune(max_clock_entries)
    return Version(actor, counter, pruned, value, timestamp, expires)


def live_values(versions: Iterable[Version]) -> list[bytes]:
    """The values a reader sees: every non-tombstone sibling."""
    return [v.value for v in versions if v.value is not None]


# --- hybrid logical clock --------------------------------------------------------------------


def hlc_now(last: int, wall_ms: int) -> int:
    """Next HLC timestamp after ``last`` given the wall clock (Kulkarni et al.).

    Layout: wall milliseconds in the high bits, a 16-bit logical counter in the low bits.
    """
    candidate = wall_ms << HLC_LOGICAL_BITS
    return candidate if candidate > last else last + 1


def hlc_observe(last: int, received: int, wall_ms: int) -> int:
    """Advance the local HLC past a timestamp received from elsewhere."""
    return hlc_now(max(last, received), wall_ms)


def hlc_wall_ms(timestamp: int) -> int:
    return timestamp >> HLC_LOGICAL_BITS


# --- encodings -------------------------------------------------------------------------------


def version_to_wire(version: Version) -> list[Any]:
    """``[actor, counter, context, timestamp, value]``, plus ``expires`` when it is set (so
    records without expiry keep their original encoding)."""
    v = version
    if v.expires:
        return [v.actor, v.counter, v.context.to_wire(), v.timestamp, v.value, v.expires]
    return [v.actor, v.counter, v.context.to_wire(), v.timestamp, v.value]


def version_from_wire(raw: object) -> Version:
    if not isinstance(raw, list | tuple) or len(raw) not in (5, 6):
        raise MalformedRecord("version must be a 5- or 6-element list")
    actor, counter, context, timestamp, value = raw[:5]
    expires = raw[5] if len(raw) == 6 else 0
    if type(expires) is not int or not 0 <= expires < _INT63:
        raise MalformedRecord("version expiry must be a non-negative int")
    if not isinstance(actor, str) or not actor:
        raise MalformedRecord("version actor must be a non-empty string")
    if type(counter) is not int or counter < 1:
        raise MalformedRecord("version counter must be a positive int")
    if type(timestamp) is not int or timestamp < 0:
        raise MalformedRecord("version timestamp must be a non-negative int")
    if value is not None and not isinstance(value, bytes):
        raise MalformedRecord("version value must be bytes or nil")
    try:
        clock = VClock.from_wire(context)
    except ValueError as exc:
        raise MalformedRecord(str(exc)) from exc
    return Version(actor, counter, clock, value, timestamp, expires)


def encode_record(versions: Sequence[Version]) -> bytes:
    """Serialize a key's sibling set for storage."""
    packed: bytes = msgpack.packb([version_to_wire(v) for v in versions], use_bin_type=True)
    return packed


def decode_record(data: bytes) -> tuple[Version, ...]:
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MalformedRecord(f"undecodable record: {exc}") from exc
    if not isinstance(raw, list):
        raise MalformedRecord("record must be a list of versions")
    return tuple([version_from_wire(item) for item in raw])


def encode_context(clock: VClock) -> str:
    """The opaque ``X-Ringkv-Context`` token: base64url of the msgpack'd clock, unpadded."""
    packed: bytes = msgpack.packb(clock.to_wire(), use_bin_type=True)
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def decode_context(token: str, max_entries: int = 4 * DEFAULT_MAX_CLOCK_ENTRIES) -> VClock:
    """Decode a client context; raises ``MalformedContext`` with a reason on any bad input."""
    token = token.strip()
    if not token:
        return VClock.empty()
    if len(token) > MAX_CONTEXT_CHARS:
        raise MalformedContext("context is too long")
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedContext("context is not valid base64url") from exc
    try:
        raw = msgpack.unpackb(packed, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MalformedContext("context is not a valid encoded clock") from exc
    try:
        clock = VClock.from_wire(raw)
    except ValueError as exc:
        raise MalformedContext(f"context is not a valid clock: {exc}") from exc
    if len(clock) > max_entries:
        raise MalformedContext(f"context has more than {max_entries} clock entries")
    return clock
