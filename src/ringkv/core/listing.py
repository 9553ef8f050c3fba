"""Key listing: ring-order pages and cursors that name a ring position.

A listing walks the hash space upwards from position 0 to ``RING_SIZE - 1`` -- the order the
keys are stored in (ring position, then key bytes) -- one token range at a time. The cursor
handed to the client names the last (position, key) the scan has passed, not a node or a range,
so the next page resumes strictly after it whatever happened meanwhile: a replica died (another
replica of the range continues), nodes joined or left (the ranges are recomputed from the ring
as it is then).

``segments`` cuts the ring into linear pieces ``[lo, hi]`` in ascending order, each with the
token that ends its range (every key of a piece has the same replicas: the preference list of
that token); the range that wraps past zero gives two pieces. Pure.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from ringkv.core.ring import RING_SIZE, Ring

#: Keys per page unless ``limit`` says otherwise, and the most a page may hold.
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
#: Records one replica examines per call (bounds the time it spends off other requests), and
#: records per second a listing may make the replicas examine (the scan's throttle).
MAX_SCAN_PER_CALL = 2000
LIST_SCAN_RATE = 20000.0
#: A page ends after this long even if short of ``limit`` keys (a selective prefix); only a
#: missing cursor means the listing is complete.
PAGE_SECONDS = 2.0

#: Where a scan has got to: (ring position, key); the scan resumes strictly after it.
Position = tuple[int, bytes]
START: Position = (-1, b"")


class MalformedCursor(ValueError):
    """A cursor a client sent that is not one this API handed out."""


@dataclass(frozen=True, slots=True)
class Segment:
    lo: int
    hi: int
    token: int  # the token ending the range this piece belongs to


def segments(ring: Ring, after: int = -1) -> list[Segment]:
    """The ring's linear pieces in ascending order, from the one holding ``after + 1`` on
    (``after`` = -1: all of them). Empty for an empty ring."""
    pieces: list[Segment] = []
    for r in ring.ranges():
        if r.start < r.end:
            pieces.append(Segment(r.start + 1, r.end, r.end))
        else:  # wraps past zero (or the whole ring, for a single token)
            if r.start + 1 < RING_SIZE:
                pieces.append(Segment(r.start + 1, RING_SIZE - 1, r.end))
            pieces.append(Segment(0, r.end, r.end))
    pieces.sort(key=lambda s: s.lo)
    return [s for s in pieces if s.hi > after]


def merge_listings(
    answers: Sequence[tuple[Sequence[Position], Position | None]], limit: int
) -> tuple[list[Position], Position | None]:
    """Merge several replicas' answers for the same span (after, hi]: each gave its keys and
    where it stopped (None: it reached ``hi``). The union is complete only up to the smallest
    stop -- beyond it some replica has not looked yet -- so keys past it are left for the next
    call. Returns (keys in ring order, at most ``limit``; the position to resume after, None
    when every replica reached ``hi``)."""
    stops = [stop for _, stop in answers if stop is not None]
    bound = min(stops) if stops else None
    merged = sorted({p for keys, _ in answers for p in keys if bound is None or p <= bound})
    if len(merged) > limit:
        merged = merged[:limit]
        bound = merged[-1]
    return merged, bound


def encode_cursor(position: Position) -> str:
    h, key = position
    return base64.urlsafe_b64encode(h.to_bytes(8, "big") + key).rstrip(b"=").decode("ascii")


def decode_cursor(token: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise MalformedCursor("cursor is not valid base64url") from None
    if len(raw) < 8 or len(raw) > 8 + 257:  # a key, or the mark "after every key here"
        raise MalformedCursor("cursor is not one this API handed out")
    return int.from_bytes(raw[:8], "big"), raw[8:]


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIST_LIMIT
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise ValueError(f"limit={raw!r} must be a whole number 1..{MAX_LIST_LIMIT}")
    limit = int(text)
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit={raw} must be between 1 and {MAX_LIST_LIMIT}")
    return limit
