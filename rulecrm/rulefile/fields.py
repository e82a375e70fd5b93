"""Typed reads of YAML nodes: each returns the value or INVALID after reporting why."""
from __future__ import annotations

import re
from datetime import time, timedelta

from rulecrm.expr.lexer import MAX_NUMBER, MAX_NUMBER_TEXT
from rulecrm.rulefile.report import Report
from rulecrm.rulefile.yamlpos import Map, Scalar, Seq, describe
from rulecrm.suggest import did_you_mean
from rulecrm.timeutil import DURATION_SYNTAX, parse_duration, within_limit


class _Invalid:
    """A value that was reported as wrong; later checks that depend on it stay quiet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"

    def __bool__(self) -> bool:
        return False


INVALID = _Invalid()
_TEXT_KINDS = ("string", "integer", "number", "date")
# Shapes the rule-file JSON Schema (rulefile/json_schema.py) repeats as patterns.
TIME_OF_DAY = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
DURATION_SHAPE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+")


def type_error(report: Report, node, label: str, expected: str, hint: str | None = None) -> _Invalid:
    report.error(node, f"`{label}` must be {expected}", expected=expected, found=describe(node), hint=hint)
    return INVALID


class Fields:
    """The keys of one mapping, checked against the allowed ones (unknown keys are errors)."""

    def __init__(self, report: Report, node: Map, allowed, *, what: str, required=()):
        self.report = report
        self.node = node
        self.what = what
        self.pairs = {key.text: (key, value) for key, value in node.pairs}
        for key, _ in node.pairs:
            if key.text not in allowed:
                report.error(
                    key, f"unknown key {key.text!r} in {what}", expected="one of " + ", ".join(allowed),
                    found=repr(key.text), hint=did_you_mean(key.text, allowed),
                )
        for name in required:
            if name not in self.pairs:
                report.error(node, f"{what} needs `{name}`", expected=f"a `{name}` key")

    def __contains__(self, name: str) -> bool:
        return name in self.pairs

    def key(self, name: str) -> Scalar:
        return self.pairs[name][0]

    def value(self, name: str):
        return self.pairs[name][1]

    def get(self, name: str, read, default=None, **options):
        """`read(report, node, label=name, **options)` when the key is present, else `default`."""
        if name not in self.pairs:
            return default
        return read(self.report, self.pairs[name][1], label=name, **options)


def mapping(report: Report, node, *, label: str) -> Map | _Invalid:
    return node if isinstance(node, Map) else type_error(report, node, label, "a mapping")


def sequence(report: Report, node, *, label: str) -> Seq | _Invalid:
    return node if isinstance(node, Seq) else type_error(report, node, label, "a list")


def text(report: Report, node, *, label: str, pattern: re.Pattern | None = None, rule: str | None = None):
    """A non-empty string; numbers and dates are read as written (`sku: 001` is "001")."""
    if not isinstance(node, Scalar) or node.kind not in _TEXT_KINDS:
        hint = f"quote it: \"{node.text}\"" if isinstance(node, Scalar) and node.kind == "boolean" else None
        return type_error(report, node, label, "a string", hint)
    if not node.text.strip():
        report.error(node, f"`{label}` must not be empty", expected="a string", found="an empty string")
        return INVALID
    if pattern is not None and not pattern.fullmatch(node.text):
        report.error(node, f"`{label}` {node.text!r} is not a valid name", expected=rule, found=repr(node.text))
        return INVALID
    return node.text


def boolean(report: Report, node, *, label: str):
    if isinstance(node, Scalar) and node.kind == "boolean":
        return node.value
    return type_error(report, node, label, "true or false")


def integer(report: Report, node, *, label: str, minimum: int | None = None, maximum: int | None = None):
    expected = "an integer" if minimum is None else f"an integer >= {minimum}"
    if maximum is not None:
        expected += f" and <= {maximum}"
    if not isinstance(node, Scalar) or node.kind != "integer":
        return type_error(report, node, label, expected)
    if minimum is not None and node.value < minimum:
        report.error(node, f"`{label}` must be at least {minimum}", expected=expected, found=describe(node))
        return INVALID
    if maximum is not None and node.value > maximum:
        report.error(node, f"`{label}` must be at most {maximum}", expected=expected, found=describe(node))
        return INVALID
    return _in_range(report, node, label, node.value)


def number(report: Report, node, *, label: str, minimum: float | None = None):
    expected = "a number" if minimum is None else f"a number >= {minimum}"
    if not isinstance(node, Scalar) or node.kind not in ("integer", "number"):
        return type_error(report, node, label, expected)
    if minimum is not None and not node.value >= minimum:
        report.error(node, f"`{label}` must be at least {minimum}", expected=expected, found=describe(node))
        return INVALID
    if _in_range(report, node, label, node.value) is INVALID:
        return INVALID
    return float(node.value)


def _in_range(report: Report, node: Scalar, label: str, value):
    """The value, or INVALID (reported) beyond MAX_NUMBER either way, infinite or not a number."""
    if not abs(value) <= MAX_NUMBER:
        report.error(node, f"`{label}` is out of range", expected=MAX_NUMBER_TEXT, found=describe(node),
                     hint="the largest number a rule file can hold exactly is 9007199254740991")
        return INVALID
    return value


def duration(report: Report, node, *, label: str, positive: bool = False) -> timedelta | _Invalid:
    """`30d`, `2h`, `1d12h`; a bare number is refused with a hint to add a unit."""
    if isinstance(node, Scalar) and node.kind in ("integer", "number"):
        return type_error(report, node, label, DURATION_SYNTAX, hint=f"add a unit, e.g. {node.text}d or {node.text}h")
    if not isinstance(node, Scalar) or node.kind != "string":
        return type_error(report, node, label, DURATION_SYNTAX)
    value = duration_text(report, node, label)
    if value is INVALID:
        return INVALID
    if positive and value <= timedelta(0):
        report.error(node, f"`{label}` must be longer than zero", expected="a duration > 0", found=describe(node))
        return INVALID
    return value


def duration_text(report: Report, node: Scalar, label: str) -> timedelta | _Invalid:
    """The duration a string scalar spells, at most MAX_DURATION long."""
    well_formed = DURATION_SHAPE.fullmatch(node.text.strip()) is not None
    try:
        value = parse_duration(node.text)
    except ValueError:
        value = None  # malformed, or too large to represent at all
    if value is None and not well_formed:
        return type_error(report, node, label, DURATION_SYNTAX)
    if value is None or not within_limit(value):
        report.error(node, f"`{label}` is longer than 100 years",
                     expected="a duration of at most 36500d (100 years)", found=describe(node),
                     hint="durations in rule files are limited to 100 years")
        return INVALID
    return value


def choice(report: Report, node, *, label: str, choices, what: str = "value"):
    """One of a fixed set of words, with did-you-mean."""
    expected = "one of " + ", ".join(choices)
    if not isinstance(node, Scalar) or node.kind not in _TEXT_KINDS:
        return type_error(report, node, label, expected)
    if node.text not in choices:
        report.error(node, f"unknown {what} {node.text!r}", expected=expected, found=repr(node.text),
                     hint=did_you_mean(node.text, choices))
        return INVALID
    return node.text


def names(report: Report, node, *, label: str, item=text, **options):
    """A list read item by item (a single scalar counts as a one-item list); INVALID items are dropped."""
    if isinstance(node, Scalar) and node.kind != "null":
        items = [node]
    elif isinstance(node, Seq):
        items = node.items
    else:
        return type_error(report, node, label, "a list")
    values = []
    for element in items:
        value = item(report, element, label=label, **options)
        if value is INVALID:
            continue
        values.append(value)
    return values


def time_of_day(report: Report, node, *, label: str) -> time | _Invalid:
    """`"HH:MM"`; an unquoted 09:00 (a YAML 1.1 number) is read from its text."""
    if isinstance(node, Scalar) and node.kind in _TEXT_KINDS:
        match = TIME_OF_DAY.fullmatch(node.text.strip())
        if match:
            return time(int(match.group(1)), int(match.group(2)))
    return type_error(report, node, label, 'a time of day "HH:MM"', hint='write it quoted, e.g. "09:00"')
