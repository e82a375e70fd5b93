"""`ActionLog`, the stream in front of `--out` the figures are computed from: it passes every write on, and
an action reported twice counts once, with its last status."""
from __future__ import annotations

import io
import json

from rulecrm.reports.collect import ActionLog, escalation_lateness
from rulecrm.reports.data import figures


def action(key, status, **fields) -> dict:
    return {"key": key, "rule": "r", "customer_id": "c-1", "kind": "notify", "to": "customer", "channel": "sms",
            "address": "13812345678", "due_at": "2026-03-01T23:30:00+08:00", "sent_at": None, "status": status,
            "reason": None, "late_seconds": None, **fields}


def test_writes_go_on_and_a_second_report_of_a_key_replaces_the_first():
    forward = io.StringIO()
    lines = [action("a", "queued"), action("b", "suppressed", reason="cap:daily"),
             action("a", "sent", sent_at="2026-03-02T00:10:00+08:00")]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    with ActionLog(forward) as log:
        log.write(text)
        log.finish()
        shown = figures(log)
    assert forward.getvalue() == text
    assert shown["actions"] == 2 and shown["statuses"] == {"sent": 1, "suppressed": 1}
    # the day of a sent action is that of its sent_at, in the offset it carries
    assert {(row["day"], row["status"]) for row in shown["daily"]} == {("2026-03-02", "sent"),
                                                                       ("2026-03-01", "suppressed")}
    assert shown["caps"][0]["cap"] == "daily" and shown["caps"][0]["suppressed"] == 1
    assert shown["top_customers"] == [{"customer_id": "c-1", "messages": 1, "first_day": "2026-03-02",
                                       "last_day": "2026-03-02", "channels": ["sms"], "address": "***5678"}]


def test_lateness_adds_the_time_an_escalation_was_sent_after_it_was_due():
    step = action("e", "sent", kind="escalate", late_seconds=7200, due_at="2026-03-01T22:00:00+08:00")
    assert escalation_lateness(step) == 7200
    assert escalation_lateness({**step, "sent_at": "2026-03-01T22:30:00+08:00"}) == 7200 + 1800
    assert escalation_lateness({**step, "kind": "notify"}) is None
