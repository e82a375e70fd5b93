"""A controllable clock for tests: event time moves only when the test moves it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rulecrm.timeutil import parse_timestamp


class Clock:
    """Deterministic "now" for a test; never reads the wall clock.

    `start` is an aware datetime or ISO 8601 text (text without an offset is read as UTC, a
    naive datetime likewise). The clock only moves forward: event time never runs backwards.
    """

    def __init__(self, start) -> None:
        self._now = _instant(start)

    def __repr__(self) -> str:
        return f"Clock({self._now.isoformat()!r})"

    def now(self) -> datetime:
        """The current instant (aware)."""
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by `delta` (a timedelta, >= 0); returns the new instant."""
        if not isinstance(delta, timedelta):
            raise TypeError(f"advance() takes a timedelta, found {type(delta).__name__}")
        if delta < timedelta(0):
            raise ValueError(f"a clock only moves forward; advance() got {delta}")
        self._now = self._now + delta
        return self._now

    def set(self, instant) -> datetime:
        """Jump to `instant` (datetime or ISO text), which must not be earlier than now."""
        target = _instant(instant)
        if target < self._now:
            raise ValueError(f"a clock only moves forward: {target.isoformat()} is before {self._now.isoformat()}")
        self._now = target
        return self._now


def _instant(value) -> datetime:
    if isinstance(value, str):
        return parse_timestamp(value, timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    raise TypeError(f"expected a datetime or ISO 8601 text, found {type(value).__name__}")
