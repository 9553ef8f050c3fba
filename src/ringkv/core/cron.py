"""Cron schedules (the five-field syntax of crontab(5) and Kubernetes CronJobs), in UTC.

``minute hour day-of-month month day-of-week``; each field is ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n``, or a comma-separated list of those. Day of week 0 and 7
are Sunday. As in cron, when both day fields are restricted a day matches if either does. The
shorthands ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and ``@yearly`` are accepted.

Pure: times are arguments (seconds since the epoch), never read from a clock.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))  # fmt: skip
_SHORTHANDS = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}  # fmt: skip
#: How far ahead ``next_after`` looks (a schedule like Feb 30 never fires).
HORIZON_DAYS = 366 * 5


class CronError(ValueError):
    """A schedule that is not valid cron syntax (the message says which field)."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday ... 6 = Sunday (Python's)
    any_day: bool
    any_weekday: bool

    def day_matches(self, year: int, month: int, day: int) -> bool:
        if month not in self.months:
            return False
        weekday = calendar.weekday(year, month, day)
        if self.any_day or self.any_weekday:
            return day in self.days and weekday in self.weekdays
        return day in self.days or weekday in self.weekdays


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = lo, hi
            elif "-" in base:
                a, b = base.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(base)
                if step_text:
                    end = hi
        except ValueError:
            raise CronError(f"{name}: {part!r} is not a number, range or step") from None
        if step < 1 or not lo <= start <= end <= hi:
            raise CronError(f"{name}: {part!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(schedule: str) -> Cron:
    text = _SHORTHANDS.get(schedule.strip(), schedule.strip())
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"a schedule has 5 fields (minute hour day month weekday): {schedule!r}")
    minutes, hours, days, months, cron_days = (
        _field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS, strict=True)
    )
    weekdays = frozenset((d - 1) % 7 for d in cron_days)  # cron 0/7 = Sunday -> Python 6
    return Cron(minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")


def next_after(cron: Cron, after: float) -> float | None:
    """The first scheduled minute strictly after ``after`` (seconds since the epoch, UTC), or
    None if there is none within ``HORIZON_DAYS``."""
    minute = int(after // 60) + 1
    day = minute // 1440
    first = minute % 1440
    for offset in range(HORIZON_DAYS):
        y, m, d = _ymd(day + offset)
        if not cron.day_matches(y, m, d):
            first = 0
            continue
        for hour in sorted(cron.hours):
            for mm in sorted(cron.minutes):
                at = hour * 60 + mm
                if at >= first:
                    return float(((day + offset) * 1440 + at) * 60)
        first = 0
    return None


def _ymd(days: int) -> tuple[int, int, int]:
    """The (year, month, day) of a day number since 1970-01-01 (Hinnant's civil_from_days)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def due(schedule: str, last: float, now: float) -> bool:
    """Whether a run is due: a scheduled minute fell in (last, now]."""
    upcoming = next_after(parse(schedule), last)
    return upcoming is not None and upcoming <= now
