"""Hypothesis strategies for rule files: valid ones from the rule-file grammar, and near-valid mutations of them."""
from __future__ import annotations

import re

from hypothesis import strategies as st

from rulecrm.schema import STAGES

__all__ = ["CONTACTS", "SKUS", "TEXTS", "extreme_rule_files", "mutated_rule_files", "rule_files"]

SKUS = ("tea", "pot", "cup")
CATEGORIES = ("tea", "ware")
CONTACTS = ("cs", "manager")
# The last text makes Python's re backtrack exponentially on "(a+)+$": `matches` must not stall on it.
TEXTS = ("hi", "buy soon", "近期要买", "stop", "refund please", "a" * 40 + "!")
TIMEZONES = ("UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York")
DURATIONS = ("30m", "1h", "2h", "6h", "1d", "1d12h", "2d", "3d", "1w")
PATTERNS = ("buy|soon", "^hi", "近期", "[0-9]+", "stop$", "re(fund)?", "(a+)+$", "^(a|aa)*$", "(?i)HI|STOP")

# The fields rules can read on each event type, by value type.
NUMBER_FIELDS = {
    "order.placed": ("amount", "quantity"), "order.refunded": ("amount",), "review.created": ("rating",),
    "birthday": ("year", "age"),
}
STRING_FIELDS = {
    "order.placed": ("sku", "category", "platform"), "order.delivered": ("sku", "order_id"),
    "order.refunded": ("sku", "order_id"), "review.created": ("review_id", "text"),
    "review.handled": ("review_id",), "complaint.opened": ("complaint_id", "text"),
    "chat.received": ("text",), "stage.changed": ("from", "to"), "customer.upserted": ("name", "source"),
}
EVENT_TYPES = ("order.placed", "order.delivered", "order.refunded", "review.created", "review.handled",
               "complaint.opened", "chat.received", "customer.upserted", "stage.changed", "birthday")
# (trigger type, cancelling type, fields both carry) for `unless <type> same <field>`.
CANCELLING = {
    "order.placed": (("order.placed", ("sku", "category")), ("order.refunded", ("order_id", "sku")),
                     ("order.delivered", ("order_id",))),
    "review.created": (("review.handled", ("review_id", "order_id")),),
    "complaint.opened": (("complaint.resolved", ("complaint_id",)),),
    "chat.received": (("chat.received", ()), ("order.placed", ())),
}
CUSTOMER_NUMBERS = ("customer.order_count", "customer.total_spent", "customer.refund_count",
                    "customer.open_reviews", 'customer.sku["tea"].order_count', 'customer.category["ware"].total_spent')
CUSTOMER_STRINGS = ("customer.name", "customer.stage", "customer.source", "customer.owner")


def _quoted(text: str) -> str:
    return '"' + text + '"'


def _numbers(event_type):
    atoms = [st.integers(0, 500).map(str), st.sampled_from(["1.5", "0.5", "100"]), st.sampled_from(CUSTOMER_NUMBERS)]
    if event_type in NUMBER_FIELDS:
        atoms.append(st.sampled_from([f"event.{f}" for f in NUMBER_FIELDS[event_type]]))
    atom = st.one_of(*atoms)
    arithmetic = st.tuples(atom, st.sampled_from(["+", "-", "*"]), atom).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    division = st.tuples(atom, st.integers(1, 9)).map(lambda t: f"{t[0]} / {t[1]}")
    return st.one_of(atom, atom, arithmetic, division)


def _strings(event_type):
    names = list(CUSTOMER_STRINGS) + [f"event.{f}" for f in STRING_FIELDS.get(event_type, ())]
    if event_type is not None:
        names.append("event.type")
    return st.sampled_from(names)


def _literals():
    return st.sampled_from(SKUS + CATEGORIES + STAGES + TEXTS).map(_quoted)


