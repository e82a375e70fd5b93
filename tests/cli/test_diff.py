"""`rulecrm diff` on the real CDNOW history: its JSON is exactly what two `rulecrm replay`s tell apart; its text,
its exit codes and its errors."""
from __future__ import annotations

import json
import re

import pytest
from cdnow_head import CDNOW_RULES, edited_cdnow_rules, write_cdnow_head
from click.testing import CliRunner
from helpers import rulecrm

from rulecrm import plugins
from rulecrm.cli import CliContext, main

LINES = 2_500
TIGHTER_CAP = ("max: 1, per: 7d", "max: 1, per: 30d")
UNTIL = "1997-06-01T00:00:00"


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    return write_cdnow_head(tmp_path_factory.mktemp("cdnow") / "head.jsonl", LINES)


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    return edited_cdnow_rules(tmp_path_factory.mktemp("rules") / "tight", *TIGHTER_CAP)


def invoke(*args):
    context = CliContext(manager=plugins.build_plugin_manager(load_entry_points=False))
    return CliRunner().invoke(main, [str(arg) for arg in args], obj=context)


def replay_actions(rules, events, tmp_path, *options) -> dict:
    """`rulecrm replay`'s actions by key, read back from its --out file."""
    out = tmp_path / f"actions-{len(list(tmp_path.iterdir()))}.jsonl"
    result = invoke("replay", "--rules", rules, "--events", events, "--backend", "python", "--out", out, *options)
    assert result.exit_code == 0, result.stderr
    actions = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return {a["key"]: a for a in actions}


def expected_from(old: dict, new: dict) -> set:
    """Every difference of two replays' actions, as (change, rule, customer, key, old, new) with old/new
    the JSON document's {"status", "reason"} (None where the action is missing)."""
    def outcome(action):
        return json.dumps({"status": action["status"], "reason": action["reason"]})

    keys = old.keys() | new.keys()
    found = set()
    for key in keys:
        before, after = old.get(key), new.get(key)
        if before is None or after is None or outcome(before) != outcome(after):
            change = "appear" if before is None else "disappear" if after is None else "change"
            action = after or before
            found.add((change, action["rule"], action["customer_id"], key,
                       before and outcome(before), after and outcome(after)))
    return found


def reported(document: dict) -> set:
    return {(e["change"], rule["rule"], e["customer_id"], e["key"], e["old"] and json.dumps(e["old"]),
             e["new"] and json.dumps(e["new"])) for rule in document["rules"] for e in rule["examples"]}


def diff_json(events, old, new, *options) -> dict:
    result = invoke("diff", "--rules", old, "--rules-new", new, "--events", events, "--backend", "python", "--json",
                    *options)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("until", [None, UNTIL], ids=["to-the-end", "until"])
def test_a_tighter_cap_gives_exactly_what_two_replays_tell_apart(events, tight, tmp_path, until):
    options = ("--until", until) if until else ()
    expected = expected_from(replay_actions(CDNOW_RULES, events, tmp_path, *options),
                             replay_actions(tight, events, tmp_path, *options))
    document = diff_json(events, CDNOW_RULES, tight, "--examples", 1_000_000, *options)
    assert len(expected) > 20
    assert reported(document) == expected
    for rule in document["rules"]:
        for change in ("appear", "disappear", "change"):
            assert rule[change] == sum(1 for c, r, *_ in expected if (c, r) == (change, rule["rule"]))
    assert document["totals"] == {"appear": 0, "disappear": 0, "change": len(expected)}
    assert document["old"]["until"] == (None if until is None else "1997-06-01T00:00:00+00:00")


def test_until_leaves_out_what_comes_after_it(events, tight):
    whole = diff_json(events, CDNOW_RULES, tight)
    early = diff_json(events, CDNOW_RULES, tight, "--until", UNTIL)
    assert 0 < early["totals"]["change"] < whole["totals"]["change"]
    assert early["old"]["actions"] < whole["old"]["actions"]


def test_the_json_document_shape(events, tight):
    document = diff_json(events, CDNOW_RULES, tight)
    assert set(document) == {"old", "new", "events", "rules_added", "rules_removed", "rules", "totals"}
    assert document["new"] == {"rules": str(tight), "until": None, "actions": document["old"]["actions"]}
    first = document["rules"][0]
    assert set(first) == {"rule", "stage", "appear", "disappear", "change", "examples"}
    assert len(first["examples"]) == 3
    assert first["examples"][0]["old"] == {"status": "sent", "reason": None}
    assert first["examples"][0]["new"] == {"status": "suppressed", "reason": "cap:marketing-weekly"}


