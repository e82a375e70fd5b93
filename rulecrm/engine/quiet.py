"""Quiet hours: whether a local instant falls inside the window, and when the window ends.

The window is a range of local clock times, `[start, end)`, that may wrap midnight. A held send is
released at the first instant at or after it was due whose local time is outside the window.
On DST nights the local clock jumps, so the wall-clock `end` of that night may not exist
(spring forward), may occur twice (fall back), or the clock may leave the window by jumping
rather than by reaching `end`; the release is computed in elapsed time, segment by segment
between the zone's offset changes, never from a wall-clock `end` resolved after the fact.
"""
from __future__ import annotations

from datetime import datetime, time, timedelta

from rulecrm.timeutil import fixed_offset

_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)
# Offset changes crossed while looking for the end of one window: a window lasts under a day and
# no zone changes its offset more than twice in a day; the bound only guards against a loop.
_MAX_SEGMENTS = 8


def _clock(local: datetime) -> timedelta:
    """Time of day as a duration since local midnight."""
    return timedelta(hours=local.hour, minutes=local.minute, seconds=local.second, microseconds=local.microsecond)


def _since_midnight(value: time) -> timedelta:
    return timedelta(hours=value.hour, minutes=value.minute, seconds=value.second, microseconds=value.microsecond)


def is_quiet(clock: time | timedelta, window: tuple[time, time]) -> bool:
    """Whether a local time of day falls inside the window `[start, end)` (which may wrap midnight)."""
    start, end = (_since_midnight(t) for t in window)
    at = clock if isinstance(clock, timedelta) else _since_midnight(clock)
    if start < end:
        return start <= at < end
    return at >= start or at < end


def _left_on_clock(clock: timedelta, window: tuple[time, time]) -> timedelta:
    """Local clock time from `clock` (inside the window) to the window's end, if the clock ran evenly."""
    end = _since_midnight(window[1])
    return end - clock if clock < end else _DAY - clock + end


def _offset_change(tz, start: datetime, stop: datetime) -> datetime | None:
    """The first instant in (start, stop] whose UTC offset in `tz` differs from the one at `start`.

    Compares the two ends only: an offset that changes and changes back within one window (under
    a day) does not occur in the time zone database.
    """
    offset = start.astimezone(tz).utcoffset()
    if stop.astimezone(tz).utcoffset() == offset:
        return None
    low, high = start, stop  # offset(low) == offset, offset(high) != offset
    while high - low > _MICROSECOND:
        middle = low + (high - low) // 2
        if middle.astimezone(tz).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high


def quiet_until(now: datetime, window: tuple[time, time], tz) -> datetime | None:
    """When a send due at `now` may go: None when `now` is outside the window (local to `tz`),
    else the first later instant whose local time is outside it (with a fixed UTC offset).
    """
    local = now.astimezone(tz)
    if not is_quiet(_clock(local), window):
        return None
    at = fixed_offset(now)  # elapsed-time arithmetic from here on
    for _ in range(_MAX_SEGMENTS):
        # While the offset stays the same, the local clock runs with elapsed time: it leaves the
        # window when it reaches `end`. An offset change before then makes the clock jump; look
        # again from the jump (it may land outside the window, or inside with a new distance).
        end = at + _left_on_clock(_clock(at.astimezone(tz)), window)
        jump = _offset_change(tz, at, end)
        if jump is None:
            return fixed_offset(end.astimezone(tz))
        at = jump
        if not is_quiet(_clock(at.astimezone(tz)), window):
            return fixed_offset(at.astimezone(tz))
    return fixed_offset(at.astimezone(tz))
