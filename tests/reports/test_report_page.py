"""The report page itself: nothing on it is fetched, the chart library is inline, no value can break out of
its data block, personal data is masked; and a `--report` path that cannot be written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TEA_EVENTS, TEA_RULES, TEA_UNTIL, invoke
from report_html import Page, read_page

import rulecrm
from rulecrm.reports.collect import ActionLog
from rulecrm.reports.data import figures
from rulecrm.reports.html import render_page

CHART_JS = Path(rulecrm.__file__).parent / "console" / "static" / "vendor" / "chart.umd.min.js"


@pytest.fixture(scope="module")
def tea_page(tmp_path_factory) -> Path:
    page = tmp_path_factory.mktemp("page") / "report.html"
    result = invoke("replay", "--rules", TEA_RULES, "--events", TEA_EVENTS, "--until", TEA_UNTIL, "--backend",
                    "python", "--out", page.with_suffix(".jsonl"), "--report", page)
    assert result.exit_code == 0, result.stderr
    return page


def test_nothing_on_the_page_is_fetched(tea_page):
    page = read_page(tea_page)
    assert [tag for tag, _ in page.elements if tag in ("link", "iframe", "img", "object", "embed")] == []
    assert [attributes for tag, attributes in page.elements if tag == "script" and "src" in attributes] == []
    for _tag, attributes in page.elements:
        for name in ("src", "href", "action", "srcset", "poster"):
            value = (attributes.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (name, value)
    chart_js = CHART_JS.read_text(encoding="utf-8")
    rest = tea_page.read_text(encoding="utf-8").replace(chart_js, "")
    assert "http://" not in rest and "https://" not in rest and "url(" not in rest and "@import" not in rest


def test_the_chart_library_is_inline(tea_page):
    page = read_page(tea_page)
    assert [text for _, text in page.scripts].count(CHART_JS.read_text(encoding="utf-8")) == 1
    code = [text for attributes, text in page.scripts if not attributes]
    assert len(code) == 2 and "new Chart(" in code[1]  # the library, then the page's charts


def test_a_value_cannot_end_the_data_block_and_personal_data_is_masked(tmp_path):
    hostile = "</script><script>alert(1)</script><!--"
    lines = [
        {"key": "k1", "rule": hostile, "customer_id": hostile, "kind": "notify", "to": "customer", "channel": "email",
         "address": "wang.fang@example.com", "due_at": "2026-01-05T10:00:00+08:00",
         "sent_at": "2026-01-05T10:00:00+08:00", "status": "sent", "reason": None},
        {"key": "k2", "rule": "r", "customer_id": "c-2", "kind": "notify", "to": "customer", "channel": "sms",
         "address": "+8613812345678", "due_at": "2026-01-06T10:00:00+08:00", "sent_at": None,
         "status": "sent", "reason": None},
    ]
    with ActionLog() as log:
        log.write("".join(json.dumps(line) + "\n" for line in lines))
        log.finish()
        text = render_page(title="t", details=[("rules", hostile)], sides=[{"name": "replay", "figures": figures(log)}])
    page = Page(text)
    assert len(page.scripts) == 3  # the data, the library, the page's code: nothing more
    assert [tag for tag, _ in page.elements].count("script") == 3
    customers = page.data["sides"][0]["figures"]["top_customers"]
    assert [row["customer_id"] for row in customers] == [hostile, "c-2"]  # one message each: by id
    assert [row["address"] for row in customers] == ["w***@example.com", "+***5678"]
    assert "wang.fang@" not in text and "13812345678" not in text


@pytest.mark.parametrize("command", ["replay", "diff"])
@pytest.mark.parametrize("where", ["missing/report.html", "."], ids=["no-directory", "a-directory"])
def test_a_report_path_that_cannot_be_written_is_one_line_and_exit_1(tmp_path, command, where):
    rules = ("--rules", TEA_RULES) if command == "replay" else ("--rules", TEA_RULES, "--rules-new", TEA_RULES)
    result = invoke(command, *rules, "--events", TEA_EVENTS, "--report", tmp_path / where)
    assert result.exit_code == 1
    assert result.stdout == ""  # refused before anything ran
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --report "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "missing").exists()


def test_the_report_cannot_be_the_out_file(tmp_path):
    out = tmp_path / "actions.jsonl"
    result = invoke("replay", "--rules", TEA_RULES, "--events", TEA_EVENTS, "--out", out, "--report", out)
    assert result.exit_code == 1
    assert result.stderr == f"error: --report {out} is also --out: give the report a file of its own\n"
    assert not out.exists()
