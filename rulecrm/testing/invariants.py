"""One-line invariants over a run: what every correct rulecrm run of a shop's rules must satisfy.

Each invariant takes the rules, the events (JSONL dicts, in the order given to the engine) and the
actions reported (`Shop.actions`, `replay --out` records) and raises `InvariantViolation` naming
the invariant, the customer, the offending actions and the events that matter.

Knowing what the engine knew: at one instant, events are applied before timers, and a message
decided while its trigger event is applied knows only the events up to that trigger (ties in
file order). The checks reconstruct that view; they do not re-run the rules.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import attrs

from rulecrm.engine.caps import period_bounds
from rulecrm.engine.quiet import quiet_until
from rulecrm.events import Event
from rulecrm.expr.compiler import compile_expression
from rulecrm.expr.context import EvalContext
from rulecrm.schema import ITEM_LIFECYCLES
from rulecrm.testing.never_true import start_of, why_never_true, why_unless_never_matches
from rulecrm.timeutil import format_duration, get_zone, parse_timestamp

__all__ = [
    "InvariantViolation", "assert_at_most", "assert_escalated_or_handled", "caps_not_bypassed",
    "caps_respected", "check_all", "escalations_justified", "no_duplicate_sends",
    "no_marketing_to_opted_out", "quiet_hours_respected", "rules_can_fire", "unless_can_cancel",
]

_SHOWN_FIELDS = ("key", "rule", "customer_id", "kind", "to", "channel", "message_kind", "due_at", "sent_at",
                 "status", "reason", "step")


class InvariantViolation(AssertionError):
    """An invariant failed: `invariant`, `customer_id`, `actions` and `events` say where and why."""

    def __init__(self, invariant: str, message: str, *, customer_id=None, actions=(), events=()):
        self.invariant = invariant
        self.detail = message
        self.customer_id = customer_id
        self.actions = list(actions)
        self.events = list(events)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"invariant {self.invariant} violated" + (f" for customer {self.customer_id}" if self.customer_id
                                                            else "") + ":", f"  {self.detail}"]
        if self.actions:
            lines.append("  offending actions:")
            lines += ["    " + json.dumps({k: a.get(k) for k in _SHOWN_FIELDS if a.get(k) is not None},
                                          ensure_ascii=False) for a in self.actions]
        if self.events:
            lines.append("  relevant events:")
            lines += ["    " + json.dumps(e, ensure_ascii=False) for e in self.events]
        return "\n".join(lines)


class _Run:
    """Events and actions of one run, indexed for the checks."""

    def __init__(self, ruleset, events, actions):
        self.ruleset = ruleset
        self.zone = ruleset.shop.timezone
        seen, parsed = set(), []
        for n, raw in enumerate(events):
            event = raw if isinstance(raw, Event) else Event.from_dict(raw, default_tz=self.zone)
            if event.id is not None and event.id in seen:
                continue  # an id seen twice is applied once
            seen.add(event.id)
            parsed.append((event.at, n, raw if isinstance(raw, dict) else event.to_dict(), event))
        parsed.sort(key=lambda item: (item[0], item[1]))
        self.events = [(pos, at, raw, event) for pos, (at, _n, raw, event) in enumerate(parsed)]
        self.by_id = {item[3].id: item for item in self.events if item[3].id is not None}
        self.by_customer = defaultdict(list)
        for item in self.events:
            self.by_customer[item[3].customer_id].append(item)
        self.actions = list(actions)
        self.rules = {rule.id: rule for rule in ruleset.rules}

    def time(self, text) -> datetime | None:
        return parse_timestamp(text, self.zone) if text else None

    def messages(self, *, to_customer=True):
        """(index, action) of every message that went out, in decision order."""
        return [(n, a) for n, a in enumerate(self.actions)
                if a["status"] == "sent" and a["kind"] in ("notify", "escalate")
                and (not to_customer or a["to"] == "customer")]

    def trigger_event(self, action):
        """The input event an action stems from (through the lifecycle for stage.changed), or None."""
        trigger = action.get("trigger") or ""
        if trigger in self.by_id:
            return self.by_id[trigger]
        if trigger.startswith("stage.changed|"):
            stage = trigger.rsplit("|", 1)[1]
            due = self.time(action["due_at"])
            for other in self.actions:
                if (other["kind"] == "stage" and other["customer_id"] == action["customer_id"]
                        and other["to"] == stage and self.time(other["due_at"]) == due
                        and other.get("trigger") in self.by_id):
                    return self.by_id[other["trigger"]]
        return None

    def known(self, action):
        """The customer's events already applied when `action` was decided or released."""
        at = self.time(action["sent_at"] or action["due_at"])
        limit = None
        rule = self.rules.get(action["rule"])
        if (action["kind"] == "notify" and rule is not None and rule.after is None and rule.on != "birthday"
                and (action["sent_at"] is None or self.time(action["sent_at"]) == self.time(action["due_at"]))):
            trigger = self.trigger_event(action)
            if trigger is not None and trigger[1] == at:
                limit = trigger[0]
        return [item for item in self.by_customer[action["customer_id"]]
                if item[1] < at or (item[1] == at and (limit is None or item[0] <= limit))]

    def zone_of(self, known):
        """The customer's valid `timezone` among known events, else the shop's (as the gates do)."""
        name = None
        for _pos, _at, _raw, event in known:
            if event.type == "customer.upserted" and "timezone" in event.data:
                name = event.data["timezone"]
        if isinstance(name, str):
            try:
                return get_zone(name)
            except ValueError:
                pass
        return self.zone

    def external_sends(self, known):
        """message.sent events among `known`: (instant, kind, channel, raw)."""
        sends = []
        for _pos, at, raw, event in known:
            if event.type == "message.sent":
                kind, channel = event.data.get("kind"), event.data.get("channel")
                sends.append((at, kind if isinstance(kind, str) else "marketing",
                              channel if isinstance(channel, str) else None, raw))
        return sends

    def related_events(self, actions, extra=()):
        found = {}
        for action in actions:
            trigger = self.trigger_event(action)
            if trigger is not None:
                found[trigger[0]] = trigger[2]
        for item in extra:
            found[item[0]] = item[2]
        return [found[pos] for pos in sorted(found)]


