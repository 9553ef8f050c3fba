"""Cron schedules (ringkv.core.cron): examples and properties against a minute-by-minute scan."""

from __future__ import annotations

import calendar
import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.cron import CronError, due, next_after, parse


def ts(text: str) -> float:
    return calendar.timegm(datetime.datetime.fromisoformat(text).timetuple())


def test_examples() -> None:
    assert next_after(parse("*/15 * * * *"), ts("2026-12-05 01:07:30")) == ts("2026-12-05 01:15")
    assert next_after(parse("0 2 * * *"), ts("2026-12-05 02:00:00")) == ts("2026-12-06 02:00")
    assert next_after(parse("@weekly"), ts("2026-12-05 00:00")) == ts("2026-12-06 00:00")  # Sun
    assert next_after(parse("30 4 1 * 1"), ts("2026-12-01 05:00")) == ts("2026-12-07 04:30")
    assert next_after(parse("0 0 29 2 *"), ts("2026-03-01 00:00")) == ts("2028-02-29 00:00")
    assert next_after(parse("0 0 30 2 *"), ts("2026-03-01 00:00")) is None
    assert due("* * * * *", ts("2026-12-05 01:00"), ts("2026-12-05 01:01"))
    assert not due("0 * * * *", ts("2026-12-05 01:00"), ts("2026-12-05 01:59:59"))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "*/0 * * * *",
        "a * * * *",
        "5-1 * * * *",
        "* * 0 * *",
        "* * * 13 *",
    ],
)
def test_refused(bad: str) -> None:
    with pytest.raises(CronError):
        parse(bad)


def _matches(schedule: str, t: float) -> bool:
    c = parse(schedule)
    d = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return (d.minute in c.minutes and d.hour in c.hours
            and c.day_matches(d.year, d.month, d.day))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    minute=st.sampled_from(["*", "*/7", "5", "0-10/3", "1,31,59"]),
    hour=st.sampled_from(["*", "3", "*/5", "22-23"]),
    dom=st.sampled_from(["*", "1", "13-15", "*/10"]),
    dow=st.sampled_from(["*", "0", "1-5", "6,7"]),
    start=st.integers(ts("2026-01-01 00:00"), ts("2027-01-01 00:00")),
)
def test_next_after_is_the_first_match(minute: str, hour: str, dom: str, dow: str,
                                       start: int) -> None:  # fmt: skip
    schedule = f"{minute} {hour} {dom} * {dow}"
    found = next_after(parse(schedule), start)
    assert found is not None and found > start and _matches(schedule, found)
    t = (start // 60 + 1) * 60
    while t < found:  # nothing matched before it
        assert not _matches(schedule, t), (schedule, t)
        t += 60
