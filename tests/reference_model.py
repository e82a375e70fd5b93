"""A naive, independent model of rulecrm's event-time semantics (docs/rules.md) for a small rule subset.

The subset: profile tag rules (with `untag: true`), event rules with an immediate `notify` (and an
optional `tag`), delayed rules (`after` a fixed duration, `unless <type> [same <field>]`),
escalations with fixed step delays, rolling caps (suppress or defer), opt-out, lifecycle stages and
`stage.changed` rules. No quiet hours, templates, channels, birthdays, cycles or calendar caps.

Everything is kept in plain lists and recomputed by scanning them; nothing here is shared with the
engine. A rule set is described once (`RuleSet`) and rendered to YAML for the engine with `to_yaml`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction

MAX_DEFERS = 3  # docs: a deferring cap reschedules a send at most 3 times, then suppresses it
MAX_PROFILE_PASSES = 8  # docs: profile rules run to a fixpoint of at most 8 passes
LIFECYCLE_ORDER = -1  # docs: lifecycle transitions come before rule timers at the same instant
# Event types whose built-in effect changes the profile facts this model keeps (docs, "Events").
PROFILE_EVENTS = {"order.placed", "order.refunded", "review.created", "review.handled",
                  "customer.opted_out", "customer.opted_in"}


# -- the rule subset ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Cond:
    """`<scope>.<name> <op> <value>`; scope "customer" or "event"; op "tagged" is `value in customer.tags`."""

    scope: str
    name: str
    op: str
    value: object = None

    def holds(self, customer: "Customer", event: dict | None) -> bool:
        if self.op == "tagged":
            return self.value in customer.tags
        source = customer.facts() if self.scope == "customer" else {**(event or {})["data"], "type": event["type"]}
        if self.name not in source:
            return False  # a comparison with a missing field is false
        left, right = source[self.name], self.value
        if isinstance(right, str) != isinstance(left, str):
            return False  # values compare only within a kind
        if self.op == "contains":
            return right in left
        return {"==": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
                ">": left > right, ">=": left >= right}[self.op]

    def to_yaml(self) -> str:
        if self.op == "tagged":
            return f'"{self.value}" in customer.tags'
        value = f'"{self.value}"' if isinstance(self.value, str) else repr(self.value)
        return f"{self.scope}.{self.name} {self.op} {value}"


@dataclass(frozen=True)
class Rule:
    id: str
    on: str | None = None  # None: a profile rule
    when: tuple[Cond, ...] = ()  # all must hold
    tag: str | None = None
    untag: bool = False
    to: str | None = None  # notify recipient: "customer" or a contact name
    kind: str | None = None  # message kind; default marketing to the customer, else service
    after: timedelta | None = None
    unless: tuple[str, str | None] | None = None  # (event type, same field or None)
    steps: tuple[tuple[timedelta, str], ...] = ()  # escalation (after, to), cancelled by `unless`
    enabled: bool = True

    @property
    def message_kind(self) -> str:
        return self.kind or ("marketing" if self.to == "customer" else "service")


@dataclass(frozen=True)
class Cap:
    id: str
    max: int
    per: timedelta
    defer: bool = False
    kinds: tuple[str, ...] = ("marketing",)


@dataclass(frozen=True)
class Lifecycle:
    growing_orders: int = 2
    mature_orders: int = 5
    dormant_after: timedelta = timedelta(days=90)
    churned_after: timedelta = timedelta(days=180)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    caps: tuple[Cap, ...] = ()
    lifecycle: Lifecycle = Lifecycle()
    contacts: tuple[str, ...] = ("cs", "boss")

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id and r.enabled), None)

    def index(self, rule_id: str) -> int:
        return [r.id for r in self.rules].index(rule_id)

    def to_yaml(self) -> str:
        lines = ["contacts:"]
        lines += [f"  {name}: {{channel: console, address: {name}-address}}" for name in self.contacts]
        if self.caps:
            lines.append("caps:")
            for cap in self.caps:
                on_cap = ", on_cap: defer" if cap.defer else ""
                lines.append(f"  - {{id: {cap.id}, kinds: [{', '.join(cap.kinds)}], max: {cap.max}, "
                             f"per: {_duration(cap.per)}{on_cap}}}")
        life = self.lifecycle
        lines.append(f"lifecycle: {{growing_orders: {life.growing_orders}, mature_orders: {life.mature_orders}, "
                     f"dormant_after: {_duration(life.dormant_after)}, "
                     f"churned_after: {_duration(life.churned_after)}}}")
        lines.append("rules:")
        for rule in self.rules:
            lines.append(f"  - id: {rule.id}")
            if rule.on:
                lines.append(f"    on: {rule.on}")
            if rule.when:
                lines.append(f"    when: '{' and '.join(c.to_yaml() for c in rule.when)}'")
            if rule.tag:
                lines.append(f"    tag: {rule.tag}")
                lines.append(f"    untag: {'true' if rule.untag else 'false'}")
            if rule.after is not None:
                lines.append(f"    after: {_duration(rule.after)}")
            if rule.unless and not rule.steps:
                lines.append(f"    unless: {_unless(rule.unless)}")
            if rule.to:
                kind = f", kind: {rule.kind}" if rule.kind else ""
                lines.append(f'    notify: {{to: {rule.to}{kind}, template: "{rule.id}"}}')
            if rule.steps:
                lines.append("    escalate:")
                if rule.unless:
                    lines.append(f"      unless: {_unless(rule.unless)}")
                lines.append("      steps:")
                lines += [f"        - {{after: {_duration(after)}, notify: {{to: {to}}}}}" for after, to in rule.steps]
            if not rule.enabled:
                lines.append("    enabled: false")
        return "\n".join(lines) + "\n"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _unless(unless) -> str:
    event_type, same = unless
    return f"{event_type} same {same}" if same else event_type


def same_value(value) -> tuple:
    """docs: `same` values are equal when they are the same JSON value, numbers compared as numbers
    (1 is 1.0) and kinds kept apart (true is not 1, "1" is not 1), inside lists and objects too."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", Fraction(value))
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("list", tuple(same_value(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, same_value(item)) for key, item in value.items()))
    return ("null",)