# -- engine invariants -------------------------------------------------------------------
def no_duplicate_sends(ruleset, events, actions, **_):
    """No action key is reported twice with status `sent`."""
    counts = Counter(a["key"] for a in actions if a["status"] == "sent")
    for key, count in counts.items():
        if count > 1:
            twice = [a for a in actions if a["key"] == key and a["status"] == "sent"]
            raise InvariantViolation("no_duplicate_sends", f"action {key} was sent {count} times",
                                     customer_id=twice[0]["customer_id"], actions=twice,
                                     events=_Run(ruleset, events, actions).related_events(twice[:1]))


def no_marketing_to_opted_out(ruleset, events, actions, **_):
    """No marketing message reaches a customer whose last opt event (as known then) was an opt-out."""
    run = _Run(ruleset, events, actions)
    for _n, action in run.messages():
        if action["message_kind"] != "marketing":
            continue
        flags = [item for item in run.known(action) if item[3].type in ("customer.opted_out", "customer.opted_in")]
        if flags and flags[-1][3].type == "customer.opted_out":
            raise InvariantViolation(
                "no_marketing_to_opted_out",
                f"marketing from rule {action['rule']} was sent at {action['sent_at']} after the customer opted out",
                customer_id=action["customer_id"], actions=[action],
                events=run.related_events([action], [flags[-1]]))


def quiet_hours_respected(ruleset, events, actions, **_):
    """No message of the quiet kinds goes out inside quiet hours in the customer's time zone."""
    shop = ruleset.shop
    if not shop.quiet_hours:
        return
    run = _Run(ruleset, events, actions)
    for _n, action in run.messages():
        if action["message_kind"] not in shop.quiet_kinds:
            continue
        known = run.known(action)
        zone = run.zone_of(known)
        sent = run.time(action["sent_at"])
        if quiet_until(sent, shop.quiet_hours, zone) is not None:
            start, end = (t.strftime("%H:%M") for t in shop.quiet_hours)
            raise InvariantViolation(
                "quiet_hours_respected",
                f"rule {action['rule']} sent {action['message_kind']} at {sent.astimezone(zone).isoformat()} "
                f"({getattr(zone, 'key', zone)}), inside quiet hours {start}-{end}",
                customer_id=action["customer_id"], actions=[action],
                events=run.related_events([action], [i for i in known if i[3].type == "customer.upserted"]))


