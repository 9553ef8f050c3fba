"""Validators: the entity tag of a key's version set and the If-None-Match rules for reads.

A read answers with the key's reconciled version set -- one value, siblings, or tombstones.
Its ``ETag`` is a digest of the *dots* of that set: a dot names exactly one version (its value
and its context; an actor never reuses a dot), so equal dot sets mean byte-identical answers
and any change -- a new write, a new sibling, a delete -- changes the tag. The context alone
would not do: ``{B1 over A1}`` and the siblings ``{A1, B1}`` have the same clock. The tag is
strong (RFC 9110 §8.8.1): equal tags mean equal bodies.

``If-None-Match`` on a read follows RFC 9110 §13.1.2 with the weak comparison: the condition
is false (the answer is ``304 Not Modified``) when the key has a current representation and
``*`` or one of the listed tags names it. A key that reads as absent (``404``: no versions,
or only tombstones) has none, so the header is ignored there (§13.2.1) and the ``404`` is
answered in full; a ``300`` (siblings) is the key's representation like a ``200`` and is
validated the same way. A value that has expired (``core.expiry``) by the reader's clock
``now_ms`` is no longer part of the representation: its dot is tagged as expired, so the tag
changes at the expiry instant although no write happened. ``If-None-Match`` on writes
(create-only ``*``) is a different rule of a different method and lives elsewhere.

Everything here is pure.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from ringkv.core.versions import MalformedRecord, Version

#: The digest size of an entity tag, in bytes (22 base64url characters).
ETAG_DIGEST_BYTES = 16
#: An If-None-Match header longer than this is refused before parsing.
MAX_CONDITION_CHARS = 8 * 1024


class MalformedCondition(ValueError):
    """An If-None-Match header that is not ``*`` or a list of entity tags."""


def _expired(expires: int, now_ms: int | None) -> bool:
    return now_ms is not None and 0 < expires <= now_ms


def etag_of(versions: Iterable[Version], now_ms: int | None = None) -> str:
    """The strong entity tag (quoted) of a key's version set, tombstones included; values
    expired at ``now_ms`` are marked as such (None: expiry not judged)."""
    return _etag_of_dots([_dot(v.actor, v.counter, _expired(v.expires, now_ms)) for v in versions])


def _dot(actor: str, counter: int, expired: bool) -> tuple[str, int] | tuple[str, int, int]:
    return (actor, counter, 1) if expired else (actor, counter)


def _etag_of_dots(dots: list[tuple[str, int] | tuple[str, int, int]]) -> str:
    dots.sort()
    packed = msgpack.packb([list(d) for d in dots], use_bin_type=True)
    digest = hashlib.blake2b(packed, digest_size=ETAG_DIGEST_BYTES, person=b"ringkv-etag").digest()
    return '"' + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii") + '"'


def digest_of_record(record: bytes, now_ms: int | None = None) -> tuple[str, bool]:
    """``(etag_of(versions, now_ms), has_value(versions, now_ms))`` of an encoded record
    (``versions.encode_record``; ``b""`` for none), without building its versions: what a
    replica answers to a digest read."""
    if not record:
        return _etag_of_dots([]), False
    try:
        raw = msgpack.unpackb(record, raw=False, strict_map_key=True)
        dots, found = [], False
        for item in raw:
            gone = _expired(int(item[5]) if len(item) > 5 else 0, now_ms)
            dots.append(_dot(str(item[0]), int(item[1]), gone))
            found = found or (item[4] is not None and not gone)
    except (ValueError, TypeError, IndexError, KeyError, msgpack.ExtraData) as exc:
        raise MalformedRecord(f"undecodable record: {exc}") from exc
    return _etag_of_dots(dots), found


def has_value(versions: Iterable[Version], now_ms: int | None = None) -> bool:
    """True when the set has a current representation: a value that is not a tombstone (nor
    expired at ``now_ms``)."""
    return any(v.value is not None and not _expired(v.expires, now_ms) for v in versions)


@dataclass(frozen=True, slots=True)
class IfNoneMatch:
    """A parsed If-None-Match: ``any`` for ``*``, else the opaque tags (weakness dropped,
    since reads compare weakly)."""

    any: bool
    tags: frozenset[str]


def _is_etagc(char: str) -> bool:
    code = ord(char)
    return code == 0x21 or 0x23 <= code <= 0x7E or 0x80 <= code <= 0xFF


def parse_if_none_match(header: str) -> IfNoneMatch:
    """Parse ``"*"`` or ``#entity-tag`` (RFC 9110 §13.1.2, §8.8.3; empty list elements are
    allowed, §5.6.1). Raises ``MalformedCondition`` on anything else."""
    if len(header) > MAX_CONDITION_CHARS:
        raise MalformedCondition("If-None-Match is too long")
    text = header.strip(" \t")
    if text == "*":
        return IfNoneMatch(True, frozenset())
    tags: set[str] = set()
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char in " \t,":
            i += 1
            continue
        if text.startswith("W/", i):
            i += 2
        if i >= end or text[i] != '"':
            raise MalformedCondition('If-None-Match must be * or a list of "entity-tags"')
        close = text.find('"', i + 1)
        if close < 0:
            raise MalformedCondition("If-None-Match has an unterminated entity-tag")
        opaque = text[i : close + 1]
        if not all(_is_etagc(c) for c in opaque[1:-1]):
            raise MalformedCondition("If-None-Match has a character not allowed in an entity-tag")
        tags.add(opaque)
        i = close + 1
        while i < end and text[i] in " \t":
            i += 1
        if i < end and text[i] != ",":
            raise MalformedCondition("If-None-Match entity-tags must be separated by commas")
    if not tags:
        raise MalformedCondition("If-None-Match names no entity-tag")
    return IfNoneMatch(False, frozenset(tags))


def _opaque(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def not_modified(condition: IfNoneMatch | None, etag: str, found: bool) -> bool:
    """True when a read whose reconciled set has tag ``etag`` (and, when ``found``, a value)
    answers ``304``: the condition names the current representation (weak comparison)."""
    if condition is None or not found:
        return False
    return condition.any or _opaque(etag) in condition.tags
