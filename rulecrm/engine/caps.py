"""Frequency caps: count sent messages in rolling or calendar windows, and find when a cap allows again."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)

_CALENDAR_HORIZON = {"day": timedelta(days=2), "week": timedelta(days=8), "month": timedelta(days=32)}


def applies(cap, message_kind: str, channel: str | None) -> bool:
    return message_kind in cap.kinds and (cap.channels is None or channel in cap.channels)


def micros(instant: datetime) -> int:
    """Exact integer microseconds since the epoch: window edges must not suffer float rounding."""
    return (instant - EPOCH) // MICROSECOND


def _counted(cap, sends, channel):
    """Send instants (microseconds) this cap counts for a send on `channel`, ascending."""
    return sorted(
        at for at, kind, sent_channel in sends
        if kind in cap.kinds
        and (cap.channels is None or sent_channel in cap.channels)
        and (not cap.per_channel or sent_channel == channel)
    )


def period_bounds(period: str, now: datetime, tz) -> tuple[datetime, datetime]:
    """[start, end) of the calendar day / ISO week / month containing `now` in zone `tz`."""
    local = now.astimezone(tz)
    day = local.date()
    if period == "day":
        start_day, end_day = day, day + timedelta(days=1)
    elif period == "week":
        start_day = day - timedelta(days=day.weekday())  # ISO weeks start on Monday
        end_day = start_day + timedelta(days=7)
    else:
        start_day = day.replace(day=1)
        end_day = (start_day + timedelta(days=32)).replace(day=1)
    return (
        datetime(start_day.year, start_day.month, start_day.day, tzinfo=tz),
        datetime(end_day.year, end_day.month, end_day.day, tzinfo=tz),
    )


def check(cap, sends, channel, now: datetime, tz) -> tuple[bool, datetime | None]:
    """(allowed, earliest instant it would be allowed when not). `sends` are all at or before now."""
    counted = _counted(cap, sends, channel)
    t = micros(now)
    if cap.window == "calendar":
        start, end = period_bounds(cap.period, now, tz)
        start_us = micros(start)
        in_window = [s for s in counted if start_us <= s <= t]
        if len(in_window) < cap.max:
            return True, None
        return False, (end if cap.max > 0 else None)
    per = cap.per // MICROSECOND
    in_window = [s for s in counted if t - per < s <= t]  # the rolling window is (t - per, t]
    if len(in_window) < cap.max:
        return True, None
    if cap.max == 0:
        return False, None
    # Allowed again once enough of the oldest sends have left the window.
    oldest_to_expire = in_window[len(in_window) - cap.max]
    return False, (EPOCH + (oldest_to_expire + per) * MICROSECOND).astimezone(now.tzinfo)


def horizon(caps) -> timedelta:
    """How far back sends must be remembered for every cap to count correctly."""
    longest = timedelta(0)
    for cap in caps:
        span = cap.per if cap.window == "rolling" else _CALENDAR_HORIZON[cap.period]
        longest = max(longest, span)
    return longest