def _window(cap, sent, zone):
    """(start, inclusive start?) of the cap window ending at the send instant `sent`."""
    if cap.window == "calendar":
        return period_bounds(cap.period, sent, zone)[0], True
    return sent - cap.per, False


def _describe_cap(cap) -> str:
    per = cap.period if cap.window == "calendar" else format_duration(cap.per)
    text = f"cap {cap.id} (max {cap.max} {'/'.join(sorted(cap.kinds))} per {per}, {cap.window}"
    if cap.channels is not None:
        text += f", channels {', '.join(sorted(cap.channels))}"
    if cap.per_channel:
        text += ", per channel"
    source = f" at {cap.source}" if cap.source is not None else ""
    return text + ")" + source


def _in_window(cap, sends, sent, zone):
    start, inclusive = _window(cap, sent, zone)
    return [s for s in sends if (start <= s[0] if inclusive else start < s[0]) and s[0] <= sent]


def _window_sends(run, index, action, kinds, channels, per_channel):
    """Sends counted with `action` (rulecrm's own and known message.sent): (instant, kind, channel, item)."""
    own = [(run.time(a["sent_at"]), a["message_kind"], a["channel"], a)
           for n, a in run.messages() if n <= index and a["customer_id"] == action["customer_id"]]
    known = run.known(action)
    theirs = [(at, kind, channel, raw) for at, kind, channel, raw in run.external_sends(known)]
    counted = [s for s in own + theirs if s[1] in kinds and (channels is None or s[2] in channels)
               and (not per_channel or s[2] == action["channel"])]
    return counted, run.zone_of(known)


def caps_respected(ruleset, events, actions, **_):
    """Every cap as declared: no send it covers makes more than `max` in its window (docs/rules.md, Caps)."""
    run = _Run(ruleset, events, actions)
    for index, action in run.messages():
        for cap in ruleset.caps:
            if action["message_kind"] not in cap.kinds or (cap.channels is not None
                                                           and action["channel"] not in cap.channels):
                continue
            counted, zone = _window_sends(run, index, action, cap.kinds, cap.channels, cap.per_channel)
            window = _in_window(cap, counted, run.time(action["sent_at"]), zone)
            if len(window) > cap.max:
                raise _too_many("caps_respected", run, cap, action, window,
                                f"{_describe_cap(cap)} let {len(window)} messages through in one window")


def caps_not_bypassed(ruleset, events, actions, **_):
    """The intent of every cap: at most `max` messages of its kinds per window, on ALL channels.

    A cap limited to some channels, or to kinds that leave marketing out (when no cap counts
    marketing at all), is bypassed when a rule sends what the cap does not count; the violation
    names the cap and the rule. A `per_channel` cap gives each channel its own budget on purpose:
    it is counted per channel, and sends on other channels never make it bypassed.
    """
    run = _Run(ruleset, events, actions)
    marketing_uncapped = not any("marketing" in cap.kinds for cap in ruleset.caps)
    for cap in ruleset.caps:
        kinds = cap.kinds | ({"marketing"} if marketing_uncapped else set())
        for index, action in run.messages():
            if action["message_kind"] not in kinds:
                continue
            counted, zone = _window_sends(run, index, action, kinds, None, cap.per_channel)
            window = _in_window(cap, counted, run.time(action["sent_at"]), zone)
            uncounted = [s for s in window if s[1] not in cap.kinds
                         or (cap.channels is not None and s[2] not in cap.channels)]
            if len(window) > cap.max and uncounted:
                by = sorted({_origin(s) for s in uncounted})
                raise _too_many(
                    "caps_not_bypassed", run, cap, action, window,
                    f"{_describe_cap(cap)} is bypassed: the customer got {len(window)} "
                    f"{'/'.join(sorted(kinds))} messages in one window; not counted by the cap: {'; '.join(by)}")


