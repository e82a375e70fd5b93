"""Durations, time zones and ISO 8601 timestamps, parsed strictly and the same way everywhere."""
from __future__ import annotations

import functools
import os
import re
import zoneinfo
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
DURATION_SYNTAX = "a duration such as 45s, 15m, 2h, 30d, 1w or 1d12h"
# The longest duration a rule file may hold, and the longest delay the engine schedules: every
# timestamp arithmetic stays representable for events within 100 years of the years 1 and 9999.
MAX_DURATION = timedelta(days=36500)  # 100 years


def parse_duration(text: str) -> timedelta:
    """'30d' -> timedelta(days=30); '1d12h' is allowed. Raises ValueError with the syntax, or when
    the value is too large to represent at all (see `within_limit` for the rule-file bound)."""
    text = text.strip()
    pos = 0
    total = timedelta(0)
    if not text:
        raise ValueError(f"expected {DURATION_SYNTAX}")
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        try:
            total += float(match.group(1)) * _UNITS[match.group(2)]
        except (OverflowError, ValueError):
            raise ValueError(f"duration {text[:40]!r} is too large") from None
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"expected {DURATION_SYNTAX}, found {text!r}")
    return total


def within_limit(delta: timedelta) -> bool:
    """Whether a duration is at most MAX_DURATION long, either way."""
    return -MAX_DURATION <= delta <= MAX_DURATION


def add_delay(at: datetime, delta: timedelta) -> datetime | None:
    """`at + delta` (never before `at`), or None when the delay is longer than MAX_DURATION either
    way or the instant leaves the representable range: the caller skips such a delay."""
    if not within_limit(delta):
        return None
    try:
        due = at + delta
        due.astimezone(timezone.utc)  # the timer queue orders by UTC
    except (OverflowError, ValueError):
        return None
    return max(due, at)


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of a duration: 90d, 2h30m, 45s."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + ("".join(parts) or "0s")


def is_zone_name(name: str) -> bool:
    """Whether `name` is one of `zoneinfo.available_timezones()`, mostly without listing them.

    The list is made by opening every file of the time zone database (about 20 ms, a fifteenth of
    `rulecrm check`), and one name rarely needs it: a file found under `zoneinfo.TZPATH` by exactly
    this spelling, through real directories, beginning as a TZif file does, is on it (the list is
    those files, less `posixrules` and the `posix/` and `right/` copies). Any other name is looked up
    in the list itself (a zone of the `tzdata` package, or no name at all).
    """
    return _found_under_tzpath(name) or name in zone_names()


@functools.lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """Every name of `zoneinfo.available_timezones()`, listed once per process (for hints)."""
    return frozenset(zoneinfo.available_timezones())


def _found_under_tzpath(name: str) -> bool:
    parts = name.split("/")
    if name == "posixrules" or parts[0] in ("posix", "right") or not {"", ".", ".."}.isdisjoint(parts):
        return False
    return any(_is_tzif(path) for path in (_listed_path(root, parts) for root in zoneinfo.TZPATH) if path)


def _listed_path(root: str, parts: list[str]) -> str | None:
    """root/parts..., when each part is listed in its directory (a case-insensitive file system would
    open "asia/shanghai" too) and no directory on the way is a link (the list does not follow them)."""
    path = root
    for depth, part in enumerate(parts):
        try:
            if part not in os.listdir(path):
                return None
        except OSError:
            return None
        path = os.path.join(path, part)
        if depth < len(parts) - 1 and os.path.islink(path):
            return None
    return path


def _is_tzif(path: str) -> bool:
    try:
        with open(path, "rb") as candidate:
            return candidate.read(4) == b"TZif"
    except OSError:
        return False


def get_zone(name: str) -> ZoneInfo:
    """An IANA zone; raises ValueError naming the zone when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def parse_timestamp(text: str, default_tz) -> datetime:
    """ISO 8601 to an aware datetime; a timestamp without offset is read in `default_tz`."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, found {type(text).__name__}")
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 timestamp such as 2026-03-01T10:15:00+08:00, found {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=default_tz)
    return fixed_offset(value)


def fixed_offset(value: datetime) -> datetime:
    """The same instant with its UTC offset frozen (a `datetime.timezone`), not a zone's rules.

    Arithmetic on datetimes that share a zone object is wall-clock arithmetic in Python (24h after
    01:30 on a DST night is not 24 hours later); with a fixed offset it is exact elapsed time, and
    the local time the event was written in is kept for templates.
    """
    if isinstance(value.tzinfo, timezone):
        return value
    return value.replace(tzinfo=timezone(value.utcoffset()))


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 with offset, seconds precision unless there are microseconds."""
    if value is None:
        return None
    return value.isoformat()


def to_epoch(value: datetime) -> float:
    return value.timestamp()


def from_epoch(seconds: float, tz=timezone.utc) -> datetime:
    return datetime.fromtimestamp(seconds, tz)
