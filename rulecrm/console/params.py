"""Query parameters read strictly: a bad one is a 400 page saying which and why, never a traceback."""
from __future__ import annotations

import re
from datetime import date

from rulecrm.console.reading import MESSAGE_STATUSES, OutboxFilter, Period

MAX_TEXT = 200  # characters of a search text or a filter value


class BadInput(Exception):
    """A request parameter the console cannot use; `key` and `fields` make the message (i18n)."""

    def __init__(self, key: str, **fields):
        super().__init__(key)
        self.key = key
        self.fields = fields


def text(params, name: str) -> str | None:
    value = params.get(name)
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise BadInput("bad_choice", name=name, value=value[:20] + "...", choices=f"at most {MAX_TEXT} characters")
    return value


def page(params) -> int:
    value = params.get("page")
    if value is None or value == "":
        return 1
    if not re.fullmatch(r"[0-9]{1,6}", value) or int(value) < 1:
        raise BadInput("bad_page", value=value)
    return int(value)


def period(params) -> Period:
    """`from` and `to` (YYYY-MM-DD, both included; either may be left out)."""
    days = {}
    for name in ("from", "to"):
        value = text(params, name)
        if value is not None:
            try:
                if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
                    raise ValueError
                date.fromisoformat(value)
            except ValueError:
                raise BadInput("bad_date", name=name, value=value) from None
        days[name] = value
    if days["from"] and days["to"] and days["to"] < days["from"]:
        raise BadInput("period_reversed", start=days["from"], to=days["to"])
    return Period(days["from"], days["to"])


def outbox_filter(params) -> OutboxFilter:
    status = text(params, "status")
    if status is not None and status not in MESSAGE_STATUSES:
        raise BadInput("bad_choice", name="status", value=status, choices=", ".join(MESSAGE_STATUSES))
    return OutboxFilter(status=status, rule=text(params, "rule"), channel=text(params, "channel"),
                        customer=text(params, "customer"))
