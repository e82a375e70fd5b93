"""End to end: `rulecrm replay --dispatch` as a subprocess against a real webhook receiver on 127.0.0.1.

Each test writes a rules directory and an events file, runs the command line with the signing
secret in the subprocess environment, then compares what the receiver got with the `--out` lines.
"""
from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from webhook_receiver import SECRET, SECRET_ENV, Receiver, serve

from rulecrm.testing import replay_cli, write_events, write_rules
from rulecrm_webhook.signing import verify_signature

TIMEOUT = 60  # seconds for one subprocess; the tests stay far below it


class TimedReceiver(Receiver):
    """The plugin's receiver, also noting when each request arrived (monotonic seconds)."""

    def __init__(self, secret):
        super().__init__(secret)
        self.arrivals: list[float] = []

    def handle(self, handler):
        with self.lock:
            self.arrivals.append(time.monotonic())
        return super().handle(handler)


@pytest.fixture
def timed_receiver():
    receiver = TimedReceiver(SECRET)
    server = serve(receiver)
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()








def replay_dispatch(tmp_path, rules, events, *, env=None):
    """The real command line with --dispatch and the signing secret in its environment."""
    return replay_cli(rules, events, workdir=tmp_path, dispatch=True, env={SECRET_ENV: SECRET, **(env or {})},
                      timeout=TIMEOUT)


def review(n, rating, text, customer="c-1"):
    return {"id": f"rv-{n}", "type": "review.created", "customer_id": customer,
            "at": f"2026-03-01T10:{n:02d}:00+08:00",
            "data": {"review_id": f"r{n}", "order_id": f"o{n}", "rating": rating, "text": text}}


def header(delivery, name):
    """A request header, whatever its case on the wire."""
    return next(value for key, value in delivery["headers"].items() if key.lower() == name.lower())


def assert_signed_once_per_key(receiver, actions):
    """Every `sent` action arrived exactly once, signed, with `Idempotency-Key` = its key."""
    sent = {a["key"]: a for a in actions if a["status"] == "sent" and a["kind"] in ("notify", "escalate")}
    assert receiver.duplicates == []
    assert sorted(d["json"]["key"] for d in receiver.deliveries) == sorted(sent)
    for delivery in receiver.deliveries:
        body = delivery["json"]
        assert header(delivery, "Idempotency-Key") == body["key"]
        signature = header(delivery, "X-Rulecrm-Signature")
        assert signature == "sha256=" + hmac.new(SECRET.encode(), delivery["body"], hashlib.sha256).hexdigest()
        assert verify_signature(SECRET, delivery["body"], signature, tolerance=300)
        assert not verify_signature("another-secret", delivery["body"], signature, tolerance=300)
        action = sent[body["key"]]
        assert (body["channel"], body["address"], body["customer_id"], body["rule"], body["text"]) == (
            action["channel"], action["address"], action["customer_id"], action["rule"], action["message"])


def assert_no_secret(done, tmp_path):
    assert SECRET not in done.stdout + done.stderr
    assert SECRET not in (tmp_path / "out.jsonl").read_text(encoding="utf-8")


STAFF_RULES = """
    shop: {timezone: Asia/Shanghai}
    channels:
      hooks: {type: webhook, url: "%(url)s", secret_env: HOOK_SECRET}
    contacts:
      cs: {channel: hooks, address: cs-desk}
    rules:
      - id: bad-review
        on: review.created
        when: event.rating <= 2
        notify: {to: cs, kind: service, template: "差评 {event.rating}★: {event.text}"}
"""


def test_every_sent_action_arrives_once_signed_with_its_idempotency_key(tmp_path, receiver):
    rules = write_rules(tmp_path, STAFF_RULES % {"url": receiver.url})
    events = write_events(tmp_path, [review(1, 1, "茶叶受潮"), review(2, 5, "很好"), review(3, 2, "包装破损"),
                                     review(4, 1, "发错货", customer="c-2")])
    done, actions = replay_dispatch(tmp_path, rules, events)
    assert done.returncode == 0, done.stderr
    notified = [a for a in actions if a["kind"] == "notify"]
    assert sorted((a["key"], a["status"], a["message"]) for a in notified) == [
        ("bad-review|c-1|rv-1", "sent", "差评 1★: 茶叶受潮"),
        ("bad-review|c-1|rv-3", "sent", "差评 2★: 包装破损"),
        ("bad-review|c-2|rv-4", "sent", "差评 1★: 发错货"),
    ]
    assert all(a["attempts"] == 1 and a["code"] == "200" and a["address"] == "cs-desk" for a in notified)
    assert receiver.requests == 3
    assert_signed_once_per_key(receiver, actions)
    assert all(d["json"]["kind"] == "service" for d in receiver.deliveries)
    assert_no_secret(done, tmp_path)


def test_503_twice_then_200_is_retried_with_backoff_and_ends_sent(tmp_path, timed_receiver):
    receiver = timed_receiver
    receiver.fail_next(2, 503, body="gateway busy")
    rules = write_rules(tmp_path, STAFF_RULES % {"url": receiver.url})
    events = write_events(tmp_path, [review(1, 1, "茶叶受潮")])
    started = time.monotonic()
    done, actions = replay_dispatch(tmp_path, rules, events)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    [action] = [a for a in actions if a["kind"] == "notify"]
    assert (action["status"], action["attempts"], action["code"], action["error"]) == ("sent", 3, "200", None)
    assert receiver.requests == 3 and len(receiver.deliveries) == 1
    assert_signed_once_per_key(receiver, actions)
    # docs/running.md: before attempt n+1 the dispatcher waits d/2 + U(0, d/2), d = 2·2^(n-1) s
    first, second = (b - a for a, b in zip(receiver.arrivals, receiver.arrivals[1:], strict=False))
    assert 1.0 - 0.05 <= first <= 2.0 + 1.0
    assert 2.0 - 0.05 <= second <= 4.0 + 1.0
    assert elapsed < 30


