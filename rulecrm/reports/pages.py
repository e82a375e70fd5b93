"""The two pages: a replay's actions (`replay --report`) and a diff's two sides (`diff --report`)."""
from __future__ import annotations

from rulecrm.reports.collect import ActionLog
from rulecrm.reports.data import figures
from rulecrm.reports.html import render_page


def replay_page(log: ActionLog, *, rules: str, events: str, until, rule_ids: list[str], summary,
                partitions: int | None = None) -> str:
    """The report of one replay, from its actions (`log`) and its ReplaySummary."""
    details = [
        ("rules", str(rules)), ("events", str(events)),
        ("until", until.isoformat() if until is not None else "the last event's time"),
        ("replay", f"{partitions} partitions" if partitions else "single"),
        ("events read", f"{summary.events}: applied {summary.applied}, duplicates {summary.duplicates}, "
                        f"rejected {summary.rejected}"),
        ("backend", summary.backend),
    ]
    return render_page(title="rulecrm replay report", details=details,
                       sides=[{"name": "replay", "figures": figures(log, rule_ids)}])


def diff_page(old_log: ActionLog, new_log: ActionLog, report, *, partitions: int | None = None) -> str:
    """The report of a diff (`rulecrm.app.diffing.RuleSetDiff`): both sides' figures and its per-rule counts."""
    from rulecrm.app.diff_report import as_json

    document = as_json(report)
    changes = {
        "rules": [{key: value for key, value in rule.items() if key != "examples"} for rule in document["rules"]],
        "totals": document["totals"], "rules_added": document["rules_added"],
        "rules_removed": document["rules_removed"],
    }
    old, new = report.old, report.new
    details = [
        ("old rules", f"{old.path} ({report.old_actions} actions)"),
        ("new rules", f"{new.path} ({report.new_actions} actions)"),
        ("events", report.events),
        ("until", " / ".join(sorted({run.until.isoformat() if run.until else "the last event's time"
                                     for run in (old, new)}))),
        ("replay", f"{partitions} partitions" if partitions else "single"),
    ]
    sides = [{"name": "old", "figures": figures(old_log, old.rule_ids)},
             {"name": "new", "figures": figures(new_log, new.rule_ids)}]
    return render_page(title="rulecrm diff report", details=details, sides=sides, changes=changes)
