"""The console in headless Chromium: every page over a replayed CDNOW state, a customer from search to
"why not", a dead letter fixed and retried through `rulecrm serve` itself, a failed action retried,
the language switch."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from console_helpers import (
    BROKEN_EVENT_ID,
    CDNOW_RULES,
    CUSTOMER,
    CUSTOMER_NAME,
    EMAIL,
    EMAIL_MASKED,
    FIXED_LINE,
    PHONE,
    PHONE_MASKED,
    TOKEN,
    TOKEN_ENV,
    make_console,
    query,
    write_events,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

from rulecrm.app.session import Input, Session
from rulecrm.events import parse_event_line

pytestmark = pytest.mark.slow
WAIT = 20  # seconds for a page or a chart; a loaded machine is slow, a broken page never gets there
PNG = b"\x89PNG\r\n\x1a\n"


def wait_for(browser, css: str):
    return WebDriverWait(browser, WAIT).until(ready.presence_of_element_located((By.CSS_SELECTOR, css)))


def shoot(browser, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot of {name}"
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 1000, f"{name}.png is not a real PNG ({len(data)} bytes)"
    return path


def sign_in(browser, base: str) -> None:
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(browser, "#signed-in")


def test_every_page_shows_what_the_state_holds(browser, serve, shared_state, screenshots):
    base = serve(make_console(shared_state))
    events = query(shared_state, "SELECT count(*) FROM events")[0][0]
    customers = query(shared_state, "SELECT count(*) FROM profiles")[0][0]
    sent = dict(query(shared_state, "SELECT rule, count(*) FROM actions WHERE status = 'sent' GROUP BY rule"))

    browser.get(base + "/")
    assert wait_for(browser, "#count-events").text == str(events)
    assert browser.find_element(By.ID, "count-customers").text == str(customers)
    assert browser.find_element(By.ID, "count-dead-letters").text == "1"
    # the vendored Chart.js drew every chart, each with one dataset per status, rule or event type
    for chart in ("events", "status", "rule"):
        drawn = WebDriverWait(browser, WAIT).until(
            lambda b, c=chart: b.find_element(By.ID, f"chart-{c}").get_attribute("data-drawn"))
        assert int(drawn) >= 1
    assert browser.execute_script("return typeof Chart") == "function"
    repurchase_sent = browser.find_element(By.CSS_SELECTOR, 'tr[data-rule="repurchase"] td[data-status="sent"]')
    assert repurchase_sent.text == str(sent["repurchase"])
    caps = query(shared_state, "SELECT json_extract(json, '$.reason'), rule, count(*) FROM actions WHERE "
                               "status = 'suppressed' AND json_extract(json, '$.reason') LIKE 'cap:%' GROUP BY 1, 2")
    assert caps  # the CDNOW head makes the weekly marketing cap bite
    for reason, rule, count in caps:
        shown = browser.find_element(By.CSS_SELECTOR, f'#caps tr[data-cap="{reason}"][data-rule="{rule}"] td.count')
        assert shown.text == str(count)
    assert "No runner has loaded rules on this state" in browser.find_element(By.ID, "no-reload-record").text
    shoot(browser, screenshots, "overview")

    browser.get(base + "/customers?q=000")
    assert len(wait_for(browser, "#results").find_elements(By.CSS_SELECTOR, "a.customer-link")) > 1
    shoot(browser, screenshots, "customers")

    browser.get(f"{base}/customers/{CUSTOMER}")
    timeline_events = query(shared_state, "SELECT count(*) FROM events WHERE customer_id = ?", (CUSTOMER,))[0][0]
    assert len(wait_for(browser, "#timeline").find_elements(By.CSS_SELECTOR, "tr.event")) == timeline_events
    shoot(browser, screenshots, "customer")

    browser.get(base + "/rules?from=1997-01-01&to=1997-12-31")
    fired = query(shared_state, "SELECT count(*) FROM actions WHERE rule = 'repurchase' AND status = 'sent' "
                                "AND substr(due_at, 1, 10) BETWEEN '1997-01-01' AND '1997-12-31'")[0][0]
    assert wait_for(browser, 'tr[data-rule="repurchase"] td[data-what="fired"]').text == str(fired)
    assert "0 error(s), 0 warning(s)" in browser.find_element(By.ID, "check-summary").text
    assert browser.find_elements(By.CSS_SELECTOR, "table.source tr")  # the rule file, line by line
    shoot(browser, screenshots, "rules")

    browser.get(base + "/outbox?status=suppressed")
    suppressed = query(shared_state, "SELECT count(*) FROM actions WHERE status = 'suppressed'")[0][0]
    assert wait_for(browser, "#matching").text == f"{suppressed} matching action(s)"
    shoot(browser, screenshots, "outbox")

    browser.get(base + "/dead-letters")
    assert "not a time" in wait_for(browser, "#dead-letters").text
    shoot(browser, screenshots, "dead-letters")
    assert sorted(p.name for p in screenshots.iterdir()) == sorted(
        f"{name}.png" for name in ("overview", "customers", "customer", "rules", "outbox", "dead-letters"))


def test_a_customer_from_search_to_why_not(browser, serve, shared_state, screenshots):
    base = serve(make_console(shared_state))
    browser.get(base + "/customers")
    wait_for(browser, "#q").send_keys(CUSTOMER_NAME)
    browser.find_element(By.ID, "search").click()
    wait_for(browser, "#results a.customer-link").click()
    assert wait_for(browser, "#customer-id").text == CUSTOMER
    profile = browser.find_element(By.ID, "profile").text
    assert PHONE_MASKED in profile and EMAIL_MASKED in profile
    assert PHONE not in browser.page_source and EMAIL not in browser.page_source
    Select(browser.find_element(By.ID, "why-rule")).select_by_value("thank-big-order")
    browser.find_element(By.ID, "why-submit").click()
    verdict = wait_for(browser, '#verdicts li[data-rule="thank-big-order"] .verdict').text
    # 00001's only CDNOW order was $11.77: the rule wants 50 or more
    assert verdict.startswith("never matched: event.amount >= 50 was false (event.amount was 11.77)")
    assert "rule thank-big-order" in browser.find_element(By.ID, "explain-text").text
    shoot(browser, screenshots, "why-not")


def test_a_dead_letter_fixed_in_the_page_is_applied_through_rulecrm_serve(browser, state, screenshots):
    env = {**os.environ, TOKEN_ENV: TOKEN}
    server = subprocess.Popen(
        [sys.executable, "-m", "rulecrm", "serve", "--rules", "rules/cdnow", "--state", str(state),
         "--listen", "127.0.0.1:0", "--token-env", TOKEN_ENV],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        cwd=Path(__file__).resolve().parents[2])
    try:
        line = server.stderr.readline()  # its first line says where it listens
        found = re.fullmatch(r"console on (http://127\.0\.0\.1:\d+)/ \(changes need the token\); Ctrl-C stops it\n",
                             line)
        assert found, f"unexpected first line of rulecrm serve: {line!r}"
        base = found[1]
        browser.get(base + "/dead-letters")
        assert "not a time" in wait_for(browser, "#dead-letters").text
        sign_in(browser, base)
        editor = wait_for(browser, "textarea.raw")
        editor.clear()
        editor.send_keys(FIXED_LINE)
        shoot(browser, screenshots, "dead-letter-fix")
        browser.find_element(By.CSS_SELECTOR, "button.retry-letter").click()
        assert "1 applied" in wait_for(browser, "#notice").text
        browser.get(base + "/customers/00002")
        row = wait_for(browser, f'tr.event[data-event-id="{BROKEN_EVENT_ID}"]')
        assert "1997-03-01" in row.text and "order.placed" in row.text
        browser.get(base + "/dead-letters")
        assert wait_for(browser, "#no-dead-letters")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        server.stderr.close()
    assert query(state, "SELECT customer_id FROM events WHERE id = ?", (BROKEN_EVENT_ID,)) == [("00002",)]


@pytest.fixture
def failed_delivery(tmp_path):
    """A state whose `thanks` messages went dead: their jsonl channel writes into a directory that did not
    exist (one attempt allowed). Returns (rules dir, state, the channel's file)."""
    from cdnow_head import write_cdnow_head

    sends = tmp_path / "spool" / "sends.jsonl"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "shop.yaml").write_text(textwrap.dedent(f"""\
        shop: {{timezone: UTC}}
        channels:
          outbox: {{type: jsonl, path: "{sends}"}}
        rules:
          - id: thanks
            on: order.placed
            notify: {{to: customer, channel: outbox, kind: service, template: "谢谢 {{customer.id}}"}}
        """), encoding="utf-8")
    events = write_cdnow_head(tmp_path / "events.jsonl", 5)
    state = tmp_path / "live.db"
    with Session.open(str(rules), str(state), deliver=True, dispatch_options={"max_attempts": 1}) as session:
        lines = events.read_text(encoding="utf-8").splitlines()
        inputs = [Input(str(events), n, parse_event_line(line, default_tz=session.ruleset.shop.timezone), raw=line)
                  for n, line in enumerate(lines, 1)]
        session.apply(inputs)
        session.deliver()
    assert query(state, "SELECT status, count(*) FROM actions WHERE rule = 'thanks' GROUP BY status") == [("dead", 5)]
    return rules, state, sends