def _origin(send) -> str:
    at, kind, channel, item = send
    if "key" in item:
        return f"rule {item['rule']} ({kind} on channel {channel})"
    return f"message.sent event {item.get('id') or at.isoformat()} ({kind} on channel {channel})"


def _too_many(name, run, cap, action, window, message):
    ours = [s[3] for s in window if "key" in s[3]]
    theirs = [s[3] for s in window if "key" not in s[3]]
    found = run.related_events(ours)
    return InvariantViolation(name, message, customer_id=action["customer_id"], actions=ours,
                              events=found + [e for e in theirs if e not in found])


def escalations_justified(ruleset, events, actions, *, until=None, **_):
    """Every escalation's item was still open at its due time, and every item still open at a step's
    due time (at or before `until`, default the last event) was escalated.

    What closes an item is judged from the built-in meaning of the events, not from the rule under
    test: a `review.created` is open until a `review.handled` with the same `review_id`, a
    `complaint.opened` until a `complaint.resolved` with the same `complaint_id` (the profile's
    `open_reviews` and `open_complaints`). A misspelled `same` field or an `unless` on the wrong
    event type therefore shows as an escalation of a handled item, or as an open item left alone.
    Items of other event types have no built-in meaning: for them the rule's own `unless` is the
    only statement of what closes them, and the check judges the engine by it.

    Items are the triggers a rule is seen to act on; the second half is checked for rules with
    their own `notify` and no `recheck` (otherwise a trigger that matched cannot be told from the
    output), and for steps whose delay does not depend on the customer.
    """
    run = _Run(ruleset, events, actions)
    end = run.time(until) if isinstance(until, str) else until
    if end is None and run.events:
        end = run.events[-1][1]
    for rule in ruleset.active_rules:
        if rule.escalate is None:
            continue
        closer = _Closer.of(rule)
        mine = [a for a in actions if a["rule"] == rule.id]
        triggers = {}
        for action in mine:
            item = run.trigger_event(action) if action.get("trigger") in run.by_id else None
            if item is not None:
                triggers[item[0]] = item
        escalated = {a["key"]: a for a in mine if a["kind"] == "escalate"}
        escalated_steps = {(a.get("trigger"), a["step"]) for a in escalated.values()}
        for action in escalated.values():
            item = run.by_id.get(action.get("trigger"))
            if item is None:
                continue
            due = run.time(action["due_at"])
            closed = closer.closed(run, item, due, triggers)
            if closed is not None:
                raise InvariantViolation(
                    "escalations_justified",
                    f"rule {rule.id} escalated step {action['step']} at {action['due_at']} although "
                    f"{closed[3].type} {closed[3].id} at {closed[1].isoformat()} had closed {closer.item_name(item)}",
                    customer_id=action["customer_id"], actions=[action], events=[item[2], closed[2]])
        if rule.notify is None or rule.recheck is not None or end is None:
            continue
        for item in triggers.values():
            for number, step in enumerate(rule.escalate.steps, 1):
                delay = _delay(ruleset, step.after, item[3])
                if delay is None:
                    continue
                due = max(item[1] + delay, item[1])
                if due > end or (item[3].id, number) in escalated_steps:
                    continue
                if closer.closed(run, item, due, triggers):
                    continue
                raise InvariantViolation(
                    "escalations_justified",
                    f"rule {rule.id} did not escalate step {number} due at {due.astimezone(run.zone).isoformat()}: "
                    f"{closer.item_name(item)} was still open ({closer.closing_name(item)} arrived by then)",
                    customer_id=item[3].customer_id, actions=[a for a in mine if a.get("trigger") == item[3].id],
                    events=[item[2]])


