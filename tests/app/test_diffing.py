"""`rulecrm.app.diffing` on the real CDNOW history: a diff is exactly what two separate replays tell apart."""
from __future__ import annotations

import functools
import io
import json
from collections import Counter
from datetime import datetime, timezone

import pytest
from cdnow_head import CDNOW_RULES, edited_cdnow_rules, write_cdnow_head

from rulecrm import plugins
from rulecrm.app import diffing
from rulecrm.app.partitioned_replay import InProcessTasks
from rulecrm.app.replay import replay

LINES = 2_500
EVERYTHING = 1_000_000  # examples per rule and kind: all of them


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    return write_cdnow_head(tmp_path_factory.mktemp("cdnow") / "head.jsonl", LINES)


@pytest.fixture(scope="module")
def rule_sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("rules")
    return {
        "tight": edited_cdnow_rules(base / "tight", "max: 1, per: 7d", "max: 1, per: 30d"),
        "swapped": edited_cdnow_rules(base / "swapped", "- id: big-spender\n    when: customer.total_spent >= 100\n"
                                      "    tag: big-spender", "- id: loyal\n    when: customer.order_count >= 3\n"
                                      "    tag: loyal"),
        "dormant-sooner": edited_cdnow_rules(base / "dormant", "dormant_after: 90d", "dormant_after: 60d"),
    }


def run(path, until=None) -> diffing.RuleSetRun:
    return diffing.RuleSetRun(str(path), plugins.load_rules_with(plugins.build_plugin_manager(), path), until)


@functools.cache  # the rule files and events of this module do not change: each replay once
def replayed(path, events, until=None) -> dict:
    """One separate replay's actions by key."""
    out = io.StringIO()
    replay(path, events, until=until, out=out, backend_name="python")
    actions = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len({a["key"] for a in actions}) == len(actions)
    return {a["key"]: a for a in actions}


def expected_differences(old: dict, new: dict) -> set:
    """(change, rule, customer, key, old (status, reason), new (status, reason)) of two replays' actions."""
    def outcome(action):
        return (action["status"], action["reason"])

    found = {("appear", a["rule"], a["customer_id"], key, None, outcome(a)) for key, a in new.items() if key not in old}
    found |= {("disappear", a["rule"], a["customer_id"], key, outcome(a), None)
              for key, a in old.items() if key not in new}
    found |= {("change", a["rule"], a["customer_id"], key, outcome(old[key]), outcome(a))
              for key, a in new.items() if key in old and outcome(old[key]) != outcome(a)}
    return found


def differences_of(report: diffing.RuleSetDiff) -> set:
    def outcome(status, reason):
        return None if status is None else (status, reason)

    return {(d.change, d.rule, d.customer_id, d.key, outcome(d.old_status, d.old_reason),
             outcome(d.new_status, d.new_reason)) for rule in report.rules for d in rule.examples}


def counts_of(report: diffing.RuleSetDiff) -> Counter:
    return Counter({(change, rule.rule): n for rule in report.rules for change, n in rule.counts.items() if n})


def diff(old, new, events, *, until=None, examples=EVERYTHING, **partitioned) -> diffing.RuleSetDiff:
    if partitioned:
        replay_into = diffing.partitioned_replay(backend_name="python", tasks=InProcessTasks(), **partitioned)
    else:
        replay_into = diffing.single_replay(backend_name="python")
    return diffing.diff_replays(run(old, until), run(new, until), events, replay_into, examples=examples)


@pytest.mark.parametrize("edit", ["tight", "swapped", "dormant-sooner"])
def test_a_diff_is_exactly_what_two_separate_replays_tell_apart(events, rule_sets, edit):
    old, new = replayed(CDNOW_RULES, events), replayed(rule_sets[edit], events)
    expected = expected_differences(old, new)
    report = diff(CDNOW_RULES, rule_sets[edit], events)
    assert expected and differences_of(report) == expected
    assert counts_of(report) == Counter((change, rule) for change, rule, *_rest in expected)
    assert (report.old_actions, report.new_actions) == (len(old), len(new))


def test_a_tighter_cap_changes_sends_into_suppressions_of_that_cap(events, rule_sets):
    report = diff(CDNOW_RULES, rule_sets["tight"], events)
    assert report.totals["appear"] == report.totals["disappear"] == 0 and report.totals["change"] > 50
    assert {rule.rule for rule in report.rules} == {"repurchase", "win-back"}
    outcomes = {(d.old_status, d.new_status, d.new_reason) for rule in report.rules for d in rule.examples}
    assert ("sent", "suppressed", "cap:marketing-weekly") in outcomes
    assert report.rules_added == report.rules_removed == []


def test_identical_rule_sets_give_no_differences(events):
    report = diff(CDNOW_RULES, CDNOW_RULES, events)
    assert not report.differs and report.rules == []
    assert report.totals == {"appear": 0, "disappear": 0, "change": 0}
    assert report.old_actions == report.new_actions > 5_000


def test_an_added_rule_appears_and_a_removed_one_disappears(events, rule_sets):
    report = diff(CDNOW_RULES, rule_sets["swapped"], events)
    assert (report.rules_added, report.rules_removed) == (["loyal"], ["big-spender"])
    by_rule = {rule.rule: rule.counts for rule in report.rules}
    new = replayed(rule_sets["swapped"], events)
    old = replayed(CDNOW_RULES, events)
    assert by_rule == {
        "loyal": {"appear": sum(a["rule"] == "loyal" for a in new.values()), "disappear": 0, "change": 0},
        "big-spender": {"appear": 0, "disappear": sum(a["rule"] == "big-spender" for a in old.values()), "change": 0},
    }
    assert [rule.rule for rule in report.rules] == ["loyal", "big-spender"]  # the new set's order, then removed rules


def test_stage_actions_are_reported_after_every_rule(events, rule_sets):
    report = diff(CDNOW_RULES, rule_sets["dormant-sooner"], events)
    assert [rule.rule for rule in report.rules][-1] == "lifecycle" and report.rules[-1].stage
    assert not any(rule.stage for rule in report.rules[:-1]) and len(report.rules) > 1


def test_examples_are_the_first_few_by_customer_and_key(events, rule_sets):
    everything = diff(CDNOW_RULES, rule_sets["tight"], events)
    few = diff(CDNOW_RULES, rule_sets["tight"], events, examples=3)
    for full, short in zip(everything.rules, few.rules, strict=True):
        assert short.counts == full.counts
        assert short.examples == sorted(full.examples, key=lambda d: (d.customer_id, d.key))[:3]


def test_until_is_respected_by_both_replays(events, rule_sets):
    until = datetime(1997, 6, 1, tzinfo=timezone.utc)
    expected = expected_differences(replayed(CDNOW_RULES, events, until), replayed(rule_sets["tight"], events, until))
    report = diff(CDNOW_RULES, rule_sets["tight"], events, until=until)
    assert differences_of(report) == expected
    assert 0 < len(expected) < len(differences_of(diff(CDNOW_RULES, rule_sets["tight"], events)))


def test_a_partitioned_diff_is_the_single_one(events, rule_sets):
    single = diff(CDNOW_RULES, rule_sets["tight"], events)
    partitioned = diff(CDNOW_RULES, rule_sets["tight"], events, partitions=3)
    assert differences_of(partitioned) == differences_of(single)
    assert [(r.rule, r.counts) for r in partitioned.rules] == [(r.rule, r.counts) for r in single.rules]