def test_a_dead_action_is_retried_from_the_outbox(browser, serve, failed_delivery, screenshots):
    rules, state, sends = failed_delivery
    base = serve(make_console(state, rules=rules))
    browser.get(base + "/outbox?status=dead")
    assert wait_for(browser, "#matching").text == "5 matching action(s)"
    assert not browser.find_elements(By.CSS_SELECTOR, "button.retry-action")  # not signed in: no buttons
    sign_in(browser, base)
    sends.parent.mkdir()  # the channel can write now
    row = wait_for(browser, "#actions tbody tr")
    key = row.get_attribute("data-key")
    row.find_element(By.CSS_SELECTOR, "button.retry-action").click()
    assert wait_for(browser, "#notice").text == f"Action {key} retried: it is now sent."
    shoot(browser, screenshots, "outbox-retried")
    assert query(state, "SELECT status FROM actions WHERE key = ?", (key,)) == [("sent",)]
    assert [line for line in sends.read_text(encoding="utf-8").splitlines() if key in line]
    browser.get(base + "/outbox?status=dead")
    assert wait_for(browser, "#matching").text == "4 matching action(s)"


def test_the_language_switch(browser, serve, shared_state, screenshots):
    base = serve(make_console(shared_state, token=None))
    browser.get(base + "/rules")
    assert wait_for(browser, "#nav_rules").text == "Rules"  # the browser asks for English
    assert "Read-only" in browser.find_element(By.ID, "read-only").text
    browser.find_element(By.ID, "lang-zh").click()
    WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.ID, "nav_rules").text == "规则")
    assert "只读" in browser.find_element(By.ID, "read-only").text
    shoot(browser, screenshots, "rules-zh")
    browser.find_element(By.ID, "nav_outbox").click()  # the choice is kept in a cookie
    WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.TAG_NAME, "h1").text == "发件箱")
    browser.find_element(By.ID, "lang-en").click()
    WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.TAG_NAME, "h1").text == "Outbox")