@attrs.frozen
class _Closer:
    """What closes the items a rule escalates: their built-in meaning, else the rule's own `unless`."""

    event_type: str | None  # None: nothing closes the item
    same: str | None
    builtin: bool

    @classmethod
    def of(cls, rule) -> "_Closer":
        if rule.on in ITEM_LIFECYCLES:
            field, closing = ITEM_LIFECYCLES[rule.on]
            return cls(closing, field, True)
        unless = rule.escalate.unless or rule.unless
        return cls(unless.event_type if unless else None, unless.same if unless else None, False)

    def item_name(self, item) -> str:
        event = item[3]
        if self.builtin:
            return f"{event.type.split('.')[0]} {json.dumps(event.data.get(self.same), ensure_ascii=False)}"
        return f"the item of {event.type} {event.id}"

    def closing_name(self, item) -> str:
        if self.event_type is None:
            return "nothing can close it"
        if self.same is None:
            return f"no {self.event_type}"
        value = json.dumps(item[3].data.get(self.same), ensure_ascii=False)
        return f"no {self.event_type} with {self.same} {value}"

    def closed(self, run, item, due, triggers):
        """The event that closed `item` by `due` (or a later trigger for the same item, which the
        engine follows instead), or None."""
        pos, _at, _raw, event = item
        value = event.data.get(self.same) if self.same else None
        for other in run.by_customer[event.customer_id]:
            if other[0] <= pos or other[1] > due:
                continue
            same_item = self.same is None or (value is not None and _same_value(other[3].data.get(self.same), value))
            if other[3].type == self.event_type and same_item:
                return other
            if other[0] in triggers and (same_item if self.builtin else self.same is None or _same_value(
                    other[3].data.get(self.same), value)):
                return other
        return None


