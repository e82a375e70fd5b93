"""Quiet hours: whether a local instant falls inside the window, and when the window ends."""
from __future__ import annotations

from datetime import datetime, time, timedelta


def quiet_until(now: datetime, window: tuple[time, time], tz) -> datetime | None:
    """The end of the quiet window containing `now` (local to `tz`), or None when not quiet.

    The window is [start, end): a send exactly at the end is allowed. It may wrap midnight.
    """
    start, end = window
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_day = local.date()
    else:  # wraps midnight, e.g. 22:00-08:00
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    naive_end = datetime.combine(end_day, end)
    # Resolve the wall-clock end in the zone (fold=0: the first occurrence on DST changes).
    return naive_end.replace(tzinfo=tz)
