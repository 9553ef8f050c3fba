"""ringkv.core.errors: the one table of request failures and its peer translation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringkv.core.errors import (
    BY_CODE,
    BY_STATUS,
    REASONS,
    QuorumTimeout,
    ReplicationMismatch,
    TooManySiblings,
    Unavailable,
    from_peer,
    reason_of,
    to_http,
    to_peer,
)


def test_table_is_consistent() -> None:
    assert len(BY_CODE) == len(REASONS)  # one reason per code
    for reason in REASONS:
        assert 400 <= reason.status < 600
        assert len(reason.fields) == len(reason.http_fields)
        assert reason.client in {"RingkvError", "BadRequest", "Unavailable", "Timeout",
                                 "PreconditionFailed"}  # fmt: skip
    # the classes a client raises follow the status families it documents
    assert {r.client for r in REASONS if r.status in (400, 413, 414)} == {"BadRequest"}
    assert BY_STATUS[503].code == "unavailable"
    assert BY_STATUS[504].code == "timeout"


def test_retryable_only_where_repeating_the_same_request_can_succeed() -> None:
    assert {r.code for r in REASONS if r.retryable} == {"unavailable", "timeout"}


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_core_failures_round_trip_through_a_peer(a: int, b: int) -> None:
    for exc in (Unavailable(a, b), QuorumTimeout(a, b), TooManySiblings(a, b),
                ReplicationMismatch(a, b)):  # fmt: skip
        answer = to_peer(exc)
        assert answer["error"] == exc.reason.code
        back = from_peer(answer)
        assert type(back) is type(exc)
        assert back.failure_fields() == exc.failure_fields()
        assert str(back) == str(exc)


def test_unknown_peer_code_is_a_timeout() -> None:
    back = from_peer({"error": "something_newer", "message": "?"})
    assert isinstance(back, QuorumTimeout)


def test_http_fields_use_the_documented_names() -> None:
    status, code, message, extra = to_http(TooManySiblings(101, 100))
    assert (status, code, extra) == (409, "too_many_siblings", {"siblings": 101, "limit": 100})
    assert "101 siblings" in message


def test_reason_of_an_answer() -> None:
    assert reason_of(503, "overloaded") == BY_CODE["unavailable"]  # by status
    assert reason_of(409, "too_many_siblings") == BY_CODE["too_many_siblings"]
    assert reason_of(418, "teapot") is None
