"""The `caps` section: frequency caps over rolling or calendar windows."""
from __future__ import annotations

from datetime import timedelta

from rulecrm.rulefile.channels import read_channel_ref
from rulecrm.rulefile.declared import Declared
from rulecrm.rulefile.fields import (
    INVALID,
    Fields,
    boolean,
    choice,
    duration_text,
    integer,
    mapping,
    names,
    sequence,
    text,
    type_error,
)
from rulecrm.rulefile.model import Cap
from rulecrm.rulefile.report import Report
from rulecrm.rulefile.sections import read_kinds
from rulecrm.rulefile.yamlpos import Scalar, Seq, describe
from rulecrm.timeutil import DURATION_SYNTAX

CAP_KEYS = ("id", "kinds", "max", "per", "window", "on_cap", "channels", "per_channel")
CAP_REQUIRED = ("id", "per")
CAP_MINIMUMS = {"max": 0}
ROLLING, CALENDAR = "rolling", "calendar"
WINDOWS = (ROLLING, CALENDAR)
ON_CAP = ("suppress", "defer")
CALENDAR_PERIODS = {"1d": "day", "day": "day", "1w": "week", "7d": "week", "week": "week",
                    "1mo": "month", "month": "month"}
_CALENDAR_EXPECTED = "1d or day, 1w, 7d or week, 1mo or month"


def read_caps(report: Report, key: Scalar, node, declared: Declared) -> None:
    if sequence(report, node, label="caps") is INVALID:
        return
    for item in node.items:
        if mapping(report, item, label="caps item") is INVALID:
            continue
        _read_cap(report, item, declared)


def _read_cap(report: Report, item, declared: Declared) -> None:
    fields = Fields(report, item, CAP_KEYS, what="cap", required=CAP_REQUIRED)
    cap_id = fields.get("id", text)
    kinds = fields.get("kinds", read_kinds, frozenset({"marketing"}))
    if "kinds" in fields and isinstance(fields.value("kinds"), Seq) and not fields.value("kinds").items:
        report.error(fields.value("kinds"), "a cap must name at least one kind", expected="a list of kinds",
                     found="an empty list", hint="kinds: [marketing]")
    maximum = fields.get("max", integer, 1, minimum=CAP_MINIMUMS["max"])
    if maximum == 0:
        report.warning(fields.value("max"), "max: 0 blocks every send of these kinds; write it only on purpose")
    window = fields.get("window", choice, ROLLING, choices=WINDOWS, what="window")
    on_cap = fields.get("on_cap", choice, "suppress", choices=ON_CAP, what="on_cap")
    channels = fields.get("channels", names, None, item=read_channel_ref, declared=declared)
    per_channel = fields.get("per_channel", boolean, False)
    per, period = None, None
    if "per" in fields and window is not INVALID:
        per_node = fields.value("per")
        if window == CALENDAR:
            period = _calendar_period(report, per_node)
        else:
            per = _rolling_per(report, per_node)
    values = (cap_id, kinds, maximum, window, on_cap, channels, per_channel, per, period)
    if cap_id and not declared.claim(report, "cap", cap_id, fields.value("id")):
        return
    if not cap_id or "per" not in fields or INVALID in values:
        return
    declared.caps[cap_id] = Cap(
        id=cap_id, kinds=kinds, max=maximum, per=per, window=window, period=period, on_cap=on_cap,
        channels=frozenset(channels) if channels is not None else None, per_channel=per_channel,
        source=report.source(item),
    )


def _calendar_period(report: Report, node):
    spelled = node.text.strip() if isinstance(node, Scalar) and node.kind == "string" else None
    if spelled in CALENDAR_PERIODS:
        return CALENDAR_PERIODS[spelled]
    report.error(node, "a calendar window is a day, a week or a month", expected=_CALENDAR_EXPECTED,
                 found=describe(node), hint="use window: rolling for other lengths")
    return INVALID


def _rolling_per(report: Report, node):
    if isinstance(node, Scalar) and node.kind == "string":
        if node.text.strip() in ("day", "week", "month", "1mo"):
            report.error(node, f"per: {node.text} is only for calendar windows", expected=DURATION_SYNTAX,
                         found=describe(node), hint="write a duration such as 1d or 7d, or window: calendar")
            return INVALID
        value = duration_text(report, node, "per")
        if value is INVALID:
            return INVALID
        if value <= timedelta(0):
            report.error(node, "`per` must be longer than zero", expected="a duration > 0", found=describe(node))
            return INVALID
        return value
    hint = f"add a unit, e.g. {node.text}d" if isinstance(node, Scalar) and node.kind == "integer" else None
    return type_error(report, node, "per", DURATION_SYNTAX, hint=hint)
