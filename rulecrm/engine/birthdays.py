"""The next birthday greeting instant; 29 February falls on 28 February in other years."""
from __future__ import annotations

import calendar
import re
from datetime import datetime, time

_BIRTHDAY = re.compile(r"^(?:(\d{4})-|--)?(\d{2})-(\d{2})$")


def parse_birthday(text) -> tuple[int | None, int, int] | None:
    """'1990-02-29', '02-29' or '--02-29' -> (year, month, day); None when unusable."""
    if not isinstance(text, str):
        return None
    match = _BIRTHDAY.match(text.strip())
    if not match:
        return None
    year = int(match.group(1)) if match.group(1) else None
    month, day = int(match.group(2)), int(match.group(3))
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        return None
    if day > calendar.monthrange(2000, month)[1]:  # 2000 is a leap year: allows 02-29
        return None
    return year, month, day


def occurrence(year: int, month: int, day: int, at: time, tz) -> datetime:
    if month == 2 and day == 29 and not calendar.isleap(year):
        day = 28
    return datetime(year, month, day, at.hour, at.minute, tzinfo=tz)


def next_birthday(birthday, at: time, tz, not_before: datetime) -> datetime | None:
    """The first greeting instant at or after `not_before`, in zone `tz`."""
    parsed = parse_birthday(birthday)
    if parsed is None:
        return None
    _, month, day = parsed
    year = not_before.astimezone(tz).year
    for candidate_year in (year, year + 1):
        instant = occurrence(candidate_year, month, day, at, tz)
        if instant >= not_before:
            return instant
    return occurrence(year + 2, month, day, at, tz)
