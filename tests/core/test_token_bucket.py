"""The token bucket keeps background work to its rate, with at most one second's burst."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.core.token_bucket import TokenBucket


def test_work_in_credit_does_not_wait_and_debt_waits_in_proportion() -> None:
    bucket = TokenBucket(now=0.0, level=100.0)
    assert bucket.take(60, rate=100.0, now=0.0) == 0.0
    assert bucket.take(90, rate=100.0, now=0.0) == pytest.approx(0.5)  # 50 short at 100/s
    # waiting the half second pays the debt; idling longer banks at most one second's worth
    assert bucket.take(0, rate=100.0, now=0.5) == 0.0
    assert bucket.take(150, rate=100.0, now=100.0) == pytest.approx(0.5)


def test_a_rate_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(now=0.0).take(1, rate=0.0, now=1.0)


@given(
    rate=st.floats(min_value=1.0, max_value=1e6),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=1e4), st.floats(min_value=0.0, max_value=2.0)),
        min_size=1,
        max_size=50,
    ),
)
def test_a_caller_that_waits_as_told_never_beats_the_rate_by_more_than_one_burst(
    rate: float, steps: list[tuple[float, float]]
) -> None:
    bucket, now, done = TokenBucket(now=0.0), 0.0, 0.0
    for amount, idle in steps:
        now += idle
        now += bucket.take(amount, rate, now)  # the caller sleeps as told before going on
        done += amount
    assert done <= rate * now + rate + 1e-6 * (done + rate)
