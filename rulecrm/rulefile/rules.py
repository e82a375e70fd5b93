"""The `rules` section: one Rule per item, its expressions, templates and actions checked."""
from __future__ import annotations

import re
from datetime import time, timedelta

from rulecrm.expr.ast import Call, Name
from rulecrm.expr.checker import Scope
from rulecrm.expr.compiler import compile_expression
from rulecrm.expr.context import EvalContext
from rulecrm.expr.parser import start_pos, walk
from rulecrm.rulefile import exprs
from rulecrm.rulefile.channels import RESERVED_RECIPIENTS, read_channel_ref
from rulecrm.rulefile.declared import Declared
from rulecrm.rulefile.fields import (
    INVALID,
    Fields,
    boolean,
    choice,
    mapping,
    sequence,
    text,
    time_of_day,
    type_error,
)
from rulecrm.rulefile.model import NOTIFY_KINDS, Escalation, Notify, Rule, Step, Unless
from rulecrm.rulefile.report import Report
from rulecrm.rulefile.yamlpos import Scalar
from rulecrm.schema import BUILTIN_EVENT_TYPES, EVENT_ENVELOPE_FIELDS
from rulecrm.suggest import closest, did_you_mean
from rulecrm.timeutil import within_limit

RULE_KEYS = ("id", "description", "on", "when", "after", "unless", "tag", "untag", "notify", "escalate",
             "recheck", "at", "enabled")
NOTIFY_KEYS = ("to", "channel", "kind", "template")
ESCALATE_KEYS = ("unless", "steps")
STEP_KEYS = ("after", "notify")
RULE_REQUIRED = ("id",)
NOTIFY_REQUIRED = ("to", "template")
STEP_NOTIFY_REQUIRED = ("to",)  # a step's notify takes the rest from the rule's own notify
ESCALATE_REQUIRED = ("steps",)
STEP_REQUIRED = ("after", "notify")
RULE_ACTIONS = ("tag", "notify", "escalate")  # a rule needs at least one
UNLESS_SAME = "same"  # `unless: <event type> same <field>`
RULE_ID = re.compile(r"[a-z0-9-]+")
EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:/-]+")
BIRTHDAY = "birthday"
DEFAULT_BIRTHDAY_AT = time(9, 0)
_UNLESS_SYNTAX = "'<event type>' or '<event type> same <field>'"
_BUILTIN_CUTOFF = 0.8
_NAME_CUTOFF = 0.5  # recipient names are short: "cx" should still suggest "cs"


def read_rules(report: Report, key: Scalar, node, declared: Declared, lines: list[str]) -> None:
    if sequence(report, node, label="rules") is INVALID:
        return
    for item in node.items:
        index = declared.rule_count
        declared.rule_count += 1
        if mapping(report, item, label="rules item") is INVALID:
            continue
        rule = _RuleReader(report, declared, lines).read(item, index)
        if rule is not None:
            declared.rules.append(rule)


def read_event_type(report: Report, node, *, label: str):
    """Any event type, except one so close to a built-in type that it is surely a misspelling."""
    name = text(report, node, label=label)
    if name is INVALID:
        return INVALID
    return _event_type_word(report, node, name, (node.line, node.column))


def _event_type_word(report: Report, node, name: str, at):
    if not EVENT_TYPE.fullmatch(name):
        report.error(at, f"{name!r} is not a valid event type", expected="an event type such as order.placed",
                     found=repr(name))
        return INVALID
    if name not in BUILTIN_EVENT_TYPES:
        near = closest(name, BUILTIN_EVENT_TYPES, cutoff=_BUILTIN_CUTOFF)
        if near is not None:
            report.error(at, f"unknown event type {name!r} (too close to the built-in {near!r} to be a custom type)",
                         expected="a built-in event type or a clearly different custom one", found=repr(name),
                         hint=f"did you mean {near!r}?")
            return INVALID
    return name


def _spelled(fields: Fields, name: str) -> str | None:
    """The text of a key's value as written, for checking the rest of a rule whose `name` is wrong."""
    node = fields.value(name) if name in fields else None
    return node.text if isinstance(node, Scalar) and node.kind == "string" else None


