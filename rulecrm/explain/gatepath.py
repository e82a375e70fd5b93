"""The gates a customer message went through: opt-out, quiet hours, each cap and the sends it counted.

Every step comes from the engine's own judgement in the re-run of the customer's events
(`simulate.rerun`), never from a second derivation of the gates, so ties at one instant, releases
from quiet hours and deferring caps read exactly as the engine decided them.
"""
from __future__ import annotations

from rulecrm.engine import caps as caps_module
from rulecrm.engine.gates import MAX_DEFERS
from rulecrm.explain.values import local_iso
from rulecrm.timeutil import format_duration, parse_timestamp

GATED_KINDS = ("notify", "escalate")
PASSED = ("sent", "queued", "failed", "dead")  # statuses of actions that passed every gate (sent_at is set)
CHANGED = "the rules or the history changed since it was decided"


def gate_steps(ruleset, state, record, *, rerun, address_fields) -> list[dict]:
    """What each gate decided for one action, in the order the engine applied them."""
    if record["kind"] not in GATED_KINDS:
        return []
    steps = []
    if record.get("reason") == "no-address":
        steps.append(_no_address(ruleset, state, record, address_fields))
    elif record["to"] == "customer":  # staff notifications pass no gates
        decisions = rerun.decisions.get(record["key"], ())
        steps = [_describe(ruleset, state, record, decision) for decision in decisions]
        outcome = rerun.outcomes.get(record["key"])
        if steps and outcome is not None and outcome.status == "deferred" and steps[-1]["outcome"] != "sent":
            steps[-1]["pending"] = True  # still held when the state was written
    note = _difference(ruleset, record, rerun)
    if note is not None:
        steps.append(note)
    return steps


def _difference(ruleset, record, rerun) -> dict | None:
    """A note when the engine, re-run on the stored events with the current rules, decides otherwise."""
    tz = ruleset.shop.timezone
    outcome = rerun.outcomes.get(record["key"])
    recorded = "sent" if record["status"] in PASSED else record["status"]
    if outcome is None:
        return _note(None, rerun, "re-running the stored events with the current rules gives no such action, "
                     f"but the outbox says {record['status']}")
    sent_at = local_iso(outcome.sent_at, tz)
    recorded_at = local_iso(parse_timestamp(record["sent_at"], tz), tz) if record.get("sent_at") else None
    if (outcome.status, outcome.reason, sent_at) == (recorded, record.get("reason"), recorded_at):
        return None
    gives = _spelled(outcome.status, outcome.reason, sent_at)
    says = _spelled(record["status"], record.get("reason"), recorded_at)
    return _note(outcome.status, rerun,
                 f"re-running the stored events with the current rules gives {gives}, but the outbox says {says}")


def _spelled(status, reason, at) -> str:
    return status + (f" ({reason})" if reason else "") + (f" at {at}" if at else "")


def _note(outcome, rerun, text) -> dict:
    detail = f"{text}: {CHANGED}"
    if rerun.late_event is not None:
        event = rerun.late_event
        detail += (f"; or timers fired at other points than in the re-run: {event.type} {event.id} was applied "
                   "after an event later than it, and the state does not record when timers fired then")
    return {"gate": "note", "outcome": outcome, "detail": detail}


def _describe(ruleset, state, record, decision) -> dict:
    tz = ruleset.shop.timezone
    verdict, now = decision.verdict, decision.now
    at = local_iso(now, tz)
    if verdict.status == "sent":
        return {"gate": "passed", "at": at, "outcome": "sent"}
    if verdict.reason == "opt-out":
        since = _last_event(state, ("customer.opted_out",), now)
        return {"gate": "opt-out", "at": at, "outcome": "suppressed",
                "opted_out_at": local_iso(since.at, tz) if since else None, "event": since.id if since else None}
    release = local_iso(verdict.release_at, tz)
    if verdict.reason == "quiet-hours":
        start, end = ruleset.shop.quiet_hours
        return {"gate": "quiet-hours", "at": at, "outcome": "held", "window": f"{start:%H:%M}-{end:%H:%M}",
                "zone": str(decision.zone), "local_time": now.astimezone(decision.zone).strftime("%Y-%m-%d %H:%M"),
                "release_at": release}
    cap = next(c for c in ruleset.caps if verdict.reason == f"cap:{c.id}")
    counted = _counted(cap, decision.sends, record.get("channel"), now, decision.zone)
    step = {"gate": "cap", "cap": cap.id, "at": at, "outcome": verdict.status, "window": _window(cap),
            "max": cap.max, "count": len(counted),
            "counted": [{"at": local_iso(s.at, tz), "by": s.by} for s in counted]}
    if verdict.status == "deferred":
        step.update(outcome="deferred", release_at=release, defer=decision.defers + 1)
    elif cap.on_cap == "defer":
        step["note"] = f"deferred {decision.defers} times already (at most {MAX_DEFERS})"
    return step


def _counted(cap, sends, channel, now, zone) -> list:
    """The sends this cap counted at `now`, with the window edges of `caps.check`."""
    if cap.window == "calendar":
        start, _end = caps_module.period_bounds(cap.period, now, zone)
        inside = lambda at: start <= at <= now  # noqa: E731
    else:
        inside = lambda at: now - cap.per < at <= now  # noqa: E731
    return [
        s for s in sends
        if s.kind in cap.kinds and (cap.channels is None or s.channel in cap.channels)
        and (not cap.per_channel or s.channel == channel) and inside(s.at)
    ]


def _window(cap) -> str:
    if cap.window == "calendar":
        return f"calendar {cap.period}"
    return f"rolling {format_duration(cap.per)}"


def _last_event(state, types, until):
    """The last of these events applied with a time at or before `until`."""
    found = None
    for event in state.events:
        if event.type in types and event.at <= until:
            found = event
    return found


def _no_address(ruleset, state, record, address_fields) -> dict:
    channel = record.get("channel")
    declared = ruleset.channel(channel)
    channel_type = declared.type if declared else channel
    step = {"gate": "no-address", "at": record["due_at"], "outcome": "suppressed", "channel": channel,
            "channel_type": channel_type, "field": None}
    if record["to"] == "owner" and not state.profile.fields.get("owner"):
        step.update(field="owner", detail="the profile has no owner")
        return step
    if record["to"] == "owner":  # staff notes never fall back to the customer's channel
        owner = state.profile.fields.get("owner")
        step.update(field="owner",
                    detail=f"the owner {owner!r} is not a declared contact and the rule names no channel")
        return step
    field = (address_fields or {}).get(channel_type)
    step.update(field=field, detail=f"channel {channel!r} (type {channel_type}) reads the address from "
                f"customer.{field}, which the profile does not have")
    return step
