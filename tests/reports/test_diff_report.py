"""`rulecrm diff --report`: both sides' figures are those of each rule set's replay, and its changes per rule
are `diff --json`'s."""
from __future__ import annotations

import json

import pytest
from conftest import CDNOW_UNTIL, TEA_EVENTS, TEA_RULES, TEA_UNTIL, invoke
from report_html import daily, expected_caps, read_actions, read_page, shown_caps, shown_daily, shown_top_customers
from report_html import top_customers as expected_top_customers

from rulecrm.app.diffing import CHANGES

CDNOW_RULES = TEA_RULES.parents[0] / "cdnow"


def replay_actions(tmp_path, rules, events, until) -> list[dict]:
    out = tmp_path / f"{rules.name}-actions.jsonl"
    result = invoke("replay", "--rules", rules, "--events", events, "--until", until, "--backend", "python",
                    "--out", out)
    assert result.exit_code == 0, result.stderr
    return read_actions(out)


@pytest.fixture(scope="module")
def sides(tmp_path_factory, cdnow_events, tight_rules):
    """Each rule set's actions, from `rulecrm replay --out`."""
    tmp_path = tmp_path_factory.mktemp("sides")
    return {"old": replay_actions(tmp_path, CDNOW_RULES, cdnow_events, CDNOW_UNTIL),
            "new": replay_actions(tmp_path, tight_rules, cdnow_events, CDNOW_UNTIL)}


@pytest.mark.parametrize("options", [(), ("--partitions", 3)], ids=["single", "partitioned"])
def test_changes_per_rule_are_diff_json_s_and_each_side_is_its_replay(tmp_path, cdnow_events, tight_rules, sides,
                                                                       options):
    page = tmp_path / "report.html"
    result = invoke("diff", "--rules", CDNOW_RULES, "--rules-new", tight_rules, "--events", cdnow_events, "--until",
                    CDNOW_UNTIL, "--backend", "python", "--json", "--report", page, *options)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    data = read_page(page).data
    assert data["changes"]["rules"] == [{key: rule[key] for key in ("rule", "stage", *CHANGES)}
                                        for rule in document["rules"]]
    assert data["changes"]["totals"] == document["totals"] and document["totals"]["change"] > 0
    assert [side["name"] for side in data["sides"]] == ["old", "new"]
    for side in data["sides"]:
        actions = sides[side["name"]]
        figures = side["figures"]
        assert figures["actions"] == len(actions) == document[side["name"]]["actions"]
        assert shown_daily(figures) == daily(actions)
        assert shown_caps(figures) == expected_caps(actions)
        assert shown_top_customers(figures) == expected_top_customers(actions)
    table = read_page(page).tables["changes-table"]
    assert table[-1] == ["total", *(str(document["totals"][change]) for change in CHANGES)]


def test_the_text_output_is_unchanged_by_a_report(tmp_path):
    page = tmp_path / "report.html"
    args = ["diff", "--rules", TEA_RULES, "--rules-new", TEA_RULES, "--events", TEA_EVENTS, "--until", TEA_UNTIL,
            "--backend", "python"]
    plain, reported = invoke(*args), invoke(*args, "--report", page)
    assert reported.exit_code == plain.exit_code == 0
    assert reported.stdout == plain.stdout and "no differences" in plain.stdout
    assert reported.stderr == plain.stderr + f"report written to {page}\n"
    data = read_page(page).data
    assert data["changes"]["rules"] == [] and data["sides"][0]["figures"] == data["sides"][1]["figures"]
