"""The customer's pending timers: what each will do, when (shop time) and what would cancel it."""
from __future__ import annotations

import json
from datetime import timezone

from rulecrm.engine.lifecycle import stage_at
from rulecrm.events import Event
from rulecrm.explain.values import local_iso
from rulecrm.timeutil import parse_timestamp

KINDS = {"after": "delay", "escalate": "escalation step", "stage": "lifecycle", "birthday": "birthday",
         "release": "release"}


def pending_timers(ruleset, state) -> list[dict]:
    """One record per pending timer, soonest first."""
    tz = ruleset.shop.timezone
    actions = {record["key"]: record for record in state.actions}
    found = []
    for key, _due, _rule_index, _seq, _customer, payload in state.timers:
        due = parse_timestamp(payload["due"], timezone.utc)
        item = {"key": key, "kind": KINDS.get(payload["type"], payload["type"]), "rule": payload.get("rule"),
                "due_at": local_iso(due, tz), "unless": unless_text(payload.get("unless"))}
        if "event" in payload:
            event = Event.from_dict(json.loads(payload["event"]), default_tz=timezone.utc)
            item["trigger"] = {"type": event.type, "id": event.id, "at": local_iso(event.at, tz)}
        if payload["type"] == "escalate":
            item["step"] = payload["step"]
        elif payload["type"] == "release":
            held = actions.get(payload["action"], {})
            item.update(rule=held.get("rule"), action=payload["action"], reason=held.get("reason"))
        elif payload["type"] == "stage":
            item.update(rule="lifecycle", becomes=stage_at(state.profile, ruleset.lifecycle, due),
                        unless="order.placed (a new order restarts the idle time)")
        found.append(item)
    return found


def unless_text(unless) -> str | None:
    """`order.placed with sku tea-xqg`, or just the event type when any such event cancels."""
    if not unless:
        return None
    event_type, same, value = unless
    if same is None:
        return event_type
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"{event_type} with {same} {shown}"
