"""Conditional writes: ``If-None-Match: *``, ``If-Match: <context>`` and ``If-Match: *``.

A condition is judged against the versions a coordinator's quorum read returned just before
the write (Riak's ``if_none_match`` / ``if_not_modified``), not by consensus: two conditional
writes that overlap in time can both pass and become siblings. Neither is lost.

- ``absent`` (``If-None-Match: *``): passes when no live value was seen (only tombstones,
  expired values or nothing). The write supersedes what was seen (tombstones, expired values).
- ``matches`` (``If-Match: <context>``): passes when what was seen is exactly the version set
  the context was read from (equal clocks; the clock entries' timestamps play no part).
- ``replace`` (``If-Match: *``): always passes; the write supersedes every version seen, so
  a blind overwrite leaves no sibling behind (except versions the read did not see).

``judge`` returns the context to write with, or ``None`` when the condition fails. Pure:
the reading node's clock is an argument (expired values are not live).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ringkv.core import errors
from ringkv.core.expiry import live_versions
from ringkv.core.versions import MalformedContext, VClock, Version, context_of, decode_context

ConditionKind = Literal["absent", "matches", "replace"]
#: The error code of a failed condition (HTTP 412; see ``core.errors``).
PRECONDITION_FAILED = errors.PRECONDITION_FAILED.code


class MalformedCondition(ValueError):
    """An ``If-Match`` / ``If-None-Match`` header that cannot be understood."""


@dataclass(frozen=True, slots=True)
class Condition:
    kind: ConditionKind
    context: VClock = field(default_factory=VClock.empty)


def _unquote(value: str) -> str:
    """``"abc"`` -> ``abc``: contexts may be sent as HTTP entity tags (quoted)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_condition(if_none_match: str | None, if_match: str | None) -> Condition | None:
    """The condition the headers ask for (``None``: an unconditional write).

    Raises ``MalformedCondition`` for both headers at once, ``If-None-Match`` other than
    ``*``, or an ``If-Match`` that is neither ``*`` nor a valid context."""
    if if_none_match is not None and if_match is not None:
        raise MalformedCondition("give If-None-Match or If-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise MalformedCondition("a write accepts only If-None-Match: * (create if absent)")
        return Condition("absent")
    if if_match is None:
        return None
    token = _unquote(if_match)
    if token == "*":
        return Condition("replace")
    if not token:
        raise MalformedCondition("If-Match must be * or a context from a read")
    try:
        clock = decode_context(token)
    except MalformedContext as exc:
        raise MalformedCondition(f"If-Match is not a valid context: {exc}") from None
    return Condition("matches", clock)


def same_clock(a: VClock, b: VClock) -> bool:
    """Equal as causal histories: the same counter for every actor (timestamps ignored)."""
    actors = set(a) | set(b)
    return all(a.get(actor) == b.get(actor) for actor in actors)


def judge(condition: Condition, seen: Sequence[Version], now_ms: int) -> VClock | None:
    """The context to write with when ``condition`` holds for the versions ``seen``, else None."""
    current = context_of(seen)
    if condition.kind == "absent":
        return current if not live_versions(seen, now_ms) else None
    if condition.kind == "matches":
        return condition.context if same_clock(condition.context, current) else None
    return current