def _comparisons(event_type):
    numbers, strings = _numbers(event_type), _strings(event_type)
    number_cmp = st.tuples(numbers, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers)
    string_cmp = st.tuples(strings, st.sampled_from(["==", "!="]), _literals())
    listed = st.lists(_literals(), min_size=1, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    membership = st.tuples(strings, st.sampled_from(["in", "not in"]), listed)
    contains = st.tuples(strings, st.just("contains"), st.sampled_from(["buy", "a", "近期", "x"]).map(_quoted))
    matches = st.tuples(strings, st.just("matches"), st.sampled_from(PATTERNS).map(_quoted))
    tagged = st.tuples(st.sampled_from(["vip", "big", "intent"]).map(_quoted), st.sampled_from(["in", "not in"]),
                       st.just("customer.tags"))
    flags = st.tuples(st.sampled_from(["customer.opted_out", "customer.is_contact"]), st.sampled_from(["==", "!="]),
                      st.sampled_from(["true", "false"]))
    times = st.tuples(st.sampled_from(["customer.last_order_at", "customer.first_seen_at"]),
                      st.sampled_from(["<", ">="]), st.sampled_from(DURATIONS).map(
                          lambda d: f"event.at - {d}" if event_type else f"customer.first_seen_at + {d}"))
    return st.one_of(number_cmp, number_cmp, string_cmp, membership, contains, matches, tagged, flags,
                     times).map(" ".join)


def conditions(event_type=None, *, max_leaves: int = 4):
    """Well-typed boolean expressions over the names a rule `on` `event_type` can read."""
    return st.recursive(
        _comparisons(event_type),
        lambda inner: st.one_of(
            inner.map(lambda e: f"not ({e})"),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        ),
        max_leaves=max_leaves,
    )


def _delays(has_cycle: bool):
    duration = st.sampled_from(DURATIONS)
    options = [duration, st.tuples(duration, st.sampled_from(["+", "-"]), duration).map(" ".join),
               st.tuples(st.integers(1, 3), duration).map(lambda t: f"{t[0]} * {t[1]}")]
    if has_cycle:
        options.append(st.sampled_from(["cycle", "cycle - 3d", "cycle - 1d", "cycle + 12h"]))
    return st.one_of(*options)


def _yaml(text: str) -> str:
    """A YAML single-quoted scalar."""
    return "'" + text.replace("'", "''") + "'"


@st.composite
def _notify(draw, event_type):
    to = draw(st.sampled_from(("customer", "owner") + CONTACTS))
    parts = [f"to: {to}"]
    if draw(st.booleans()):
        parts.append("kind: " + draw(st.sampled_from(["marketing", "service", "transactional"])))
    if draw(st.booleans()):
        parts.append("channel: console")
    field = "event.type" if event_type else "customer.order_count"
    parts.append(f'template: "{{customer.id}} {{{field}}}"')
    return "{" + ", ".join(parts) + "}"


@st.composite
def _rule(draw, rule_id: str, *, event_types):
    lines = [f"  - id: {rule_id}"]
    event_type = draw(st.none() | event_types)
    if event_type is not None:
        lines.append(f"    on: {event_type}")
    if event_type is None or draw(st.booleans()):
        lines.append("    when: " + _yaml(draw(conditions(event_type))))
    if event_type is None:  # a profile rule: a tag, maybe removed again, maybe a notify
        lines.append(f"    tag: {draw(st.sampled_from(['vip', 'big', 'intent', 'loyal']))}")
        untag = draw(st.sampled_from(["true", "false", None, "condition"]))
        if untag == "condition":
            untag = _yaml(draw(conditions(None, max_leaves=2)))
        if untag is not None:
            lines.append(f"    untag: {untag}")
        if draw(st.booleans()):
            lines.append(f"    notify: {draw(_notify(None))}")
        return lines
    if event_type == "birthday" and draw(st.booleans()):
        lines.append(f'    at: "{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 30])):02d}"')
    delayed = draw(st.booleans())
    if delayed:
        lines.append(f"    after: {draw(_delays(event_type.startswith('order.')))}")
    escalating = not delayed and draw(st.booleans())
    unless = _unless(draw, event_type) if delayed or escalating else None
    if unless and delayed:
        lines.append(f"    unless: {unless}")
    if delayed and draw(st.booleans()):
        lines.append("    recheck: " + _yaml(draw(conditions(event_type, max_leaves=2))))
    if draw(st.booleans()):
        lines.append(f"    tag: {draw(st.sampled_from(['intent', 'reviewer', 'buyer']))}")
    lines.append(f"    notify: {draw(_notify(event_type))}")
    if escalating:
        lines.append("    escalate:")
        if unless:
            lines.append(f"      unless: {unless}")
        lines.append("      steps:")
        for delay in sorted(draw(st.lists(st.sampled_from(DURATIONS), min_size=1, max_size=3, unique=True)),
                            key=DURATIONS.index):
            lines.append(f"        - {{after: {delay}, "
                         f"notify: {{to: {draw(st.sampled_from(CONTACTS + ('owner',)))}}}}}")
    if draw(st.integers(0, 9)) == 0:
        lines.append("    enabled: false")
    return lines


def _unless(draw, event_type):
    choices = CANCELLING.get(event_type)
    if not choices:
        return None
    cancelling, fields = draw(st.sampled_from(choices))
    same = draw(st.none() | st.sampled_from(fields)) if fields else None
    return f"{cancelling} same {same}" if same else cancelling


@st.composite
def rule_files(draw, *, event_types=st.sampled_from(EVENT_TYPES), min_rules: int = 1, max_rules: int = 6,
               timezones=st.sampled_from(TIMEZONES)):
    """The text of one valid rule file: shop, products, contacts, caps, lifecycle and rules.

    `event_types` draws the `on` of event rules (profile rules are drawn too); `check` must accept
    every file (warnings allowed).
    """
    lines = ["shop:", f"  timezone: {draw(timezones)}"]
    if draw(st.booleans()):
        start, end = draw(st.sampled_from([("22:00", "08:00"), ("21:30", "09:00"), ("12:00", "13:00")]))
        lines.append(f'  quiet_hours: "{start}-{end}"')
        lines.append("  quiet_kinds: ["
                     f"{', '.join(draw(st.sets(st.sampled_from(['marketing', 'service']), min_size=1)))}]")
    lines.append("products:")
    for sku in SKUS:
        entry = [f"sku: {sku}", f"name: {sku.title()}", f"category: {'tea' if sku == 'tea' else 'ware'}"]
        if draw(st.booleans()):
            entry.append(f"cycle: {draw(st.sampled_from(['3d', '7d', '30d']))}")
            if draw(st.booleans()):
                entry += ["learn_cycle: true", f"learn_min_orders: {draw(st.integers(2, 4))}"]
        lines.append("  - {" + ", ".join(entry) + "}")
    lines.append("contacts:")
    lines += [f"  {name}: {{channel: console, address: {name}-desk}}" for name in CONTACTS]
    caps = draw(st.integers(0, 3))
    if caps:
        lines.append("caps:")
    for number in range(caps):
        calendar = draw(st.booleans())
        per = draw(st.sampled_from(["1d", "1w", "month"] if calendar else ["1h", "6h", "1d", "2d", "1w"]))
        kinds = draw(st.sets(st.sampled_from(["marketing", "service"]), min_size=1))
        entry = [f"id: cap-{number}", f"kinds: [{', '.join(sorted(kinds))}]", f"max: {draw(st.integers(1, 3))}",
                 f"per: {per}"]
        if calendar:
            entry.append("window: calendar")
        if draw(st.booleans()):
            entry.append(f"on_cap: {draw(st.sampled_from(['suppress', 'defer']))}")
        lines.append("  - {" + ", ".join(entry) + "}")
    if draw(st.booleans()):
        growing = draw(st.integers(1, 3))
        dormant = draw(st.integers(1, 30))
        lines.append(f"lifecycle: {{growing_orders: {growing}, mature_orders: {growing + draw(st.integers(1, 3))}, "
                     f"dormant_after: {dormant}d, churned_after: {dormant + draw(st.integers(1, 30))}d}}")
    lines.append("rules:")
    for number in range(draw(st.integers(min_rules, max_rules))):
        lines += draw(_rule(f"rule-{number}", event_types=event_types))
    return "\n".join(lines) + "\n"


_KEY = re.compile(r"^(\s*-?\s*)([a-z_]+):")
_WRONG_VALUES = ("[1, 2]", "{a: 1}", "yes", "-3", "1.5x", "''", "null", "30 days", "\"22:00\"")
_BROKEN_EXPRESSIONS = ("(", " ==", " and", ' matches "("', " +", ")", " in", "event.", '"', " nott x")


def _misspell(word: str, draw) -> str:
    at = draw(st.integers(0, max(len(word) - 2, 0)))
    how = draw(st.sampled_from(["swap", "drop", "double"]))
    if how == "swap" and len(word) > 1:
        return word[:at] + word[at + 1] + word[at] + word[at + 2:]
    if how == "drop":
        return word[:at] + word[at + 1:]
    return word[:at] + word[at] + word[at:]


@st.composite
def mutated_rule_files(draw, *, valid=None, max_mutations: int = 3):
    """A valid rule file (from `valid`, default `rule_files()`) with a few near-miss edits: a line
    deleted or duplicated, a key misspelled, a value of the wrong type, an expression broken."""
    lines = draw(valid if valid is not None else rule_files()).splitlines()
    for _ in range(draw(st.integers(1, max_mutations))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        how = draw(st.sampled_from(["delete", "duplicate", "misspell", "wrong-type", "break-expression"]))
        key = _KEY.match(line)
        if how == "delete" and len(lines) > 1:
            del lines[index]
        elif how == "duplicate":
            lines.insert(index, line)
        elif how == "misspell" and key:
            lines[index] = key.group(1) + _misspell(key.group(2), draw) + line[key.end() - 1:]
        elif how == "wrong-type" and key:
            lines[index] = line[: key.end()] + " " + draw(st.sampled_from(_WRONG_VALUES))
        elif how == "break-expression":
            expressions = [n for n, text in enumerate(lines) if re.match(r"\s*(when|untag|recheck|after):", text)]
            if expressions:
                index = draw(st.sampled_from(expressions))
                body = lines[index].rstrip("'")
                at = draw(st.integers(body.index(":") + 2, len(body)))
                broken = body[:at] + draw(st.sampled_from(_BROKEN_EXPRESSIONS)) + body[at:]
                lines[index] = broken + ("'" if lines[index].endswith("'") else "")
        else:
            lines[index] = line + draw(st.sampled_from([" #", "", "  extra: 1"]))
    return "\n".join(lines) + "\n"


# Values at and beyond the limits `check` enforces: durations at most 100 years (36500d), numbers at
# most 2^53 - 1 either way. Beyond them `check` must give a positioned error; within them the engine must
# run. Each list is drawn half within, half beyond (Hypothesis favours a list's first items).
LONGEST_DURATIONS = ("36500d", "5214w", "876000h", "3153600000s", "36499d23h59m59s", "1d" * 40, "0.0000001ms")
TOO_LONG_DURATIONS = (
    "36501d", "99999999999999999d", "3000000d", "5215w", "36500d1ms", "876001h", "3153600001s", "9" * 400 + "w",
    "1" + "0" * 30 + "ms",
)
LARGEST_NUMBERS = ("9007199254740991", "9_007_199_254_740_991", "9007199254740990.0", "0.0000000000000001", "0")
TOO_LARGE_NUMBERS = (
    "99999999999999999999999", "9007199254740992", ".inf", "1.0e400", ".nan", "9" * 5000, "-1.0e400",
    "-99999999999999999999999", "9007199254740993", "1.0e16", "-.inf", "1e400", "0x7fffffffffffffffff", "-1",
)
# `after` and escalation steps: constant arithmetic `check` computes, and arithmetic on customer
# values that only leaves the range at run time (the engine skips those delays).
CONSTANT_DELAYS = (
    "3d * 100000", "36500d + 1d", "36500d - 1d", "0.5 * 36500d", "36500d / 0.001", "36500d + 36500d - 36500d",
    "1d * 9007199254740991 * 9007199254740991", "-36500d - 1d", "-36500d",
)
RUN_TIME_DELAYS = (
    "1d * (customer.order_count + 3000000)", "-1d * (customer.order_count + 3000000)",
    "1d * (customer.order_count + 40000)", "36500d * (customer.order_count + 9007199254740991)",
    "cycle * (customer.order_count + 1000000)", "cycle * 1000000", "cycle / 0.000000001", "cycle - 36500d",
    "cycle + 36500d",
)
# Pieces spliced into conditions (`when`, `recheck`, `untag`), each a complete comparison.
EXTREME_CONDITIONS = (
    "customer.total_spent > 1e999", "customer.total_spent > 99999999999999999999999",
    "customer.first_seen_at + 3000000d > customer.first_seen_at",
    "customer.first_seen_at + 36500d * (customer.order_count + 1000000) > customer.first_seen_at",
    "customer.total_spent * 9007199254740991 * 9007199254740991 > 1", "customer.order_count / 0.0000000000000001 > 1",
    "customer.total_spent > 9007199254740991", "customer.total_spent < -9007199254740991",
    "customer.first_seen_at + 36500d > customer.first_seen_at",
    "customer.first_seen_at - 36500d - 36500d - 36500d < customer.first_seen_at",
    "customer.last_order_at - customer.first_seen_at < 5215w", "customer.order_count >= 9007199254740993",
)
_DURATION_VALUES = st.one_of(st.sampled_from(LONGEST_DURATIONS), st.sampled_from(TOO_LONG_DURATIONS))
_NUMBER_VALUES = st.one_of(st.sampled_from(LARGEST_NUMBERS), st.sampled_from(TOO_LARGE_NUMBERS))
_DELAY_VALUES = st.one_of(st.sampled_from(RUN_TIME_DELAYS), _DURATION_VALUES, st.sampled_from(CONSTANT_DELAYS))
_FIELDS = {  # rule-file key -> the extreme values it is given
    "cycle": _DURATION_VALUES, "per": _DURATION_VALUES, "dormant_after": _DURATION_VALUES,
    "churned_after": _DURATION_VALUES, "after": _DELAY_VALUES, "learn_min_orders": _NUMBER_VALUES,
    "max": _NUMBER_VALUES, "growing_orders": _NUMBER_VALUES, "mature_orders": _NUMBER_VALUES,
    "price": _NUMBER_VALUES,
}
_FIELD = re.compile(r"(?<![\w-])(" + "|".join(_FIELDS) + r"): ([^,}\n]+)")
_CONDITION = re.compile(r"^(\s*(?:when|recheck|untag): )'(.*)'$")


@st.composite
def extreme_rule_files(draw, *, valid=None, max_edits: int = 4):
    """A valid rule file (from `valid`, default `rule_files()`) with extreme numbers and durations put
    into its fields: products' cycle, learn_min_orders and price; caps' max and per; lifecycle
    thresholds; `after` of rules and escalation steps; comparisons added to conditions."""
    lines = draw(valid if valid is not None else rule_files()).splitlines()
    for index, line in enumerate(lines):  # give every product a price to vary
        if line.startswith("  - {sku: "):
            lines[index] = line[:-1] + ", price: 128}"
    # Each kind of field (and conditions) is as likely to be edited, however many lines hold it.
    places: dict = {}
    for index, line in enumerate(lines):
        if _CONDITION.match(line):
            places.setdefault("condition", []).append(index)
        for field in _FIELD.finditer(line):
            places.setdefault(field.group(1), []).append(index)
    kinds = sorted(places) + (["after"] * 2 if "after" in places else [])  # delays reach the engine's own bound
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(kinds))
        index = draw(st.sampled_from(places[kind]))
        line = lines[index]
        if kind == "condition":
            condition = _CONDITION.match(line)
            extra = draw(st.sampled_from(EXTREME_CONDITIONS))
            joined = f"({condition.group(2)}) {draw(st.sampled_from(['and', 'or']))} {extra}"
            lines[index] = f"{condition.group(1)}'{joined}'"
            continue
        field = next(match for match in _FIELD.finditer(line) if match.group(1) == kind)
        value = draw(_FIELDS[kind])
        if kind == "after" and not re.fullmatch(r"[0-9a-z.]+", value):
            value = "'" + value + "'"
        lines[index] = line[: field.start(2)] + value + line[field.end(2):]
    return "\n".join(lines) + "\n"
