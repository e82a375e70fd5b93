"""`rulecrm diff`'s two outputs: text for people, one JSON document for tools (both in docs/cli.md)."""
from __future__ import annotations

from rulecrm.app.diffing import APPEAR, CHANGE, CHANGES, DISAPPEAR, Difference, RuleDiff, RuleSetDiff

_MARKS = {APPEAR: "+", DISAPPEAR: "-", CHANGE: "~"}


def render_text(report: RuleSetDiff) -> list[str]:
    """A header, each rule's counts with its examples (stage actions last), then the totals."""
    lines = [
        f"rules {report.old.path} -> {report.new.path}, events {report.events}{_until(report)}",
        f"actions: {report.old_actions} -> {report.new_actions}",
    ]
    if report.rules_added:
        lines.append(f"rules added: {', '.join(report.rules_added)}")
    if report.rules_removed:
        lines.append(f"rules removed: {', '.join(report.rules_removed)}")
    for rule in report.rules:
        lines.append(f"{rule.rule}{' (stage actions)' if rule.stage else ''}: {_counts(rule.counts)}")
        lines.extend(f"  {_example(example)}" for example in rule.examples)
        shown = len(rule.examples)
        if shown < sum(rule.counts.values()):
            lines.append(f"  ... {sum(rule.counts.values()) - shown} more")
    if not report.differs:
        lines.append("no differences")
    rules = len(report.rules)
    lines.append(f"total: {_counts(report.totals)} in {rules} rule{'' if rules == 1 else 's'}")
    return lines


def as_json(report: RuleSetDiff) -> dict:
    """The document `diff --json` prints."""
    return {
        "old": _side(report.old, report.old_actions),
        "new": _side(report.new, report.new_actions),
        "events": report.events,
        "rules_added": list(report.rules_added),
        "rules_removed": list(report.rules_removed),
        "rules": [_rule_json(rule) for rule in report.rules],
        "totals": report.totals,
    }


def _until(report: RuleSetDiff) -> str:
    untils = {run.until.isoformat() for run in (report.old, report.new) if run.until is not None}
    return f", until {' / '.join(sorted(untils))}" if untils else ""


def _counts(counts: dict) -> str:
    return f"+{counts[APPEAR]} appear, -{counts[DISAPPEAR]} disappear, ~{counts[CHANGE]} change"


def _example(example: Difference) -> str:
    old = _status(example.old_status, example.old_reason)
    new = _status(example.new_status, example.new_reason)
    outcome = {APPEAR: new, DISAPPEAR: old, CHANGE: f"{old} -> {new}"}[example.change]
    return f"{_MARKS[example.change]} {example.customer_id} {example.key}: {outcome}"


def _status(status: str | None, reason: str | None) -> str:
    return f"{status} ({reason})" if reason else str(status)


def _side(run, actions: int) -> dict:
    return {"rules": run.path, "until": run.until.isoformat() if run.until else None, "actions": actions}


def _rule_json(rule: RuleDiff) -> dict:
    return {"rule": rule.rule, "stage": rule.stage, **{change: rule.counts[change] for change in CHANGES},
            "examples": [_example_json(example) for example in rule.examples]}


def _example_json(example: Difference) -> dict:
    return {
        "change": example.change, "customer_id": example.customer_id, "key": example.key, "kind": example.kind,
        "old": None if example.change == APPEAR else {"status": example.old_status, "reason": example.old_reason},
        "new": None if example.change == DISAPPEAR else {"status": example.new_status, "reason": example.new_reason},
    }
