"""Re-runs one customer's stored events through a scratch engine of the real engine code.

Explain reports what this re-run saw instead of re-deriving it: each rule's condition on its last
trigger event, and every gate verdict the engine's own gates gave (opt-out, quiet hours, caps,
with the sends the caps counted), in the order the engine made them — same-instant ties included.
Comparing the re-run's outcome of each action with the outbox tells whether the rules or the
history changed since the action was decided.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import attrs

from rulecrm.app.session import Input, Session
from rulecrm.engine import caps as caps_module
from rulecrm.engine.actions import Action
from rulecrm.engine.gates import Verdict
from rulecrm.events import Event
from rulecrm.explain.trace import Evaluation, evaluate
from rulecrm.expr.compiler import compile_expression
from rulecrm.expr.context import MISSING
from rulecrm.plugins import build_plugin_manager
from rulecrm.rulefile.model import Rule

SYNTHETIC_TRIGGERS = ("birthday",)  # no stored event: the engine makes it from a timer


@attrs.frozen
class Sighting:
    """A rule's `when` on the customer's last event of the rule's trigger type, against the profile then."""

    rule: Rule
    event: Event
    index: int | None  # position in the customer's stored events (None: a stage.changed)
    evaluation: Evaluation | None  # None: the rule has no condition
    delay: Any = None  # delayed rules: what `after` gave (a timedelta, or MISSING)

    @property
    def matched(self) -> bool:
        return self.evaluation is None or self.evaluation.result


@attrs.frozen
class Send:
    """A send the caps count: a message the engine sent, or a `message.sent` event."""

    at: datetime
    kind: str
    channel: str | None
    by: str  # "rule <id> (<key>)" or "message.sent <event id>"


@attrs.frozen
class Decision:
    """One judgement of the engine's gates on an action, with what they read."""

    now: datetime
    verdict: Verdict
    zone: Any  # the time zone the gates used for this customer
    defers: int  # times a deferring cap had rescheduled the action before this judgement
    sends: tuple[Send, ...]  # the customer's remembered sends when judged, oldest first


@attrs.frozen
class Outcome:
    """Where the re-run left an action: its status, reason and when it passed the gates."""

    status: str  # sent | suppressed | deferred (still held at the state's time)
    reason: str | None
    sent_at: datetime | None


@attrs.define
class Rerun:
    sightings: dict[str, Sighting] = attrs.Factory(dict)
    decisions: dict[str, list[Decision]] = attrs.Factory(dict)  # by action key, in order
    outcomes: dict[str, Outcome] = attrs.Factory(dict)  # by action key
    # The first event applied after an event later than it: the original run may have fired timers
    # between the two (at a --until or on the wall clock), which the state does not record.
    late_event: Event | None = None


class _SendLabels:
    """Names each send the engine remembers for the caps.

    The engine keeps sends as (epoch µs, kind, channel); sends of one tuple are told apart by their
    order, which the engine's pruning of old sends keeps (it drops every send before an instant).
    """

    def __init__(self):
        self._by_send: dict[tuple, list[str]] = {}

    def add(self, at: datetime, kind: str, channel: str | None, by: str) -> None:
        self._by_send.setdefault((caps_module.micros(at), kind, channel), []).append(by)

    def name(self, sends) -> tuple[Send, ...]:
        seen: Counter = Counter()
        named = []
        for send in sends:
            send = tuple(send)
            labels = self._by_send.get(send, ())
            number = seen[send]
            seen[send] += 1
            by = labels[number] if number < len(labels) else "an earlier send"
            at = caps_module.EPOCH + send[0] * caps_module.MICROSECOND
            named.append(Send(at, send[1], send[2], by))
        return tuple(named)


def rerun(ruleset, state, *, functions=None, address_fields=None) -> Rerun:
    """Apply the customer's events again, in their stored order, to an engine over a throwaway store.

    `customer.*` reads the profile as it was right after each event (other customers never
    influence a customer's rules), and the engine's timers fire as they did, up to the state's time.
    """
    by_type: dict[str, list[Rule]] = {}
    for rule in ruleset.active_rules:
        if rule.on is not None and rule.on not in SYNTHETIC_TRIGGERS:
            by_type.setdefault(rule.on, []).append(rule)
    last = {event.type: index for index, event in enumerate(state.events)}
    result = Rerun()
    labels = _SendLabels()
    session = None

    def look(event: Event, index: int | None) -> None:
        engine = session.engine
        profile = engine.profile(event.customer_id)
        # The engine's own context builder, so values (the learned `cycle` too) are exactly its.
        ctx = engine.context_for(profile, event)
        for rule in by_type.get(event.type, ()):
            evaluation = evaluate(rule.when, ctx, functions) if rule.when is not None else None
            delay = compile_expression(rule.after)(ctx) if rule.after is not None else None
            result.sightings[rule.id] = Sighting(rule, event, index, evaluation, MISSING if delay is MISSING else delay)

    def on_gate(action: Action, profile, now: datetime, verdict: Verdict) -> None:
        decision = Decision(now, verdict, session.engine.zone_of(profile), action.defers, labels.name(profile.sends))
        result.decisions.setdefault(action.key, []).append(decision)
        if verdict.status == "sent":  # the engine remembers it for the caps right after
            labels.add(now, action.message_kind, action.channel, f"rule {action.rule} ({action.key})")

    def on_action(action: Action) -> None:
        result.outcomes[action.key] = Outcome(action.status, action.reason, action.sent_at)
        if action.kind == "stage" and "stage.changed" in by_type and action.status == "sent":
            old = (action.message or "").split(" -> ")[0]
            at = action.due_at.astimezone(timezone.utc)
            look(Event("stage.changed", action.customer_id, at, {"from": old, "to": action.to},
                       id=f"stage.changed|{action.customer_id}|{at.isoformat()}|{action.to}"), None)

    # A throwaway session (scratch store, no plugins), unguarded: a failure is explain's to report.
    session = Session.open(
        None, None, ruleset=ruleset, record_rules=False, backend_name="python",
        manager=build_plugin_manager(load_entry_points=False), functions=dict(functions or {}),
        address_fields=dict(address_fields or {}), on_action=on_action, guarded=False,
    )
    with session:
        session.engine.observe_gates(on_gate)
        latest = None
        for index, event in enumerate(state.events):
            if latest is not None and event.at < latest and result.late_event is None:
                result.late_event = event
            latest = event.at if latest is None else max(latest, event.at)
            if event.type == "message.sent":
                # Recorded when the event is applied, after the timers due before it: no send of
                # those timers shares its instant, so naming it first keeps the order per instant.
                kind, channel = event.data.get("kind"), event.data.get("channel")
                labels.add(event.at, kind if isinstance(kind, str) else "marketing",
                           channel if isinstance(channel, str) else None, f"message.sent {event.id}")
            session.apply([Input("explain", index + 1, event)])
            if last.get(event.type) == index:
                look(event, index)
        if state.now is not None:
            session.advance(state.now)
        for key, action in session.engine.held_actions().items():
            result.outcomes[key] = Outcome("deferred", action.reason, None)
    return result