def test_the_console_reads_a_state_a_running_runner_writes(tmp_path, serve):
    """`rulecrm run` follows the events file while the console serves its state: the pages show what the
    runner committed, and a change is refused with the runner's pid until it stops."""
    events = write_events(tmp_path)
    state = tmp_path / "live.db"
    runner = subprocess.Popen(
        [sys.executable, "-m", "rulecrm", "run", "--rules", str(CDNOW_RULES), "--state", str(state),
         "--source", f"jsonl:{events}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = serve(make_console(state))
        with httpx.Client(base_url=base, timeout=WAIT) as client:
            expected = sum(1 for line in events.read_text(encoding="utf-8").splitlines()) - 1  # one is rejected
            seen = None
            for _attempt in range(300):  # the runner applies the file within a few seconds
                page = client.get("/")
                found = re.search(r'id="count-events">(\d+)<', page.text) if page.status_code == 200 else None
                seen = int(found[1]) if found else None
                if seen == expected and 'id="count-dead-letters"><a href="/dead-letters">1<' in page.text:
                    break
                assert runner.poll() is None, runner.stderr.read()
                time.sleep(0.1)  # polling the page over HTTP: no browser to wait on here
            assert seen == expected, f"the overview shows {seen} events, the runner applied {expected}"
            loaded = re.search(r'<div id="last-reload" data-ok="yes">(.*?)</div>', page.text, re.S)
            assert loaded and "loaded at start" in loaded[1] and f"runner pid {runner.pid}" in loaded[1]
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/dead-letters").text)[1]
            signed = client.post("/sign-in", data={"token": TOKEN, "csrf_token": token, "back": "/"},
                                 headers={"Origin": base})
            assert signed.status_code == 303
            letter = re.search(r'<tr data-id="(\d+)">', client.get("/dead-letters").text)[1]
            refused = client.post("/dead-letters/retry", data={"id": letter, "raw": FIXED_LINE, "csrf_token": token},
                                  headers={"Origin": base})
            assert refused.status_code == 409
            assert f"is in use by another rulecrm process (pid {runner.pid})" in refused.text
    finally:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=30) == 0
        runner.stderr.close()
    assert query(state, "SELECT count(*) FROM events WHERE id = ?", (BROKEN_EVENT_ID,)) == [(0,)]

