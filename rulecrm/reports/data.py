"""The figures of a report, computed from the actions an `ActionLog` kept (what `--out` got).

Every figure is plain JSON (lists and dicts of strings and numbers): the page embeds it for its charts
and renders its tables from it. A day is the calendar date of an action's `sent_at`, else its `due_at`,
in the offset the action's time carries (the shop's time zone).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta

from rulecrm.masking import mask_personal
from rulecrm.reports.collect import ActionLog
from rulecrm.timeutil import format_duration

TOP_CUSTOMERS = 20
_WENT_OUT = "status IN ('sent', 'queued')"  # a message sent, or waiting for its channel (with --dispatch)
_TO_CUSTOMER = f"kind IN ('notify', 'escalate') AND recipient = 'customer' AND {_WENT_OUT}"
_ESCALATED = f"lateness IS NOT NULL AND {_WENT_OUT}"
CAP_PREFIX = "cap:"
# the upper bounds (seconds, inclusive) of the lateness histogram's buckets; the last bucket is open
LATENESS_BOUNDS = (3600, 2 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)


def figures(log: ActionLog, rule_order: Sequence[str] = ()) -> dict:
    """Every figure of a report for one replay's actions; `rule_order`: the rule ids in the rule files'
    order (rules not in it, such as the lifecycle's, come after in code-point order)."""
    db = log.db
    return {
        "actions": db.execute("SELECT count(*) FROM actions").fetchone()[0],
        "statuses": dict(db.execute("SELECT status, count(*) FROM actions GROUP BY status ORDER BY status")),
        "rules": _rules(db, rule_order),
        "daily": daily_counts(db),
        "caps": caps(db),
        "lateness": lateness(db),
        "top_customers": top_customers(db),
    }


def _rules(db: sqlite3.Connection, rule_order: Sequence[str]) -> list[str]:
    found = {rule for (rule,) in db.execute("SELECT DISTINCT rule FROM actions")}
    return [rule for rule in rule_order if rule in found] + sorted(found - set(rule_order))


def daily_counts(db: sqlite3.Connection) -> list[dict]:
    """Actions per rule, day and status."""
    rows = db.execute("SELECT rule, day, status, count(*) FROM actions GROUP BY rule, day, status "
                      "ORDER BY rule, day, status")
    return [{"rule": rule, "day": day, "status": status, "count": n} for rule, day, status, n in rows]


def caps(db: sqlite3.Connection) -> list[dict]:
    """Per cap that bit (an action with reason `cap:NAME`): the actions it suppressed and those it still held
    (deferred) at the end, in all, per rule and per day; the caps that bit most first."""
    found: dict[str, dict] = {}
    rows = db.execute("SELECT substr(reason, ?), rule, day, status, count(*) FROM actions "
                      "WHERE reason LIKE ? AND status IN ('suppressed', 'deferred') GROUP BY 1, rule, day, status",
                      (len(CAP_PREFIX) + 1, CAP_PREFIX + "%"))
    for cap, rule, day, status, n in rows:
        entry = found.setdefault(cap, {"cap": cap, "suppressed": 0, "deferred": 0, "rules": {}, "days": {}})
        entry[status] += n
        for group, name in (("rules", rule), ("days", day)):
            counts = entry[group].setdefault(name, {"suppressed": 0, "deferred": 0})
            counts[status] += n
    result = []
    for entry in sorted(found.values(), key=lambda e: (-(e["suppressed"] + e["deferred"]), e["cap"])):
        entry["rules"] = [{"rule": rule, **n} for rule, n in sorted(entry["rules"].items())]
        entry["days"] = [{"day": day, **n} for day, n in sorted(entry["days"].items())]
        result.append(entry)
    return result


def lateness(db: sqlite3.Connection) -> dict:
    """Lateness of the escalation steps that went out (`rulecrm.reports.collect.escalation_lateness`): how
    many, the largest, a histogram over LATENESS_BOUNDS, and per rule."""
    buckets = []
    lower = None
    for upper in (*LATENESS_BOUNDS, None):  # one count per bucket: the values are never all in memory
        n = db.execute(f"SELECT count(*) FROM actions WHERE {_ESCALATED} AND (? IS NULL OR lateness > ?) "
                       "AND (? IS NULL OR lateness <= ?)", (lower, lower, upper, upper)).fetchone()[0]
        buckets.append({"label": _bucket_label(lower, upper), "upper_seconds": upper, "count": n})
        lower = upper
    by_rule = db.execute(f"SELECT rule, count(*), max(lateness) FROM actions WHERE {_ESCALATED} "
                         "GROUP BY rule ORDER BY rule")
    count, largest = db.execute(f"SELECT count(*), max(lateness) FROM actions WHERE {_ESCALATED}").fetchone()
    return {
        "count": count,
        "max_seconds": largest,
        "max": _duration(largest),
        "buckets": buckets,
        "rules": [{"rule": rule, "count": n, "max_seconds": most, "max": _duration(most)}
                  for rule, n, most in by_rule],
    }


def _bucket_label(lower: int | None, upper: int | None) -> str:
    if lower is None:
        return f"≤ {_duration(upper)}"
    if upper is None:
        return f"> {_duration(lower)}"
    return f"{_duration(lower)}–{_duration(upper)}"


def _duration(seconds: int | None) -> str | None:
    return None if seconds is None else format_duration(timedelta(seconds=seconds))


def top_customers(db: sqlite3.Connection, limit: int = TOP_CUSTOMERS) -> list[dict]:
    """The `limit` customers sent (or queued) the most messages addressed to them (`to: customer`, a notify or
    an escalation step), most first, then by customer id; with their first and last day, the channels
    used and the address of their last message (in the order decided), masked."""
    rows = db.execute(f"SELECT customer_id, count(*), min(day), max(day), group_concat(DISTINCT channel) "
                      f"FROM actions WHERE {_TO_CUSTOMER} GROUP BY customer_id ORDER BY count(*) DESC, customer_id "
                      "LIMIT ?", (limit,)).fetchall()
    ids = [row[0] for row in rows]
    # one pass over their messages, in decision order: the last address seen per customer is kept
    last_address = dict(db.execute(f"SELECT customer_id, address FROM actions WHERE {_TO_CUSTOMER} AND customer_id "
                                   f"IN ({', '.join('?' * len(ids))}) ORDER BY seq", ids))
    return [{"customer_id": customer_id, "messages": n, "first_day": first, "last_day": last,
             "channels": sorted(channels.split(",")) if channels else [],
             "address": mask_personal(last_address.get(customer_id))}
            for customer_id, n, first, last, channels in rows]
