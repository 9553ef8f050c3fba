"""Conditional writes and overwrites: read at the write's quorum, judge, then write.

``If-None-Match: *`` (create only), ``If-Match: <context>`` (write only over exactly that
version) and ``If-Match: *`` (replace whatever is there) are judged by
``ringkv.core.conditions`` against what a quorum read just returned -- the read asks as many
replicas as the write will (W), with the same ``strict`` -- and the write then goes through the
coordinator as usual, with the context the judgement produced. The read and the write are not
one atomic step: see docs/api.md for what that guarantees.
"""

from __future__ import annotations

import time
from typing import Any

from ringkv.core.conditions import Condition, MalformedCondition, judge, parse_condition
from ringkv.core.errors import PRECONDITION_FAILED, RequestFailure, failure
from ringkv.core.quorum import Quorum
from ringkv.core.versions import VClock, Version, context_of, decode_context, encode_context
from ringkv.node.coordinator import Coordinator

IF_NONE_MATCH = "if-none-match"
IF_MATCH = "if-match"


@failure(PRECONDITION_FAILED)
class PreconditionFailed(RequestFailure):
    """The condition did not hold for what the quorum read saw (HTTP 412); nothing written."""

    def __init__(self, condition: Condition, seen: VClock) -> None:
        reason = {
            "absent": "the key has a live value (If-None-Match: *)",
            "matches": "the key changed since the context given in If-Match was read",
            "replace": "",
        }[condition.kind]
        super().__init__(f"condition failed: {reason}; nothing was written")
        self.seen = seen

    @property
    def context(self) -> str:
        """What the node saw, as a client context (the answer's ``context`` field)."""
        return encode_context(self.seen)

    @classmethod
    def from_fields(cls, message: str, fields: dict[str, Any]) -> PreconditionFailed:
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.seen = decode_context(str(fields["context"]))
        return exc


def condition_of(
    headers: dict[str, str], repeated: set[str] | None, has_context: bool
) -> Condition | None:
    """The request's condition from its headers; ``MalformedCondition`` when they are unclear
    (repeated, both given, or given together with ``X-Ringkv-Context``)."""
    for name in (IF_NONE_MATCH, IF_MATCH):
        if repeated is not None and name in repeated:
            raise MalformedCondition(f"{name} given more than once")
    condition = parse_condition(headers.get(IF_NONE_MATCH), headers.get(IF_MATCH))
    if condition is not None and has_context:
        raise MalformedCondition(
            "a conditional write takes its context from the condition: "
            "do not send X-Ringkv-Context with If-Match or If-None-Match"
        )
    return condition


async def conditional_put(
    coordinator: Coordinator,
    key: bytes,
    value: bytes | None,
    condition: Condition,
    quorum: Quorum,
    ttl: int = 0,
) -> VClock:
    """Write ``value`` (``None`` deletes) if ``condition`` holds at the write's quorum."""
    seen: tuple[Version, ...] = await coordinator.get(key, Quorum(quorum.n, quorum.required,
                                                                  quorum.strict))  # fmt: skip
    context = judge(condition, seen, int(time.time() * 1000))
    if context is None:
        raise PreconditionFailed(condition, context_of(seen))
    return await coordinator.put(key, value, context, quorum, ttl=ttl)
