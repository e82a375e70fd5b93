"""The gates a customer message went through, recomputed: opt-out, quiet hours, each cap and its counted sends."""
from __future__ import annotations

from datetime import datetime

import attrs

from ..engine import caps as caps_module
from ..engine.actions import Action
from ..engine.gates import MAX_DEFERS, Gates
from ..profile import Profile
from ..timeutil import format_duration, parse_timestamp
from .values import local_iso

GATED_KINDS = ("notify", "escalate")
PASSED = ("sent", "queued", "failed", "dead")  # statuses of actions that passed every gate (sent_at is set)


@attrs.frozen
class Send:
    """A message that counts for caps: a sent action of the outbox or a `message.sent` event."""

    at: datetime
    kind: str
    channel: str | None
    by: str  # "rule <id> (<key>)" or "message.sent <event id>"
    order: tuple  # (due_at, rule_index, key): sends at one instant count in this order


def send_history(state, tz) -> list[Send]:
    """Every send of the customer the caps could count, oldest first."""
    sends = []
    for record in state.actions:
        passed = record["status"] in PASSED and record.get("sent_at")
        if passed and record["to"] == "customer" and record["kind"] in GATED_KINDS:
            sent_at = parse_timestamp(record["sent_at"], tz)
            sends.append(Send(sent_at, record.get("message_kind") or "marketing", record.get("channel"),
                              f"rule {record['rule']} ({record['key']})", _order(record, tz)))
    for event in state.events:
        if event.type == "message.sent":
            kind, channel = event.data.get("kind"), event.data.get("channel")
            sends.append(Send(event.at, kind if isinstance(kind, str) else "marketing",
                              channel if isinstance(channel, str) else None, f"message.sent {event.id}", ()))
    return sorted(sends, key=lambda s: s.at)


def gate_steps(ruleset, state, record, *, sends, address_fields) -> list[dict]:
    """What each gate decided for one action, in the order the engine applied them."""
    if record["kind"] not in GATED_KINDS:
        return []
    if record.get("reason") == "no-address":
        return [_no_address(ruleset, state, record, address_fields)]
    if record["to"] != "customer":
        return []  # staff notifications pass no gates
    tz = ruleset.shop.timezone
    if record["status"] in PASSED and record.get("sent_at") == record.get("due_at"):
        return [{"gate": "passed", "at": record["sent_at"], "outcome": "sent"}]
    action = Action.from_dict({**record, "defers": 0}, tz)
    gates = Gates(ruleset)
    order = _order(record, tz)
    now = action.due_at
    steps = []
    for _attempt in range(MAX_DEFERS + 3):  # opt-out/quiet hours hold once each between cap defers
        profile = _profile_at(state, sends, now, order)
        verdict = gates.judge(action, profile, now)
        step = _describe(ruleset, state, gates, profile, action, verdict, now, sends, order)
        steps.append(step)
        if verdict.status != "deferred":
            break
        if state.now is not None and verdict.release_at > state.now:
            step["pending"] = True  # still held when the state was written
            break
        action.defers += verdict.counts_as_defer
        now = verdict.release_at
    recorded = "sent" if record["status"] in PASSED else record["status"]
    final = steps[-1]["outcome"] if not steps[-1].get("pending") else "deferred"
    if final != recorded and not (final == "held" and recorded == "deferred"):
        steps.append({"gate": "note", "outcome": final, "detail": (
            f"with the current rules the gates give {final}, but the outbox says {record['status']}: "
            "the rules or the history changed since it was decided")})
    return steps


def _describe(ruleset, state, gates, profile, action, verdict, now, sends, order) -> dict:
    tz = ruleset.shop.timezone
    at = local_iso(now, tz)
    if verdict.status == "sent":
        return {"gate": "passed", "at": at, "outcome": "sent"}
    if verdict.reason == "opt-out":
        since = _last_event(state, ("customer.opted_out",), now)
        return {"gate": "opt-out", "at": at, "outcome": "suppressed",
                "opted_out_at": local_iso(since.at, tz) if since else None, "event": since.id if since else None}
    release = local_iso(verdict.release_at, tz)
    if verdict.reason == "quiet-hours":
        zone = gates.zone(profile)
        start, end = ruleset.shop.quiet_hours
        return {"gate": "quiet-hours", "at": at, "outcome": "held", "window": f"{start:%H:%M}-{end:%H:%M}",
                "zone": str(zone), "local_time": now.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                "release_at": release}
    cap = next(c for c in ruleset.caps if verdict.reason == f"cap:{c.id}")
    counted = _counted(cap, sends, action.channel, now, order, gates.zone(profile))
    step = {"gate": "cap", "cap": cap.id, "at": at, "outcome": verdict.status, "window": _window(cap),
            "max": cap.max, "count": len(counted),
            "counted": [{"at": local_iso(s.at, tz), "by": s.by} for s in counted]}
    if verdict.status == "deferred":
        step.update(outcome="deferred", release_at=release, defer=action.defers + 1)
    elif cap.on_cap == "defer":
        step["note"] = f"deferred {action.defers} times already (at most {MAX_DEFERS})"
    return step


def _counted(cap, sends, channel, now, order, zone) -> list[Send]:
    """The sends this cap counted at `now`, with the same window edges as the engine."""
    if cap.window == "calendar":
        start, _end = caps_module.period_bounds(cap.period, now, zone)
        inside = lambda at: start <= at <= now  # noqa: E731
    else:
        inside = lambda at: now - cap.per < at <= now  # noqa: E731
    return [
        s for s in _before(sends, now, order)
        if s.kind in cap.kinds and (cap.channels is None or s.channel in cap.channels)
        and (not cap.per_channel or s.channel == channel) and inside(s.at)
    ]


def _window(cap) -> str:
    if cap.window == "calendar":
        return f"calendar {cap.period}"
    return f"rolling {format_duration(cap.per)}"


def _before(sends, now, order) -> list[Send]:
    """Sends that happened before an action judged at `now` (at one instant: those ordered first)."""
    return [s for s in sends if s.at < now or (s.at == now and s.order < order)]


def _profile_at(state, sends, now, order) -> Profile:
    """What the gates read at `now`: the time zone, opt-out as of then and the sends before."""
    profile = Profile(state.customer_id)
    profile.fields = dict(state.profile.fields)
    last = _last_event(state, ("customer.opted_out", "customer.opted_in"), now)
    profile.opted_out = last is not None and last.type == "customer.opted_out"
    profile.sends = [(caps_module.micros(s.at), s.kind, s.channel) for s in _before(sends, now, order)]
    return profile


def _last_event(state, types, until):
    found = None
    for event in state.events:
        if event.at > until:
            break
        if event.type in types:
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
    field = (address_fields or {}).get(channel_type)
    step.update(field=field, detail=f"channel {channel!r} (type {channel_type}) reads the address from "
                f"customer.{field}, which the profile does not have")
    return step


def _order(record, tz) -> tuple:
    return (parse_timestamp(record["due_at"], tz), record.get("rule_index", 0), record["key"])