def _same_value(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _delay(ruleset, tree, event) -> timedelta | None:
    """A step's delay for `event` when it does not depend on the customer's own facts."""
    sku = event.data.get("sku")
    product = ruleset.product(sku) if isinstance(sku, str) else None
    cycle = product.cycle if product is not None and not product.learn_cycle else None
    ctx = EvalContext(event=event.as_mapping(), customer={}, product=product.as_mapping() if product else None,
                      cycle=cycle)
    try:
        value = compile_expression(tree, {})(ctx)
    except Exception:  # an expression reading something this view cannot give: leave it unchecked
        return None
    return value if isinstance(value, timedelta) else None


def rules_can_fire(ruleset, events=(), actions=(), **_):
    """Every rule can act: no `when` (or `recheck`) is false whatever the events and the customer.

    Judged from the rule's text against the documented meaning of the data (rulecrm.testing.never_true),
    not from a run: a dead rule sends nothing, so no run can show it.
    """
    for rule in ruleset.active_rules:
        for part in ("when", "recheck"):
            tree = getattr(rule, part)
            reason = why_never_true(tree, rule.on)
            if reason is not None:
                pos = start_of(tree)
                where = f"{rule.source.path}:{pos.line}:{pos.column}"
                raise InvariantViolation(
                    "rules_can_fire", f"rule {rule.id} can never act: its {part} at {where} can never be true "
                    f"({reason})")


def unless_can_cancel(ruleset, events=(), actions=(), **_):
    """Every `unless ... same FIELD` can cancel something: FIELD is not a misspelling of a documented field.

    Judged from the rule's text against the documented fields (rulecrm.testing.never_true): with a
    misspelled field the reminder goes out after the new order, the escalation after the handling.
    """
    for rule in ruleset.active_rules:
        for part, unless in (("unless", rule.unless), ("escalate.unless", rule.escalate.unless if rule.escalate
                                                                          else None)):
            reason = why_unless_never_matches(unless, rule.on)
            if reason is not None:
                raise InvariantViolation(
                    "unless_can_cancel", f"rule {rule.id} at {rule.source}: its {part} "
                    f"`{unless.event_type} same {unless.same}` can never cancel anything ({reason})")


ENGINE_INVARIANTS = (caps_respected, no_marketing_to_opted_out, escalations_justified, no_duplicate_sends,
                     quiet_hours_respected)
TEXT_INVARIANTS = (rules_can_fire, unless_can_cancel)  # judged from the rules' text alone


def check_all(ruleset, events, actions, *, until=None, intent=True):
    """Run every engine invariant, then (intent=True) `caps_not_bypassed`, `rules_can_fire` and
    `unless_can_cancel`; the first failure raises."""
    for check in ENGINE_INVARIANTS + ((caps_not_bypassed, *TEXT_INVARIANTS) if intent else ()):
        check(ruleset, events, actions, until=until)


# -- helpers for a shop's own intent -----------------------------------------------------
def assert_at_most(actions, n: int, *, per: timedelta, kind=None, kinds=("marketing",), to="customer",
                   channels=None, events=None, timezone="UTC"):
    """No customer gets more than `n` sent messages of `kinds` (or `kind`) to `to` in any `per`.

    Counted on every channel unless `channels` is given; rolling windows (t - per, t]. With
    `events`, `message.sent` events before a send count too (kind default marketing); naive
    event times are read in `timezone` (give the shop's, e.g. `shop.ruleset.shop.timezone`).
    """
    zone = _zone(timezone)
    wanted = {kind} if kind is not None else set(kinds)
    sends = defaultdict(list)
    for action in actions:
        if (action["status"] == "sent" and action["kind"] in ("notify", "escalate") and action["to"] == to
                and action["message_kind"] in wanted and (channels is None or action["channel"] in channels)):
            sends[action["customer_id"]].append((parse_timestamp(action["sent_at"], zone), action))
    external = defaultdict(list)
    for event in events or ():
        data = event.get("data") or {}
        if event["type"] == "message.sent" and data.get("kind", "marketing") in wanted and (
                channels is None or data.get("channel") in channels):
            external[event["customer_id"]].append(parse_timestamp(event["at"], zone))
    for customer, items in sends.items():
        items.sort(key=lambda pair: pair[0])
        for sent, _action in items:
            window = [a for t, a in items if sent - per < t <= sent]
            before = [t for t in external[customer] if sent - per < t < sent]
            if len(window) + len(before) > n:
                raise InvariantViolation(
                    "at_most", f"{len(window) + len(before)} {'/'.join(sorted(wanted))} messages within "
                    f"{format_duration(per)} (at most {n} wanted)", customer_id=customer, actions=window,
                    events=[e for e in events or () if e["customer_id"] == customer and e["type"] == "message.sent"])


def assert_escalated_or_handled(events, actions, *, within: timedelta, trigger="review.created", where=None,
                                handled="review.handled", same="review_id", until=None, timezone="UTC"):
    """Every `trigger` event (passing `where(event)`) is handled or escalated within `within`.

    Handled: a `handled` event of the customer with the same `same` field at or before the
    deadline; escalated: an `escalate` action for that event sent by then; replaced: a later
    trigger for the same item by then (the engine then follows the later one). Deadlines after
    `until` (default: the last event's instant) are not judged. Naive times are in `timezone`.
    """
    zone = _zone(timezone)
    instants = [parse_timestamp(e["at"], zone) for e in events]
    end = (max(instants, default=None) if until is None
           else until if isinstance(until, datetime) else parse_timestamp(until, zone))
    for position, (event, start) in enumerate(zip(events, instants, strict=False)):
        if event["type"] != trigger or (where is not None and not where(event)):
            continue
        deadline = start + within
        if end is None or deadline > end:
            continue
        key = (event.get("data") or {}).get(same)
        done = any(
            other["type"] == handled and other["customer_id"] == event["customer_id"]
            and (other.get("data") or {}).get(same) == key and start <= at <= deadline
            for other, at in zip(events, instants, strict=False))
        done = done or any(
            a["kind"] == "escalate" and a["status"] == "sent" and a["trigger"] == event.get("id")
            and parse_timestamp(a["sent_at"], zone) <= deadline for a in actions)
        done = done or any(  # a later trigger for the same item replaces it: judged by that one
            other["type"] == trigger and other["customer_id"] == event["customer_id"] and other is not event
            and (other.get("data") or {}).get(same) == key and start <= at <= deadline
            and (where is None or where(other)) and n > position
            for n, (other, at) in enumerate(zip(events, instants, strict=False)))
        if not done:
            raise InvariantViolation(
                "escalated_or_handled", f"{trigger} {event.get('id')} was neither handled nor escalated "
                f"within {format_duration(within)}", customer_id=event["customer_id"],
                actions=[a for a in actions if a.get("trigger") == event.get("id")], events=[event])


def _zone(value):
    return get_zone(value) if isinstance(value, str) else value
