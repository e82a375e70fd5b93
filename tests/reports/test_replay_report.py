"""`rulecrm replay --report`: the page's figures are those of the actions `--out` got, single or partitioned."""
from __future__ import annotations

import pytest
from conftest import CDNOW_UNTIL, TEA_EVENTS, TEA_RULES, TEA_UNTIL, invoke
from report_html import (
    daily,
    expected_caps,
    lateness_seconds,
    read_actions,
    read_page,
    shown_caps,
    shown_daily,
    shown_top_customers,
    top_customers,
)


def replay_with_report(tmp_path, rules, events, until, *options):
    """(the actions of --out, the page's figures, the result) of one replay with --report."""
    out, page = tmp_path / "actions.jsonl", tmp_path / "report.html"
    result = invoke("replay", "--rules", rules, "--events", events, "--until", until, "--backend", "python",
                    "--out", out, "--report", page, *options)
    assert result.exit_code == 0, result.stderr
    return read_actions(out), read_page(page).data["sides"][0]["figures"], result


@pytest.mark.parametrize("options", [(), ("--partitions", 3)], ids=["single", "partitioned"])
def test_the_tea_shops_figures_are_those_of_its_actions(tmp_path, options):
    actions, figures, _ = replay_with_report(tmp_path, TEA_RULES, TEA_EVENTS, TEA_UNTIL, *options)
    assert figures["actions"] == len(actions) == 35
    assert shown_daily(figures) == daily(actions)
    assert figures["statuses"] == {"sent": 34, "suppressed": 1}
    assert shown_top_customers(figures) == top_customers(actions)
    assert shown_top_customers(figures) == [("c-1", 5), ("c-2", 3)]
    late = lateness_seconds(actions)
    assert figures["lateness"]["count"] == len(late) == 2
    assert figures["lateness"]["max_seconds"] == max(late) == 86_400
    assert figures["lateness"]["max"] == "1d"
    shown = {bucket["label"]: bucket["count"] for bucket in figures["lateness"]["buckets"]}
    assert shown == {"≤ 1h": 0, "1h–2h": 1, "2h–6h": 0, "6h–12h": 0, "12h–1d": 1, "1d–2d": 0, "2d–7d": 0, "> 7d": 0}
    assert {row["rule"]: row["max_seconds"] for row in figures["lateness"]["rules"]} == {
        "bad-review": 7_200, "neutral-review": 86_400}
    assert figures["caps"] == []


@pytest.mark.parametrize("options", [(), ("--partitions", 4)], ids=["single", "partitioned"])
def test_caps_that_bit_and_the_top_customers_on_cdnow(tmp_path, cdnow_events, tight_rules, options):
    actions, figures, _ = replay_with_report(tmp_path, tight_rules, cdnow_events, CDNOW_UNTIL, *options)
    assert shown_daily(figures) == daily(actions)
    expected = expected_caps(actions)
    assert expected[0][("marketing-weekly", "suppressed")] > 20  # the cap did bite
    assert shown_caps(figures) == expected
    assert shown_top_customers(figures) == top_customers(actions)
    assert len(figures["top_customers"]) == 20
    assert figures["rules"][:5] == ["repeat-buyer", "big-spender", "thank-big-order", "repurchase", "win-back"]


def test_a_partitioned_replay_shows_what_a_single_one_does(tmp_path, cdnow_events, tight_rules):
    (tmp_path / "single").mkdir()
    (tmp_path / "partitioned").mkdir()
    _, single, _ = replay_with_report(tmp_path / "single", tight_rules, cdnow_events, CDNOW_UNTIL)
    _, partitioned, _ = replay_with_report(tmp_path / "partitioned", tight_rules, cdnow_events, CDNOW_UNTIL,
                                           "--partitions", 3)
    assert partitioned == single


def test_the_page_shows_the_counts_as_tables_too(tmp_path):
    actions, _, _ = replay_with_report(tmp_path, TEA_RULES, TEA_EVENTS, TEA_UNTIL)
    page = read_page(tmp_path / "report.html")
    header, *rows = page.tables["daily-table"]
    statuses = header[2:]
    shown = {(rule, when, status): int(n)
             for rule, when, *cells in rows for status, n in zip(statuses, cells, strict=True) if n != "0"}
    assert shown == dict(daily(actions))
    customers = [(row[0], int(row[1])) for row in page.tables["customers-replay"][1:]]
    assert customers == top_customers(actions)


def test_stdout_and_the_summary_are_those_of_a_replay_without_report(tmp_path):
    page = tmp_path / "report.html"
    plain = invoke("replay", "--rules", TEA_RULES, "--events", TEA_EVENTS, "--until", TEA_UNTIL, "--backend", "python",
                   "--format", "table")
    reported = invoke("replay", "--rules", TEA_RULES, "--events", TEA_EVENTS, "--until", TEA_UNTIL, "--backend",
                      "python", "--format", "table", "--report", page)
    assert reported.exit_code == plain.exit_code == 0
    assert reported.stdout == plain.stdout and "c-1" in plain.stdout
    assert _without_timing(reported.stderr) == _without_timing(plain.stderr) + [f"report written to {page}"]


def _without_timing(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("replayed ")]
