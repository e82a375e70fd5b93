"""How explain shows a value: "missing" for MISSING, ISO times in the shop's zone, 30d-style durations."""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta

from rulecrm.expr.context import MISSING
from rulecrm.timeutil import format_duration

MAX_SHOWN = 80


def shown(value, tz=None) -> str:
    """One short human-readable spelling of a value an expression saw."""
    if value is MISSING or value is None:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime):
        return local_iso(value, tz)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, (set, frozenset)):
        return "[" + ", ".join(shown(item, tz) for item in sorted(value, key=str)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown(item, tz) for item in value) + "]"
    if isinstance(value, Mapping):
        text = json.dumps(jsonable(value, tz), ensure_ascii=False, sort_keys=True)
        return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"
    return repr(value)


def jsonable(value, tz=None):
    """The value as JSON data: MISSING -> None, times as ISO text, durations as `30d`, sets sorted."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, datetime):
        return local_iso(value, tz)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(item, tz) for item in value)
    if isinstance(value, (list, tuple)):
        return [jsonable(item, tz) for item in value]
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, tz) for key, item in value.items()}
    return value


def local_iso(value: datetime | None, tz=None) -> str | None:
    """ISO 8601 with offset, in `tz` when given (the shop's zone, like every output timestamp)."""
    if value is None:
        return None
    return (value.astimezone(tz) if tz is not None else value).isoformat()
