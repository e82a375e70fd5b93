"""End to end: `rulecrm replay --dispatch` as a subprocess against a real aiosmtpd server on 127.0.0.1.

Each test writes a rules directory and an events file, runs the command line with the SMTP login in
the subprocess environment, then compares the envelopes the server accepted with the `--out` lines.
"""
from __future__ import annotations

import textwrap

import pytest
from smtp_server import PASSWORD, USERNAME

from rulecrm.testing import replay_cli, write_events
from rulecrm_smtp.compose import message_id

# The loopback test server asks for AUTH without TLS on purpose; aiosmtpd warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

TIMEOUT = 60  # seconds for one subprocess; the tests stay far below it
SENDER = "茶叶铺 <shop@example.com>"
SECRETS = {"SMTP_USER": USERNAME, "SMTP_PASSWORD": PASSWORD}


def write_rules(tmp_path, port):
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / "shop.yaml").write_text(textwrap.dedent(f"""
        shop: {{timezone: Asia/Shanghai}}
        channels:
          mail: {{type: smtp, host: 127.0.0.1, port: {port}, sender: "{SENDER}", timeout: 5,
                 username_env: SMTP_USER, password_env: SMTP_PASSWORD}}
        rules:
          - id: refill
            on: order.placed
            notify: {{to: customer, channel: mail, kind: service,
                      template: "Subject: 您的茶快喝完了\\n\\n{{customer.name}}，您好！上次买的 {{event.sku}} 快喝完了吧？"}}
    """), encoding="utf-8")  # noqa: E501
    return directory


def customer(cid, name, email=None):
    data = {"name": name, **({"email": email} if email else {})}
    return {"id": f"u-{cid}", "type": "customer.upserted", "customer_id": cid, "at": "2026-03-01T09:00:00+08:00",
            "data": data}


def order(n, cid, sku="tea-xqg"):
    return {"id": f"o-{n}", "type": "order.placed", "customer_id": cid, "at": f"2026-03-02T10:{n:02d}:00+08:00",
            "data": {"order_id": f"o-{n}", "sku": sku, "category": "tea", "amount": 128.0}}


def replay_dispatch(tmp_path, rules, events):
    """Run the real command line; returns (completed process, --out notify actions by customer id)."""
    done, actions = replay_cli(rules, write_events(tmp_path, events), workdir=tmp_path, dispatch=True,
                               env=SECRETS, timeout=TIMEOUT)
    out = tmp_path / "out.jsonl"
    assert PASSWORD not in done.stdout + done.stderr + (out.read_text(encoding="utf-8") if out.exists() else "")
    return done, {a["customer_id"]: a for a in actions if a["kind"] == "notify"}


def test_customers_with_email_get_the_message_with_the_subject_line_convention(tmp_path, auth_server):
    rules = write_rules(tmp_path, auth_server.port)
    events = [customer("c-1", "林女士", "lin@example.com"), customer("c-2", "王先生", "wang@example.org"),
              order(1, "c-1"), order(2, "c-2", sku="tea-dhp")]
    done, notified = replay_dispatch(tmp_path, rules, events)
    assert done.returncode == 0, done.stderr
    assert {cid: (a["status"], a["address"], a["attempts"], a["code"]) for cid, a in notified.items()} == {
        "c-1": ("sent", "lin@example.com", 1, "250"), "c-2": ("sent", "wang@example.org", 1, "250")}
    assert {login for login in auth_server.logins} == {(USERNAME, PASSWORD)}
    assert sorted(tuple(e.rcpt_tos) for e in auth_server.envelopes) == [("lin@example.com",), ("wang@example.org",)]
    assert {e.mail_from for e in auth_server.envelopes} == {"shop@example.com"}
    emails = {email["To"]: email for email in auth_server.emails()}
    assert set(emails) == {"lin@example.com", "wang@example.org"}
    for address, name, sku, cid in (("lin@example.com", "林女士", "tea-xqg", "c-1"),
                                    ("wang@example.org", "王先生", "tea-dhp", "c-2")):
        email = emails[address]
        assert email["Subject"] == "您的茶快喝完了"
        assert email.get_content().rstrip("\n") == f"{name}，您好！上次买的 {sku} 快喝完了吧？"
        assert "Subject:" not in email.get_content()
        assert email["X-Rulecrm-Key"] == notified[cid]["key"]
        assert email["Message-ID"] == message_id(notified[cid]["key"], SENDER)
        assert email["From"].addresses[0].addr_spec == "shop@example.com"


def test_a_550_recipient_is_dead_and_the_exit_code_is_4(tmp_path, auth_server):
    auth_server.refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: mailbox unavailable"
    rules = write_rules(tmp_path, auth_server.port)
    events = [customer("c-1", "林女士", "lin@example.com"), customer("c-2", "赵女士", "gone@example.com"),
              order(1, "c-1"), order(2, "c-2")]
    done, notified = replay_dispatch(tmp_path, rules, events)
    assert done.returncode == 4, done.stderr
    assert "1 action(s) not delivered" in done.stderr
    dead = notified["c-2"]
    assert (dead["status"], dead["attempts"], dead["code"]) == ("dead", 1, "550")
    assert "mailbox unavailable" in dead["error"]
    assert "gone@example.com" not in dead["error"] and "g***@example.com" in dead["error"]
    assert notified["c-1"]["status"] == "sent"
    assert [tuple(e.rcpt_tos) for e in auth_server.envelopes] == [("lin@example.com",)]


def test_a_customer_without_email_is_suppressed_no_address_and_nothing_is_sent(tmp_path, server):
    rules = write_rules(tmp_path, server.port)
    events = [customer("c-1", "林女士"), customer("c-2", "王先生", "wang@example.org"),
              order(1, "c-1"), order(2, "c-2")]
    done, notified = replay_dispatch(tmp_path, rules, events)
    assert done.returncode == 0, done.stderr
    skipped = notified["c-1"]
    assert (skipped["status"], skipped["reason"], skipped["address"], skipped["sent_at"]) == (
        "suppressed", "no-address", None, None)
    assert not {"attempts", "code", "delivered_at"} & set(skipped)  # never handed to the channel
    assert notified["c-2"]["status"] == "sent"
    assert [tuple(e.rcpt_tos) for e in server.envelopes] == [("wang@example.org",)]