def test_text_names_each_rule_with_counts_examples_and_totals(events, tight):
    result = invoke("diff", "--rules", CDNOW_RULES, "--rules-new", tight, "--events", events, "--backend", "python")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"rules {CDNOW_RULES} -> {tight}, events {events}"
    document = diff_json(events, CDNOW_RULES, tight)
    headings = [line for line in lines if re.fullmatch(r"[\w-]+: \+\d+ appear, -\d+ disappear, ~\d+ change", line)]
    assert headings == [f"{r['rule']}: +{r['appear']} appear, -{r['disappear']} disappear, ~{r['change']} change"
                        for r in document["rules"]]
    example = document["rules"][0]["examples"][0]
    assert (f"  ~ {example['customer_id']} {example['key']}: sent -> suppressed (cap:marketing-weekly)"
            in lines)
    totals = document["totals"]
    assert lines[-1] == f"total: +0 appear, -0 disappear, ~{totals['change']} change in {len(document['rules'])} rules"
    assert "replayed 2500 events under each rule set" in result.stderr


def test_identical_rule_sets_say_no_differences_and_exit_0(events):
    result = invoke("diff", "--rules", CDNOW_RULES, "--rules-new", CDNOW_RULES, "--events", events,
                    "--backend", "python")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["no differences", "total: +0 appear, -0 disappear, ~0 change in 0 rules"]


def test_an_added_and_a_removed_rule_are_named_and_appear_and_disappear(events, tmp_path):
    swapped = edited_cdnow_rules(tmp_path / "swapped", "- id: thank-big-order\n", "- id: thank-order\n")
    result = invoke("diff", "--rules", CDNOW_RULES, "--rules-new", swapped, "--events", events,
                    "--backend", "python")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "rules added: thank-order" in lines and "rules removed: thank-big-order" in lines
    thanks = [line for line in lines if line.startswith(("thank-order:", "thank-big-order:"))]
    count = int(re.search(r"\+(\d+) appear", thanks[0]).group(1))
    assert count > 100
    assert thanks == [f"thank-order: +{count} appear, -0 disappear, ~0 change",
                      f"thank-big-order: +0 appear, -{count} disappear, ~0 change"]


def test_stage_actions_come_last_in_the_text(events, tmp_path):
    sooner = edited_cdnow_rules(tmp_path / "sooner", "dormant_after: 90d", "dormant_after: 60d")
    result = invoke("diff", "--rules", CDNOW_RULES, "--rules-new", sooner, "--events", events, "--backend", "python")
    assert result.exit_code == 0, result.stderr
    headings = [line.split(":")[0] for line in result.stdout.splitlines()[:-1]  # the last: the totals
                if re.match(r"[\w-]+( \(.*\))?: \+", line)]
    assert headings[-1] == "lifecycle (stage actions)" and "win-back" in headings[:-1]


def test_rejected_lines_are_listed_once_and_exit_3(events, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(events.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    result = invoke("diff", "--rules", CDNOW_RULES, "--rules-new", CDNOW_RULES, "--events", broken,
                    "--backend", "python")
    assert result.exit_code == 3
    assert result.stderr.count(f"{broken}:{LINES + 1}: rejected:") == 1
    assert "no differences" in result.stdout


def test_a_bad_rule_file_is_reported_at_its_line_and_column_without_a_traceback(events, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {id: a, tag: t, wehn: 'true'}\n", encoding="utf-8")
    done = rulecrm("diff", "--rules", CDNOW_RULES, "--rules-new", bad, "--events", events)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines()[0].startswith(f"{bad}:2:21: error: unknown key 'wehn'")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("options, message", [
    (("--workers", 2), "--workers needs --partitions N"),
    (("--until", "soon"), "expected an ISO 8601 timestamp"),
])
def test_usage_errors_exit_1(events, options, message):
    result = invoke("diff", "--rules", CDNOW_RULES, "--rules-new", CDNOW_RULES, "--events", events, *options)
    assert result.exit_code == 1
    assert message in result.stderr
