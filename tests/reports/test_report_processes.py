"""`--report` from real processes: a partitioned replay on a local Dask cluster, and the page in headless
Chromium (its charts drawn, no script errors)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import TEA_EVENTS, TEA_RULES, TEA_UNTIL
from helpers import rulecrm
from report_html import daily, read_actions, read_page, shown_daily, shown_top_customers, top_customers

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking")


@pytest.mark.slow
def test_a_partitioned_replay_on_two_dask_workers(tmp_path, cdnow_events, tight_rules):
    out, page = tmp_path / "actions.jsonl", tmp_path / "report.html"
    done = rulecrm("replay", "--rules", tight_rules, "--events", cdnow_events, "--until", "1997-06-01T00:00:00",
                   "--backend", "python", "--partitions", 4, "--workers", 2, "--out", out, "--report", page)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == f"report written to {page}"
    actions = read_actions(out)
    figures = read_page(page).data["sides"][0]["figures"]
    assert shown_daily(figures) == daily(actions)
    assert shown_top_customers(figures) == top_customers(actions)


@pytest.fixture
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def charts_drawn(browser, page: Path) -> dict:
    """Each canvas of the page by id: whether a chart is drawn on it (with its data points)."""
    browser.get(page.as_uri())
    return browser.execute_script(
        "var drawn = {}; document.querySelectorAll('canvas').forEach(function (c) {"
        " var chart = Chart.getChart(c);"
        " drawn[c.id] = chart ? chart.data.datasets.reduce(function (n, d) { return n + d.data.length; }, 0) : -1;"
        "}); return drawn;")


@pytest.mark.slow
def test_the_charts_draw_in_a_browser(tmp_path, browser, cdnow_events, tight_rules):
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)
    replay_page, diff_page = tmp_path / "replay.html", tmp_path / "diff.html"
    done = rulecrm("replay", "--rules", TEA_RULES, "--events", TEA_EVENTS, "--until", TEA_UNTIL, "--backend", "python",
                   "--out", tmp_path / "actions.jsonl", "--report", replay_page)
    assert done.returncode == 0, done.stderr
    drawn = charts_drawn(browser, replay_page)
    assert set(drawn) == {"daily-chart", "lateness-chart", "customers-chart"}
    assert all(points > 0 for points in drawn.values()), drawn
    # choosing another rule redraws the daily chart with that rule's days
    browser.execute_script("var s = document.getElementById('daily-rule'); s.value = 'lifecycle';"
                           "s.dispatchEvent(new Event('change'));")
    assert browser.execute_script("return Chart.getChart(document.getElementById('daily-chart')).data.labels.length") \
        == len({(a["sent_at"] or a["due_at"])[:10] for a in read_actions(tmp_path / "actions.jsonl")
                if a["rule"] == "lifecycle"})
    done = rulecrm("diff", "--rules", TEA_RULES.parent / "cdnow", "--rules-new", tight_rules, "--events", cdnow_events,
                   "--until", "1997-06-01T00:00:00", "--backend", "python", "--report", diff_page)
    assert done.returncode == 0, done.stderr
    drawn = charts_drawn(browser, diff_page)
    assert set(drawn) == {"changes-chart", "daily-chart", "caps-chart", "customers-chart"}
    assert all(points > 0 for points in drawn.values()), drawn
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
