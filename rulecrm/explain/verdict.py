"""The one-line verdict per rule: fired, suppressed, held, waiting, cancelled or never matched, and why."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

from rulecrm.explain.values import local_iso

FIRED = ("sent",)


def verdict(rule, actions, timers, condition, cancel) -> str:
    """`fired 3 times, last at …; suppressed 1 time (cap:marketing-daily); waiting: …`."""
    if not rule.enabled:
        return "disabled (enabled: false): the engine does not evaluate it"
    parts = []
    sent = [a for a in actions if a["status"] == "sent"]
    if sent:
        parts.append(f"fired {_times(len(sent))}, last at {max(a['sent_at'] for a in sent)}")
    suppressed = Counter(a["reason"] for a in actions if a["status"] == "suppressed")
    if suppressed:
        reasons = ", ".join(f"{reason} ×{n}" if n > 1 else reason for reason, n in suppressed.items())
        parts.append(f"suppressed {_times(sum(suppressed.values()))} ({reasons})")
    for status, text in (("queued", "queued for its channel"), ("failed", "delivery failed, to be retried"),
                         ("dead", "delivery gave up")):
        count = sum(a["status"] == status for a in actions)
        if count:
            parts.append(f"{text} ({_times(count)})")
    for timer in timers:
        parts.append(_waiting(timer))
    for action in actions:
        if action["status"] == "deferred" and not any(t.get("action") == action["key"] for t in timers):
            parts.append(f"held ({action['reason']})")
    outcome = _outcome(rule, condition, cancel)
    if parts and cancel is not None:
        parts.append(f"the remaining timers were cancelled by {cancel['type']} {cancel['id']} at {cancel['at']}")
    if not parts:
        return outcome or "no action"
    if condition and condition.get("result") is False and condition.get("against"):
        against = condition["against"]
        if against["what"] == "event":
            parts.append(f"the last {against['type']} ({against['id']} at {against['at']}) did not match: "
                         f"{condition['why']}")
        else:
            parts.append(f"not matched now: {condition['why']}")
    return "; ".join(parts)


def _outcome(rule, condition, cancel) -> str | None:
    """Why nothing (more) happened, from the condition and a cancelling event."""
    if condition is None:
        return None
    if rule.on is None:
        if condition["result"]:
            return f"matches now ({condition['why']}) but no action was recorded"
        return f"not matched now: {condition['why']}"
    against = condition.get("against")
    if against is None:
        return f"never triggered: {condition['why']}"
    on = f"on {against['type']} {against['id']} at {against['at']}"
    if not condition["result"]:
        return f"never matched: {condition['why']} {on}"
    if cancel is not None:
        return f"matched {on}, then cancelled by {cancel['type']} {cancel['id']} at {cancel['at']}"
    if rule.after is not None and condition.get("delay") is None:
        return f"matched {on}, but `after` gave no duration (e.g. the product has no cycle): nothing was scheduled"
    if rule.recheck is not None:
        return f"matched {on}; the timer fired but the recheck was false then"
    return f"matched {on}, but no action was recorded"


def _waiting(timer) -> str:
    if timer["kind"] == "release":
        return f"held ({timer['reason']}) until {timer['due_at']}"
    what = timer["kind"] + (f" {timer['step']}" if timer.get("step") else "")
    text = f"waiting: {what} due {timer['due_at']}"
    return text + (f" unless {timer['unless']}" if timer.get("unless") else "")


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


def cancelled_by(rule, state, sighting, tz) -> dict | None:
    """The event that cancelled the timers of a matched trigger, if one arrived in time."""
    unless = rule.escalate.unless if rule.escalate is not None and rule.escalate.unless else rule.unless
    if unless is None or not sighting.matched or sighting.index is None:
        return None
    trigger = sighting.event
    if rule.escalate is None and not isinstance(sighting.delay, timedelta):
        return None
    due = trigger.at + max(sighting.delay, timedelta(0)) if rule.escalate is None else None
    key = trigger.data.get(unless.same) if unless.same else None
    if unless.same and key is None:
        return None  # a trigger without the `same` field is cancelled by nothing
    for event in state.events[sighting.index + 1:]:
        if due is not None and event.at > due:
            break
        if event.type == unless.event_type and (unless.same is None or event.data.get(unless.same) == key):
            return {"type": event.type, "id": event.id, "at": local_iso(event.at, tz)}
    return None
