"""The console over HTTP, in process (Starlette's TestClient): refusals of changes without the token,
the CSRF token or a same-origin request; languages; masking; bad input; a partitioned state."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from console_helpers import (
    BROKEN_EVENT_ID,
    CUSTOMER,
    CUSTOMER_NAME,
    EMAIL,
    EMAIL_MASKED,
    FIXED_LINE,
    PHONE,
    PHONE_MASKED,
    TOKEN,
    make_console,
    query,
    replayed_state,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2: httpx is what is installed
    from starlette.testclient import TestClient

ORIGIN = "http://testserver"


def client_for(state, *, token=TOKEN) -> TestClient:
    from rulecrm.console.app import create_app

    return TestClient(create_app(make_console(state, token=token)), raise_server_exceptions=False)


def csrf_token(client: TestClient, path: str = "/") -> str:
    """The CSRF token of the browser's cookie, as the console's forms carry it (a read-only console
    shows no form: the token is then computed as the console would)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    return found[1] if found else client.app.state.console.guard.csrf_token(client.cookies["rulecrm_csrf"])


def sign_in(client: TestClient) -> None:
    answer = client.post("/sign-in", data={"token": TOKEN, "csrf_token": csrf_token(client), "back": "/"},
                         headers={"Origin": ORIGIN}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert "rulecrm_session" in answer.cookies


def dead_letter_ids(state) -> list[int]:
    return [row[0] for row in query(state, "SELECT id FROM dead_letters")]


def error_text(page) -> str:
    return re.search(r'id="error-message">(.*?)</p>', page.text, re.S)[1]


# -- refusals ----------------------------------------------------------------------------------


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(state):
    client = client_for(state)
    sign_in(client)
    [letter] = dead_letter_ids(state)
    for form in ({"id": str(letter)}, {"id": str(letter), "csrf_token": "forged"}):
        answer = client.post("/dead-letters/remove", data=form, headers={"Origin": ORIGIN})
        assert answer.status_code == 403
        assert "security token" in error_text(answer)
    assert dead_letter_ids(state) == [letter]


def test_a_change_without_signing_in_with_the_token_is_refused(state):
    client = client_for(state)
    [letter] = dead_letter_ids(state)
    answer = client.post("/dead-letters/retry", data={"id": str(letter), "raw": FIXED_LINE,
                                                      "csrf_token": csrf_token(client)}, headers={"Origin": ORIGIN})
    assert answer.status_code == 403
    assert "Sign in with the token" in error_text(answer)
    wrong = client.post("/sign-in", data={"token": "not-the-token", "csrf_token": csrf_token(client)},
                        headers={"Origin": ORIGIN})
    assert wrong.status_code == 403 and "Wrong token" in error_text(wrong)
    assert dead_letter_ids(state) == [letter]
    assert query(state, "SELECT count(*) FROM events WHERE id = ?", (BROKEN_EVENT_ID,)) == [(0,)]


def test_a_change_from_another_site_is_refused(state):
    client = client_for(state)
    sign_in(client)
    [letter] = dead_letter_ids(state)
    form = {"id": str(letter), "csrf_token": csrf_token(client)}
    for headers in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page"}, {}):
        answer = client.post("/dead-letters/remove", data=form, headers=headers)
        assert answer.status_code == 403
        assert "did not come from a page of this console" in error_text(answer)
    assert dead_letter_ids(state) == [letter]
    # the same form from the console's own page goes through: the refusals above were the checks
    done = client.post("/dead-letters/remove", data=form, headers={"Referer": f"{ORIGIN}/dead-letters"})
    assert done.status_code == 200, done.text
    assert dead_letter_ids(state) == []


def test_a_console_without_a_token_is_read_only(state):
    client = client_for(state, token=None)
    page = client.get("/dead-letters")
    assert "Read-only" in page.text
    assert "retry-letter" not in page.text and 'action="/sign-in"' not in page.text
    [letter] = dead_letter_ids(state)
    refused = client.post("/sign-in", data={"token": TOKEN, "csrf_token": csrf_token(client)},
                          headers={"Origin": ORIGIN})
    assert refused.status_code == 403 and "read-only" in error_text(refused)
    answer = client.post("/dead-letters/remove", data={"id": str(letter), "csrf_token": csrf_token(client)},
                         headers={"Origin": ORIGIN})
    assert answer.status_code == 403
    assert dead_letter_ids(state) == [letter]


def test_changes_are_post_only(shared_state):
    client = client_for(shared_state)
    for path in ("/dead-letters/retry", "/dead-letters/remove", "/outbox/retry", "/sign-in"):
        answer = client.get(path)
        assert answer.status_code == 405
        assert "only takes the console&#39;s forms (POST)" in error_text(answer)


def test_every_message_of_the_pages_is_in_both_languages():
    from pathlib import Path

    from rulecrm.console import i18n

    templates = Path(i18n.__file__).parent / "templates"
    used = {key for page in templates.glob("*.html") for key in re.findall(r'\bt\("([a-z_]+)"', page.read_text())}
    assert {"nav_overview", "why", "retry_fixed", "caps_hit"} <= used  # the pattern finds the calls
    assert used <= set(i18n.MESSAGES)
    for key, (english, chinese) in i18n.MESSAGES.items():
        assert english.strip() and chinese.strip(), key
        assert i18n.Translator("zh")(key, **_fields(english)) != "", key


def _fields(text: str) -> dict:
    return {name: "x" for name in re.findall(r"{(\w+)", text)}


def test_a_dead_letter_fixed_and_retried_is_applied(state):
    client = client_for(state)
    sign_in(client)
    [letter] = dead_letter_ids(state)
    answer = client.post("/dead-letters/retry", data={"id": str(letter), "raw": FIXED_LINE,
                                                      "csrf_token": csrf_token(client)}, headers={"Origin": ORIGIN})
    assert answer.status_code == 200, answer.text
    assert "1 applied" in answer.text
    assert dead_letter_ids(state) == []
    assert query(state, "SELECT customer_id FROM events WHERE id = ?", (BROKEN_EVENT_ID,)) == [("00002",)]
    assert BROKEN_EVENT_ID in client.get("/customers/00002").text


def test_pages_read_beside_a_runner_and_changes_wait_for_it(state):
    """A runner holds the state's lock: every page still reads (read-only connections, no lock), and a
    change is refused with the runner's pid, as `rulecrm dead-letters --retry` would be."""
    from rulecrm.state.store import Store

    client = client_for(state)
    sign_in(client)
    [letter] = dead_letter_ids(state)
    form = {"id": str(letter), "raw": FIXED_LINE, "csrf_token": csrf_token(client)}
    with Store.open(state, lock=True) as runner_store:
        with runner_store.transaction():  # a step of the runner, not committed yet
            runner_store.record_event("uncommitted-1", CUSTOMER, 0.0, "order.placed", "{}")
            for path in ("/", "/customers?q=000", f"/customers/{CUSTOMER}?explain=1", "/rules", "/outbox",
                         "/dead-letters"):
                assert client.get(path).status_code == 200, path
        answer = client.post("/dead-letters/retry", data=form, headers={"Origin": ORIGIN})
        assert answer.status_code == 409
        assert "is in use by another rulecrm process" in error_text(answer)
    assert dead_letter_ids(state) == [letter]


def test_the_overview_shows_the_last_reload_a_runner_recorded(state, tmp_path):
    """A runner records the rules it loaded and each reload, refused ones with their diagnostics."""
    from console_helpers import CDNOW_RULES

    from rulecrm.app.runner import Runner

    client = client_for(state)
    assert 'id="no-reload-record"' in client.get("/").text  # a replay's state: no runner yet
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in Path(CDNOW_RULES).glob("*.yaml"):
        (rules / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    now = [1_700_000_000.0]
    runner = Runner(rules, str(state), backend_name="python", clock=lambda: now[0], reload_interval=0)
    runner.start()
    try:
        page = client.get("/").text
        assert re.search(r'id="last-reload" data-ok="yes".*loaded at start.*in force, \d+ active rule', page, re.S)
        broken = next(rules.glob("*.yaml"))
        broken.write_text(broken.read_text(encoding="utf-8") + "\nrules: [}\n", encoding="utf-8")
        now[0] += 2
        runner.step()
        runner.step()
        page = client.get("/").text
        shown = re.search(r'<div id="last-reload" data-ok="no">(.*?)</div>', page, re.S)
        assert shown and "the rule files changed" in shown[1] and "refused" in shown[1]
        assert f"{broken.name}:" in shown[1] and ": error: " in shown[1]
        assert "2023-11-14T22:13:22+00:00" in shown[1]
        chinese = client.get("/?lang=zh").text
        assert "被拒绝；之前的规则继续生效" in chinese
    finally:
        runner.close()


def test_only_a_failed_or_dead_action_is_retried(state):
    client = client_for(state)
    sign_in(client)
    [(key,)] = query(state, "SELECT key FROM actions WHERE status = 'sent' LIMIT 1")
    before = query(state, "SELECT key, status, json FROM actions ORDER BY key")
    for form_key, message in ((key, "is sent, not failed or dead: nothing to retry"),
                              ("no-such-key", "no action with key &#39;no-such-key&#39;")):
        answer = client.post("/outbox/retry", data={"key": form_key, "csrf_token": csrf_token(client)},
                             headers={"Origin": ORIGIN})
        assert answer.status_code == 400
        assert message in error_text(answer)
    assert query(state, "SELECT key, status, json FROM actions ORDER BY key") == before
    assert query(state, "SELECT value FROM meta WHERE key = 'delivers'") == []  # still a replayed history


# -- languages, masking, bad input ----------------------------------------------------------------


def test_the_language_follows_accept_language_then_the_switch(shared_state):
    client = client_for(shared_state)
    chinese = client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert "概览" in chinese.text and 'lang="zh-CN"' in chinese.text
    english = client.get("/", headers={"Accept-Language": "en-GB,en;q=0.9,zh;q=0.5"})
    assert ">Overview<" in english.text and "概览" not in english.text
    switched = client.get("/rules?lang=zh", headers={"Accept-Language": "en"})
    assert "规则文件" in switched.text
    assert client.cookies.get("lang") == "zh"
    assert "发件箱" in client.get("/outbox", headers={"Accept-Language": "en"}).text  # the cookie is kept


def test_phone_numbers_and_emails_are_masked(shared_state):
    client = client_for(shared_state)
    pages = [client.get(f"/customers/{CUSTOMER}"), client.get(f"/customers/{CUSTOMER}?explain=1"),
             client.get("/customers", params={"q": CUSTOMER_NAME})]
    customer = pages[0].text
    assert PHONE_MASKED in customer and EMAIL_MASKED in customer and CUSTOMER_NAME in customer
    for page in pages:
        assert page.status_code == 200
        assert PHONE not in page.text and PHONE[1:] not in page.text and EMAIL not in page.text
    assert f"/customers/{CUSTOMER}" in pages[2].text  # the search by name found the customer


@pytest.mark.parametrize("path, status, message", [
    ("/?from=yesterday", 400, "from must be a date written YYYY-MM-DD"),
    ("/rules?from=1997-03-01&to=1997-01-01", 400, "ends (1997-01-01) before it starts (1997-03-01)"),
    ("/outbox?page=0", 400, "page must be a whole number of at least 1"),
    ("/outbox?status=lost", 400, "status cannot be &#39;lost&#39;"),
    ("/customers/nobody-at-all", 404, "The state has no customer &#39;nobody-at-all&#39;"),
    ("/customers/00O01", 404, "has no events in state"),  # explain's message, with its did-you-mean
    ("/customers/00001?rule=no-such-rule&explain=1", 404, "no rule &#39;no-such-rule&#39;"),
    ("/no/such/page", 404, "There is no such page"),
])
def test_bad_input_gets_a_clear_error_page(shared_state, path, status, message):
    page = client_for(shared_state).get(path)
    assert page.status_code == status
    assert message in error_text(page)
    assert "Traceback" not in page.text


def test_a_state_that_disappears_gets_a_clear_error_page(tmp_path):
    state = replayed_state(tmp_path / "gone")
    client = client_for(state)
    assert client.get("/").status_code == 200
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "gone" / f"state.db{suffix}").unlink(missing_ok=True)
    page = client.get("/")
    assert page.status_code == 503
    assert "does not exist" in error_text(page)


def test_a_partitioned_state_is_read_across_its_shards(tmp_path):
    state = replayed_state(tmp_path / "parts", partitions=3)
    client = client_for(state)
    shards = sorted(state.glob("shard-*.db"))
    events = sum(query(shard, "SELECT count(*) FROM events")[0][0] for shard in shards)
    overview = client.get("/")
    assert re.search(r'id="count-events">(\d+)<', overview.text)[1] == str(events)
    assert re.search(r'id="count-dead-letters"><a href="/dead-letters">1<', overview.text)
    customer = client.get(f"/customers/{CUSTOMER}?explain=1&rule=repeat-buyer")
    assert customer.status_code == 200 and PHONE_MASKED in customer.text and "Shard" in customer.text
    letters = client.get("/dead-letters")
    assert re.search(r'data-id="\d:\d+"', letters.text)


def test_rule_diagnostics_are_shown_at_their_line(shared_state, tmp_path):
    from cdnow_head import edited_cdnow_rules

    rules = edited_cdnow_rules(tmp_path / "rules", "customer.order_count >= 2", "customer.order_cnt >= 2")
    from rulecrm.console.app import create_app

    client = TestClient(create_app(make_console(shared_state, rules=rules)), raise_server_exceptions=False)
    page = client.get("/rules")
    assert "1 error(s), 0 warning(s)" in page.text
    line = re.search(r'<tr id="L15" class="has-diagnostic">(.*?)</tr>', page.text, re.S)
    assert line and "customer.order_cnt &gt;= 2" in line[1]
    assert "cdnow.yaml:15:11: error: unknown customer field &#39;order_cnt&#39;" in line[1]
    assert "did you mean &#39;order_count&#39;?" in line[1]
    assert "1 error(s)" in client.get("/").text
    customer = client.get(f"/customers/{CUSTOMER}?explain=1")
    assert customer.status_code == 200 and "The rules have errors" in customer.text


def test_a_dead_letter_of_a_partitioned_state_is_applied_in_its_customer_s_shard(tmp_path):
    from rulecrm.state.partitioned import PartitionedState

    state = replayed_state(tmp_path / "parts", partitions=3)
    client = client_for(state)
    sign_in(client)
    letter = re.search(r'<tr data-id="(\d+:\d+)">', client.get("/dead-letters").text)[1]
    answer = client.post("/dead-letters/retry", data={"id": letter, "raw": FIXED_LINE,
                                                      "csrf_token": csrf_token(client)}, headers={"Origin": ORIGIN})
    assert answer.status_code == 200 and "1 applied" in answer.text
    shard = PartitionedState.open(state).shard_path(PartitionedState.open(state).shard_for("00002"))
    assert query(shard, "SELECT customer_id FROM events WHERE id = ?", (BROKEN_EVENT_ID,)) == [("00002",)]
    assert "no-dead-letters" in client.get("/dead-letters").text


# -- the command line ----------------------------------------------------------------------------


def test_serve_without_the_console_extra_names_the_install(monkeypatch, shared_state):
    import sys

    from rulecrm.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` now raises ImportError
    result = CliRunner().invoke(main, ["serve", "--rules", "rules/cdnow", "--state", str(shared_state)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == ["error: rulecrm serve needs the console extra (uvicorn is not installed): "
                     "pip install 'rulecrm[console]'"]


@pytest.mark.parametrize("args, message", [
    (["--listen", "0.0.0.0:8700"], "0.0.0.0 is not a loopback address"),
    (["--listen", "nonsense"], "expected HOST:PORT"),
    (["--token-env", "RULECRM_TEST_UNSET_VARIABLE"], "RULECRM_TEST_UNSET_VARIABLE is not set"),
])
def test_serve_refuses_bad_options_in_one_line(shared_state, args, message, monkeypatch):
    from rulecrm.cli import main

    monkeypatch.delenv("RULECRM_TEST_UNSET_VARIABLE", raising=False)
    result = CliRunner().invoke(main, ["serve", "--rules", "rules/cdnow", "--state", str(shared_state), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