def test_a_400_is_dead_at_once_and_the_exit_code_is_4(tmp_path, receiver):
    refusing = Receiver(SECRET)
    server = serve(refusing)
    try:
        refusing.fail_next(10, 400, body="unknown recipient")
        rules = write_rules(tmp_path, f"""
            shop: {{timezone: Asia/Shanghai}}
            channels:
              hooks: {{type: webhook, url: "{receiver.url}", secret_env: HOOK_SECRET}}
              tickets: {{type: webhook, url: "{refusing.url}", secret_env: HOOK_SECRET}}
            contacts:
              cs: {{channel: hooks, address: cs-desk}}
              desk: {{channel: tickets, address: queue-7}}
            rules:
              - id: bad-review
                on: review.created
                when: event.rating <= 2
                notify: {{to: cs, kind: service, template: "差评 {{event.rating}}★: {{event.text}}"}}
              - id: ticket
                on: review.created
                when: event.rating <= 2
                notify: {{to: desk, kind: service, template: "工单: {{event.text}}"}}
        """)
        events = write_events(tmp_path, [review(1, 1, "茶叶受潮")])
        done, actions = replay_dispatch(tmp_path, rules, events)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 4, done.stderr
    assert "1 action(s) not delivered" in done.stderr
    by_rule = {a["rule"]: a for a in actions if a["kind"] == "notify"}
    dead = by_rule["ticket"]
    assert (dead["status"], dead["attempts"], dead["code"]) == ("dead", 1, "400")
    assert "HTTP 400" in dead["error"] and "unknown recipient" in dead["error"]
    assert refusing.requests == 1  # a permanent answer is not retried
    assert by_rule["bad-review"]["status"] == "sent" and receiver.requests == 1
    assert_signed_once_per_key(receiver, actions)
    assert_no_secret(done, tmp_path)


def test_a_second_dispatching_replay_on_the_same_state_sends_nothing_more(tmp_path, receiver):
    rules = write_rules(tmp_path, STAFF_RULES % {"url": receiver.url})
    events = write_events(tmp_path, [review(1, 1, "茶叶受潮"), review(2, 2, "包装破损")])
    first, actions = replay_dispatch(tmp_path, rules, events)
    assert first.returncode == 0, first.stderr
    assert [a["status"] for a in actions if a["kind"] == "notify"] == ["sent", "sent"]
    assert receiver.requests == 2
    again, repeated = replay_dispatch(tmp_path, rules, events)
    assert again.returncode == 0, again.stderr
    assert repeated == []
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == ""
    assert "actions: none" in again.stderr
    assert receiver.requests == 2 and len(receiver.deliveries) == 2 and receiver.duplicates == []


def test_an_sms_gateway_channel_with_address_field_phone_sends_the_customers_phone(tmp_path, receiver):
    rules = write_rules(tmp_path, f"""
        shop: {{timezone: Asia/Shanghai}}
        channels:
          sms: {{type: webhook, url: "{receiver.url}", secret_env: HOOK_SECRET, address_field: phone}}
        rules:
          - id: shipped
            on: order.delivered
            notify: {{to: customer, channel: sms, kind: transactional,
                      template: "{{customer.name}}，您的订单 {{event.order_id}} 已送达"}}
    """)
    events = write_events(tmp_path, [
        {"id": "u-1", "type": "customer.upserted", "customer_id": "c-1", "at": "2026-03-01T09:00:00+08:00",
         "data": {"name": "林女士", "phone": "+8613800001111"}},
        {"id": "u-2", "type": "customer.upserted", "customer_id": "c-2", "at": "2026-03-01T09:00:00+08:00",
         "data": {"name": "王先生"}},
        {"id": "d-1", "type": "order.delivered", "customer_id": "c-1", "at": "2026-03-02T15:00:00+08:00",
         "data": {"order_id": "o-1"}},
        {"id": "d-2", "type": "order.delivered", "customer_id": "c-2", "at": "2026-03-02T16:00:00+08:00",
         "data": {"order_id": "o-2"}},
    ])
    done, actions = replay_dispatch(tmp_path, rules, events)
    assert done.returncode == 0, done.stderr
    by_customer = {a["customer_id"]: a for a in actions if a["kind"] == "notify"}
    assert by_customer["c-1"]["status"] == "sent" and by_customer["c-1"]["address"] == "+8613800001111"
    assert (by_customer["c-2"]["status"], by_customer["c-2"]["reason"]) == ("suppressed", "no-address")
    [delivery] = receiver.deliveries
    body = delivery["json"]
    assert (body["address"], body["customer_id"], body["channel"], body["kind"]) == (
        "+8613800001111", "c-1", "sms", "transactional")
    assert body["text"] == "林女士，您的订单 o-1 已送达"
    assert receiver.requests == 1
    assert_signed_once_per_key(receiver, actions)