# -- state ---------------------------------------------------------------------------------------
@dataclass
class Customer:
    id: str
    orders: list[tuple[datetime, float]] = field(default_factory=list)
    refunds: list[float] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    stage: str = "new"
    opted_out: bool = False
    sends: list[tuple[datetime, str]] = field(default_factory=list)  # (instant, message kind)

    def facts(self) -> dict:
        return {"order_count": len(self.orders),
                "total_spent": sum(amount for _, amount in self.orders) - sum(self.refunds),
                "opted_out": self.opted_out, "stage": self.stage}


@dataclass
class Timer:
    key: tuple  # a new timer with the same key replaces the pending one
    due: datetime
    order: int  # rule position; lifecycle timers first
    seq: int  # creation order
    customer: str
    what: str  # "after" | "step" | "release" | "stage"
    rule: str | None = None
    trigger: dict | None = None
    step: int | None = None
    unless: tuple | None = None  # (event type, same field, trigger's value of it)
    action: dict | None = None  # "release": the held action


class Model:
    """Feed it what the engine gets (`add`, `advance`, `finish`, `reload`); read `actions`."""

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self.customers: dict[str, Customer] = {}
        self.timers: list[Timer] = []
        self.held: dict[str, dict] = {}  # action key -> action held by a deferring cap
        self.keys: set[str] = set()  # every action key ever decided
        self.seen_ids: set[str] = set()
        self.seq = 0
        self.actions: list[dict] = []  # one entry per status an action reaches, in order

    # -- driving -------------------------------------------------------------------------------
    def reload(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset  # profiles, timers and held actions stay

    def add(self, *events: dict) -> None:
        for event in sorted(events, key=lambda e: e["at"]):  # stable: ties keep their order
            self._fire_timers(lambda due: due < event["at"])  # noqa: B023 (called at once); events at T come before timers at T
            if event["id"] in self.seen_ids:
                continue
            self.seen_ids.add(event["id"])
            self._apply(event)

    def advance(self, to: datetime) -> None:
        self._fire_timers(lambda due: due <= to)

    def finish(self) -> None:
        for action in sorted(self.held.values(), key=lambda a: (a["due_at"], a["order"], a["key"])):
            if action["status"] != "deferred":
                action["status"] = "deferred"
                self._report(action)

    def customer(self, customer_id: str) -> Customer:
        return self.customers.setdefault(customer_id, Customer(customer_id))

    # -- timers ----------------------------------------------------------------------------------
    def _schedule(self, timer: Timer) -> None:
        self.timers = [t for t in self.timers if t.key != timer.key]
        self.seq += 1
        timer.seq = self.seq
        self.timers.append(timer)

    def _fire_timers(self, is_due) -> None:
        while True:
            due = [t for t in self.timers if is_due(t.due)]
            if not due:
                return
            timer = min(due, key=lambda t: (t.due, t.order, t.seq))
            self.timers.remove(timer)
            getattr(self, f"_fire_{timer.what}")(timer)

    def _fire_after(self, timer: Timer) -> None:
        rule = self.ruleset.rule(timer.rule)
        if rule is not None:  # a rule removed or disabled since: its timer fires into nothing
            self._notify(rule, rule.to, timer.customer, timer.trigger["id"], timer.due)

    def _fire_step(self, timer: Timer) -> None:
        rule = self.ruleset.rule(timer.rule)
        if rule is None or len(rule.steps) < timer.step:
            return
        to = rule.steps[timer.step - 1][1]
        self._notify(rule, to, timer.customer, timer.trigger["id"], timer.due, step=timer.step,
                     late=timer.due - timer.trigger["at"])

    def _fire_release(self, timer: Timer) -> None:
        self._gate(timer.action, timer.due)

    def _fire_stage(self, timer: Timer) -> None:
        customer = self.customer(timer.customer)
        stage_event = self._update_stage(customer, timer.due, f"lifecycle@{timer.due.isoformat()}")
        if stage_event:
            self._run_profile_rules(customer, stage_event["trigger"], timer.due)
            self._run_event_rules(customer, stage_event)

    # -- one event -------------------------------------------------------------------------------
    def _apply(self, event: dict) -> None:
        customer = self.customer(event["customer_id"])
        changed = self._effect(customer, event)
        self._cancel(customer, event)
        stage_event = self._update_stage(customer, event["at"], event["id"])
        if changed or stage_event:
            self._run_profile_rules(customer, event["id"], event["at"])
        self._run_event_rules(customer, event)
        if stage_event:
            self._run_event_rules(customer, stage_event)

    @staticmethod
    def _effect(customer: Customer, event: dict) -> bool:
        kind, data, at = event["type"], event["data"], event["at"]
        if kind == "order.placed":
            customer.orders.append((at, data.get("amount", 0)))
        elif kind == "order.refunded":
            customer.refunds.append(data.get("amount", 0))
        elif kind in ("customer.opted_out", "customer.opted_in"):
            customer.opted_out = kind == "customer.opted_out"
        elif kind == "message.sent":
            customer.sends.append((at, data.get("kind", "marketing")))
        return kind in PROFILE_EVENTS

    def _cancel(self, customer: Customer, event: dict) -> None:
        def cancels(timer: Timer) -> bool:
            if timer.customer != customer.id or timer.unless is None or timer.unless[0] != event["type"]:
                return False
            _, same, value = timer.unless
            other = event["data"].get(same) if same else None
            return same is None or (value is not None and other is not None and same_value(other) == same_value(value))

        self.timers = [t for t in self.timers if not cancels(t)]

    def _stage_at(self, customer: Customer, at: datetime) -> str:
        life = self.ruleset.lifecycle
        if not customer.orders:
            return "new"
        idle = at - customer.orders[-1][0]
        if idle >= life.churned_after:
            return "churned"
        if idle >= life.dormant_after:
            return "dormant"
        if len(customer.orders) >= life.mature_orders:
            return "mature"
        return "growing" if len(customer.orders) >= life.growing_orders else "new"

    def _update_stage(self, customer: Customer, at: datetime, trigger: str) -> dict | None:
        old, new = customer.stage, self._stage_at(customer, at)
        stage_event = None
        if new != old:
            customer.stage = new
            self._record({"key": f"lifecycle|{customer.id}|{trigger}|stage", "rule": "lifecycle",
                          "customer_id": customer.id, "kind": "stage", "to": new, "due_at": at,
                          "status": "sent", "reason": None, "sent_at": at, "step": None})
            stage_event = {"type": "stage.changed", "customer_id": customer.id, "at": at, "trigger": trigger,
                           "id": f"stage.changed|{customer.id}|{at.isoformat()}|{new}",
                           "data": {"from": old, "to": new}}
        # The exact instant the stage next changes with no new event; its timer is (re)made when it moves.
        life = self.ruleset.lifecycle
        last = customer.orders[-1][0] if customer.orders else None
        upcoming = [last + d for d in (life.dormant_after, life.churned_after) if last and last + d > at]
        key = ("stage", customer.id)
        current = next((t for t in self.timers if t.key == key), None)
        if not upcoming:
            self.timers = [t for t in self.timers if t.key != key]
        elif current is None or current.due != upcoming[0]:
            self._schedule(Timer(key, upcoming[0], LIFECYCLE_ORDER, 0, customer.id, "stage"))
        return stage_event

    # -- rules -------------------------------------------------------------------------------------
    def _run_profile_rules(self, customer: Customer, trigger: str, at: datetime) -> None:
        rules = [r for r in self.ruleset.rules if r.enabled and r.on is None and r.tag]
        for _ in range(MAX_PROFILE_PASSES):
            holding = {r.id: all(c.holds(customer, None) for c in r.when) for r in rules}  # one snapshot a pass
            changed = False
            for rule in rules:
                if rule.untag and not holding[rule.id] and rule.tag in customer.tags:
                    self._set_tag(rule, customer, False, trigger, at)
                    changed = True
                elif holding[rule.id] and rule.tag not in customer.tags:
                    self._set_tag(rule, customer, True, trigger, at)
                    changed = True
            if not changed:
                return

    def _run_event_rules(self, customer: Customer, event: dict) -> None:
        matching = [r for r in self.ruleset.rules
                    if r.enabled and r.on == event["type"] and all(c.holds(customer, event) for c in r.when)]
        for rule in matching:
            if rule.after is not None:
                self._schedule(Timer(self._timer_key("after", rule, customer, event), event["at"] + rule.after,
                                     self.ruleset.index(rule.id), 0, customer.id, "after", rule.id, event,
                                     unless=self._unless(rule, event)))
                continue
            tagged = bool(rule.tag) and rule.tag not in customer.tags
            if tagged:
                self._set_tag(rule, customer, True, event["id"], event["at"])
            if rule.to:
                self._notify(rule, rule.to, customer.id, event["id"], event["at"])
            for number, (after, _to) in enumerate(rule.steps, 1):
                self._schedule(Timer(self._timer_key("step", rule, customer, event) + (number,),
                                     event["at"] + after, self.ruleset.index(rule.id), 0, customer.id, "step",
                                     rule.id, event, step=number, unless=self._unless(rule, event)))
            if tagged:
                self._run_profile_rules(customer, event["id"], event["at"])

    @staticmethod
    def _unless(rule: Rule, event: dict) -> tuple | None:
        if rule.unless is None:
            return None
        event_type, same = rule.unless
        return (event_type, same, event["data"].get(same) if same else None)

    @staticmethod
    def _timer_key(what: str, rule: Rule, customer: Customer, event: dict) -> tuple:
        """A trigger replaces the pending timer of the same rule and key: the `same` value, else the customer."""
        same = rule.unless[1] if rule.unless else None
        return (what, rule.id, customer.id, same_value(event["data"].get(same)) if same else None)

    # -- actions -----------------------------------------------------------------------------------
    def _set_tag(self, rule: Rule, customer: Customer, add: bool, trigger: str, at: datetime) -> None:
        (customer.tags.add if add else customer.tags.discard)(rule.tag)
        kind = "tag" if add else "untag"
        self._record({"key": f"{rule.id}|{customer.id}|{trigger}|{kind}", "rule": rule.id,
                      "customer_id": customer.id, "kind": kind, "to": rule.tag, "due_at": at,
                      "status": "sent", "reason": None, "sent_at": at, "step": None})

    def _notify(self, rule, to, customer_id, trigger, due, *, step=None, late=None) -> None:
        key = f"{rule.id}|{customer_id}|{trigger}" + (f"|step{step}" if step else "")
        if key in self.keys:
            return
        self.keys.add(key)
        action = {"key": key, "rule": rule.id, "customer_id": customer_id, "kind": "escalate" if step else "notify",
                  "to": to, "due_at": due, "status": None, "reason": None, "sent_at": None, "step": step,
                  "late_seconds": int(late.total_seconds()) if late is not None else None,
                  "message_kind": rule.message_kind, "order": self.ruleset.index(rule.id), "defers": 0}
        self._gate(action, due)

    def _gate(self, action: dict, now: datetime) -> None:
        """Opt-out (marketing) then caps in order; staff notifications pass every gate."""
        customer = self.customer(action["customer_id"])
        if action["to"] != "customer":
            return self._finish(action, "sent", None, now)
        if action["message_kind"] == "marketing" and customer.opted_out:
            return self._finish(action, "suppressed", "opt-out", None)
        for cap in self.ruleset.caps:
            if action["message_kind"] not in cap.kinds:
                continue
            counted = [at for at, kind in customer.sends if kind in cap.kinds]
            if sum(now - cap.per < at <= now for at in counted) < cap.max:
                continue
            if cap.defer and action["defers"] < MAX_DEFERS:
                allowed = [t for t in sorted(at + cap.per for at in counted)
                           if t > now and sum(t - cap.per < at <= t for at in counted) < cap.max]
                action["defers"] += 1
                action["status"], action["reason"] = "held", f"cap:{cap.id}"
                self.held[action["key"]] = action
                self._schedule(Timer(("release", action["key"]), allowed[0], action["order"], 0,
                                     customer.id, "release", action=action))
                return
            return self._finish(action, "suppressed", f"cap:{cap.id}", None)
        customer.sends.append((now, action["message_kind"]))
        self._finish(action, "sent", None, now)

    def _finish(self, action: dict, status: str, reason: str | None, sent_at: datetime | None) -> None:
        self.held.pop(action["key"], None)
        action.update(status=status, reason=reason, sent_at=sent_at)
        self._report(action)

    def _record(self, action: dict) -> None:
        if action["key"] not in self.keys:
            self.keys.add(action["key"])
            self._report(action)

    def _report(self, action: dict) -> None:
        self.actions.append({**{k: action.get(k) for k in FIELDS}, "defers": action.get("defers", 0)})


FIELDS = ("key", "rule", "customer_id", "kind", "to", "due_at", "status", "reason", "sent_at", "step",
          "late_seconds", "defers")
