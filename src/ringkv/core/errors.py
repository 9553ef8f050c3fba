"""Request failure reasons: one table, as Cassandra's ``RequestFailureReason``.

Each ``Reason`` is declared once, with its code (the ``error`` of the JSON body and of a
peer's answer), its HTTP status, whether a client may send the same request again as it is
(``retryable``), its fields and the client exception it becomes. Four translations are derived
from it and from nothing else:

- exception -> peer answer (``to_peer``): a coordinator answering a forwarded write;
- peer answer -> exception (``from_peer``): the node that forwarded it;
- exception -> HTTP (``to_http``): status, code, message and body fields of the answer;
- HTTP -> client exception (``reason_of``): which ``RingkvError`` subclass a client raises.

An exception belongs to a reason by a ``reason`` class attribute (``RequestFailure``); the
exceptions raised outside the core (a full disk, a failed condition) declare theirs with
``@failure(...)``. Reasons with no exception (``bad_request``...) are raised by the HTTP layer
itself and appear here for the client's mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    status: int
    retryable: bool
    #: The exception's attributes, sent to peers under these names...
    fields: tuple[str, ...] = ()
    #: ...and under these in the HTTP body (same order; documented in docs/api.md).
    http_fields: tuple[str, ...] = ()
    #: The class ``ringkv.client`` raises for it.
    client: str = "RingkvError"
    #: The HTTP message when the node's own wording should not reach clients.
    http_message: str | None = None


UNAVAILABLE = Reason("unavailable", 503, True, ("required", "alive"), ("required", "alive"),
                     "Unavailable")  # fmt: skip
TIMEOUT = Reason("timeout", 504, True, ("required", "acks"), ("required", "acks"), "Timeout")
TOO_MANY_SIBLINGS = Reason("too_many_siblings", 409, False, ("count", "limit"),
                           ("siblings", "limit"))  # fmt: skip
INSUFFICIENT_STORAGE = Reason(
    "insufficient_storage", 507, False, http_message="the node's disk is full; nothing was written"
)
PRECONDITION_FAILED = Reason("precondition_failed", 412, False, ("context",), ("context",),
                             "PreconditionFailed")  # fmt: skip
REPLICATION_MISMATCH = Reason("replication_mismatch", 500, False, ("expected", "got"),
                              ("expected", "got"))  # fmt: skip
BAD_REQUEST = Reason("bad_request", 400, False, client="BadRequest")
VALUE_TOO_LARGE = Reason("value_too_large", 413, False, client="BadRequest")
KEY_TOO_LONG = Reason("key_too_long", 414, False, client="BadRequest")

REASONS: tuple[Reason, ...] = (
    UNAVAILABLE,
    TIMEOUT,
    TOO_MANY_SIBLINGS,
    INSUFFICIENT_STORAGE,
    PRECONDITION_FAILED,
    REPLICATION_MISMATCH,
    BAD_REQUEST,
    VALUE_TOO_LARGE,
    KEY_TOO_LONG,
)
BY_CODE: dict[str, Reason] = {r.code: r for r in REASONS}
#: The first reason of each status: what an answer with an unknown code of that status means
#: (any 503 is "unavailable" to a client, any 400 a bad request).
BY_STATUS: dict[int, Reason] = {}
for _r in REASONS:
    BY_STATUS.setdefault(_r.status, _r)
del _r

_CLASSES: dict[str, type[RequestFailure]] = {}


class RequestFailure(Exception):
    """The exceptions of the table: ``reason``, and how fields make one again."""

    reason: ClassVar[Reason]

    def failure_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.reason.fields}

    @classmethod
    def from_fields(cls, message: str, fields: dict[str, Any]) -> RequestFailure:
        return cls(*(int(fields[name]) for name in cls.reason.fields))


def failure(reason: Reason) -> Any:
    """Class decorator: ``reason`` is what the class means (one class per reason)."""

    def register(cls: type[RequestFailure]) -> type[RequestFailure]:
        cls.reason = reason
        _CLASSES[reason.code] = cls
        return cls

    return register


def exception_class(code: str) -> type[RequestFailure] | None:
    return _CLASSES.get(code)


@failure(UNAVAILABLE)
class Unavailable(RequestFailure):
    """Fewer live replicas than the request needs: refused before anything was sent."""

    def __init__(self, required: int, alive: int) -> None:
        super().__init__(f"{required} replicas required but only {alive} reachable")
        self.required = required
        self.alive = alive


@failure(TIMEOUT)
class QuorumTimeout(RequestFailure):
    """The quorum was not reached in time: a write may be partly applied."""

    def __init__(self, required: int, acks: int) -> None:
        super().__init__(f"{required} replicas required but only {acks} answered in time")
        self.required = required
        self.acks = acks


@failure(TOO_MANY_SIBLINGS)
class TooManySiblings(RequestFailure):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"the write would leave {count} siblings (limit {limit}); read the key and write "
            "back with its context to resolve them"
        )
        self.count = count
        self.limit = limit


@failure(REPLICATION_MISMATCH)
class ReplicationMismatch(RequestFailure):
    """A quorum resolved for another replication factor than this node's (a peer configured
    with a different N): refused rather than placed with two different N."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"the request's quorum is for N={got} but this node has N={expected}")
        self.expected = expected
        self.got = got


def to_peer(exc: BaseException) -> dict[str, Any]:
    """A peer's answer for ``exc``; raises ``exc`` again when it is not in the table."""
    if not isinstance(exc, RequestFailure):
        raise exc
    answer = exc.failure_fields()
    answer["error"] = exc.reason.code
    answer["message"] = str(exc)
    return answer


def from_peer(answer: dict[str, Any]) -> RequestFailure:
    """The exception for a peer's error answer. A code this node does not know (a newer peer)
    is a timeout: the outcome is unknown, as when no answer came."""
    cls = _CLASSES.get(str(answer.get("error")))
    if cls is None:
        return QuorumTimeout(int(answer.get("required", 0)), int(answer.get("acks", 0)))
    return cls.from_fields(str(answer.get("message", "")), answer)


def to_http(exc: BaseException) -> tuple[int, str, str, dict[str, Any]]:
    """(status, code, message, body fields) of the HTTP answer for ``exc``; raises ``exc``
    again when it is not in the table."""
    if not isinstance(exc, RequestFailure):
        raise exc
    reason = exc.reason
    fields = exc.failure_fields()
    extra = {http: fields[name] for name, http in zip(reason.fields, reason.http_fields,
                                                       strict=True)}  # fmt: skip
    return reason.status, reason.code, reason.http_message or str(exc), extra


def reason_of(status: int, code: str) -> Reason | None:
    """What an HTTP error answer means: its code's reason, else its status's."""
    return BY_CODE.get(code) or BY_STATUS.get(status)