class _RuleReader:
    """Reads one rule item; every problem is reported, the Rule is returned only when all is well."""

    def __init__(self, report: Report, declared: Declared, lines: list[str]):
        self.report = report
        self.declared = declared
        self.lines = lines
        self.scope = Scope(None)

    def read(self, item, index: int) -> Rule | None:
        report, declared = self.report, self.declared
        fields = Fields(report, item, RULE_KEYS, what="rule", required=RULE_REQUIRED)
        rule_id = fields.get("id", text, pattern=RULE_ID, rule="lowercase letters, digits and '-'")
        if rule_id and not declared.claim(report, "rule id", rule_id, fields.value("id")):
            rule_id = INVALID
        on = fields.get("on", read_event_type)
        self.scope = Scope(
            event_type=on if on else _spelled(fields, "on"),
            functions=declared.functions,
            skus=frozenset(declared.known("product")),
        )
        description = fields.get("description", text)
        when = fields.get("when", self.expression, want="bool")
        after = fields.get("after", self.expression, want="duration")
        recheck = fields.get("recheck", self.expression, want="bool")
        unless = fields.get("unless", self.unless, trigger=on)
        tag = fields.get("tag", text)
        untag = fields.get("untag", self.untag, False)
        notify = fields.get("notify", self.notify, step=False)
        escalate = fields.get("escalate", self.escalate, base=notify, trigger=on)
        at = fields.get("at", time_of_day)
        enabled = fields.get("enabled", boolean, True)
        self.check_combinations(item, fields, on)
        if on == BIRTHDAY and at is None:
            at = DEFAULT_BIRTHDAY_AT
        values = (rule_id, on, description, when, after, recheck, unless, tag, untag, notify, escalate, at, enabled)
        if not rule_id or INVALID in values:
            return None
        return Rule(
            id=rule_id, index=index, source=report.source(item), on=on, description=description, when=when,
            after=after, unless=unless, tag=tag, untag=untag, notify=notify, escalate=escalate, recheck=recheck,
            at=at, enabled=enabled,
        )

    def check_combinations(self, item, fields: Fields, on) -> None:
        report = self.report
        if "after" in fields and "on" not in fields:
            report.error(fields.key("after"), "`after` needs `on`: a profile rule has no trigger time to wait from",
                         hint="add `on: <event type>` or remove `after`")
        if "after" in fields and "escalate" in fields:
            report.error(fields.key("escalate"), "a rule cannot have both `after` and `escalate`",
                         hint="put the delays in the escalation steps, or split the rule in two")
        if "unless" in fields and "after" not in fields and "escalate" not in fields:
            report.error(fields.key("unless"),
                         "`unless` needs `after` or `escalate`: there is nothing pending to cancel",
                         hint="add `after: <delay>` or remove `unless`")
        if "recheck" in fields and "after" not in fields and "escalate" not in fields:
            report.error(fields.key("recheck"),
                         "`recheck` needs `after` or `escalate`: it is evaluated when a timer fires",
                         hint="add `after: <delay>` or use `when`")
        if "untag" in fields and "tag" not in fields:
            report.error(fields.key("untag"), "`untag` needs `tag`", hint="add `tag: <name>` or remove `untag`")
        if "at" in fields and on != BIRTHDAY and on is not INVALID:
            report.error(fields.key("at"), "`at` is only for birthday rules", expected="on: birthday",
                         found=f"on: {on}" if on else "a profile rule", hint="remove `at` or use `on: birthday`")
        if not any(action in fields for action in RULE_ACTIONS):
            report.error(item, "this rule does nothing: it needs `tag`, `notify` or `escalate`",
                         expected="an action (tag, notify or escalate)")

    def expression(self, report: Report, node, *, label: str, want: str):
        tree = exprs.expression(report, node, label=label, scope=self.scope, want=want, lines=self.lines)
        if want == "duration" and tree and not _constant_delay_fits(tree):
            start = start_pos(tree)
            report.error(exprs.place(node, self.lines).fix(start.line, start.column),
                         f"`{label}` comes to more than 100 years",
                         expected="a delay of at most 36500d (100 years)", found=repr(node.text[:40]),
                         hint="durations in rule files are limited to 100 years")
            return INVALID
        if want == "duration" and tree and not self.declared.any_cycle:
            for name in exprs.cycle_names(tree):
                report.warning(name.pos, "`cycle` is used but no product declares a `cycle`",
                               hint="add `cycle: <duration>` to the products this rule is for")
        return tree

    def untag(self, report: Report, node, *, label: str):
        if isinstance(node, Scalar) and node.kind == "boolean":
            return node.value
        if isinstance(node, Scalar) and node.kind == "string":
            return self.expression(report, node, label=label, want="bool")
        return type_error(report, node, label, "true, false or a condition")

    def unless(self, report: Report, node, *, label: str, trigger):
        source = text(report, node, label=label)
        if source is INVALID:
            return INVALID
        line, column = exprs.origin(node, self.lines)
        tokens = [(match.group(), match.start()) for match in re.finditer(r"\S+", source)]
        if not (len(tokens) == 1 or (len(tokens) == 3 and tokens[1][0] == UNLESS_SAME)):
            report.error(node, f"cannot read `{label}: {source}`", expected=_UNLESS_SYNTAX, found=repr(source),
                         hint="for example: review.handled same review_id")
            return INVALID
        at = (line, column + tokens[0][1]) if "\n" not in source else (line, column)
        event_type = _event_type_word(report, node, tokens[0][0], at)
        if len(tokens) == 1:
            return Unless(event_type)
        same = tokens[2][0]
        field_at = (line, column + tokens[2][1]) if "\n" not in source else (line, column)
        for owner in (trigger, event_type):
            if owner and owner in BUILTIN_EVENT_TYPES:
                known = {*BUILTIN_EVENT_TYPES[owner], *EVENT_ENVELOPE_FIELDS}
                if same not in known:
                    report.warning(field_at, f"event type {owner!r} has no field {same!r}; nothing will match",
                                   expected="one of " + ", ".join(sorted(known)), found=repr(same),
                                   hint=did_you_mean(same, known))
                    break
        return Unless(event_type, same)

    def recipient(self, report: Report, node, *, label: str):
        name = text(report, node, label=label)
        if name is INVALID or name in RESERVED_RECIPIENTS:
            return name
        contacts = self.declared.known("contact")
        if name not in contacts and self.declared.complete:
            report.error(node, f"unknown recipient {name!r}",
                         expected="customer, owner or a contact declared under `contacts`", found=repr(name),
                         hint=did_you_mean(name, ["customer", "owner", *contacts], cutoff=_NAME_CUTOFF))
            return INVALID
        return name

    def notify(self, report: Report, node, *, label: str, step: bool, base=None):
        if mapping(report, node, label=label) is INVALID:
            return INVALID
        required = STEP_NOTIFY_REQUIRED if step else NOTIFY_REQUIRED
        fields = Fields(report, node, NOTIFY_KEYS, what=label, required=required)
        to = fields.get("to", self.recipient)
        channel = fields.get("channel", read_channel_ref, None, declared=self.declared)
        kind = fields.get("kind", choice, None, choices=NOTIFY_KINDS, what="kind")
        message = fields.get("template", exprs.template, None, scope=self.scope, lines=self.lines)
        if step and base is not INVALID:
            # A staff step does not take over the channel of the rule's message to the customer:
            # an internal note must not go out on a customer-facing channel (docs/rules.md).
            inherits = base and not (base.to == "customer" and to != "customer")
            channel = channel if "channel" in fields else base.channel if inherits else None
            kind = kind if "kind" in fields else base.kind if base else None
            message = message if "template" in fields else base.template if base else None
            if message is None:
                report.error(node, "this step's notify needs `template` (the rule has no `notify` to take it from)",
                             expected="a `template` key")
                message = INVALID
        if INVALID in (to, channel, kind, message, base) or "to" not in fields:
            return INVALID
        if to == "owner" and channel is None and not self.declared.known("contact") and self.declared.complete:
            report.warning(fields.value("to"), "`to: owner` reaches no one: no contact is declared and this notify "
                           "names no channel", expected="a contact named like each owner, or a staff `channel`",
                           found="to: owner", hint="such actions are suppressed with no-address; staff notes "
                           "never use the customer's channel")
        return Notify(to, channel, kind, message, report.source(node))

    def escalate(self, report: Report, node, *, label: str, base, trigger):
        if mapping(report, node, label=label) is INVALID:
            return INVALID
        fields = Fields(report, node, ESCALATE_KEYS, what="escalate", required=ESCALATE_REQUIRED)
        unless = fields.get("unless", self.unless, None, trigger=trigger)
        steps_node = fields.get("steps", sequence)
        if not steps_node:
            return INVALID
        if not steps_node.items:
            report.error(steps_node, "an escalation needs at least one step", expected="a list of {after, notify}",
                         found="an empty list")
            return INVALID
        steps = [self.step(report, item, base) for item in steps_node.items]
        self.check_step_order(report, steps_node.items, steps)
        if unless is INVALID or INVALID in steps:
            return INVALID
        return Escalation(unless, tuple(steps))

    def step(self, report: Report, node, base):
        if mapping(report, node, label="escalation step") is INVALID:
            return INVALID
        fields = Fields(report, node, STEP_KEYS, what="escalation step", required=STEP_REQUIRED)
        after = fields.get("after", self.expression, want="duration")
        notify = fields.get("notify", self.notify, step=True, base=base)
        if not after or not notify:
            return INVALID
        return Step(after, notify, report.source(node))

    def check_step_order(self, report: Report, nodes, steps) -> None:
        previous = None
        for node, step in zip(nodes, steps, strict=False):
            delay = exprs.constant_duration(step.after) if step else None
            if delay is None:
                continue
            if previous is not None and delay <= previous:
                after_node = next(value for key, value in node.pairs if key.text == "after")
                report.warning(after_node, "escalation steps should wait longer than the step before",
                               expected="an `after` longer than the previous step's", found=after_node.text,
                               hint="order the steps by their `after`")
            previous = delay


def _constant_delay_fits(tree) -> bool:
    """False when a delay made of literals only (`36500d + 1d`, `3d * 100000`) is beyond the
    100-year limit or overflows; delays that read names are bounded by the engine at run time."""
    if any(isinstance(node, (Name, Call)) for node in walk(tree)):
        return True
    value = compile_expression(tree)(EvalContext())  # arithmetic never raises: overflow is MISSING
    return isinstance(value, timedelta) and within_limit(value)
