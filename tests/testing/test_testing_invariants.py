"""The invariant helpers: silent on correct runs, precise and readable on broken ones."""
from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from helpers import write_rules
from hypothesis import given, settings

from rulecrm.rulefile.loader import load_rules
from rulecrm.testing import (
    InvariantViolation,
    Shop,
    assert_at_most,
    assert_escalated_or_handled,
    caps_not_bypassed,
    caps_respected,
    check_all,
    escalations_justified,
    event_streams,
    no_duplicate_sends,
    no_marketing_to_opted_out,
    quiet_hours_respected,
)

RULES = """
shop: {timezone: Asia/Shanghai, quiet_hours: "22:00-08:00"}
contacts:
  cs: {channel: console, address: cs-group}
caps:
  - {id: daily, kinds: [marketing], max: 1, per: 1d}
rules:
  - id: promo
    on: chat.received
    notify: {to: customer, template: "promo"}
  - id: bad-review
    on: review.created
    when: event.rating <= 2
    notify: {to: cs, template: "bad"}
    escalate:
      unless: review.handled same review_id
      steps:
        - {after: 2h, notify: {to: cs}}
"""


@pytest.fixture
def ruleset(tmp_path):
    return load_rules(write_rules(tmp_path, RULES))


def ev(id_, type_, at, **data):
    return {"id": id_, "type": type_, "customer_id": "c-1", "at": at, "data": data}


def run(ruleset, events):
    with Shop(ruleset) as shop:
        until = shop.settle_until(events)
        return shop.run(events, until=until), until


TEA_SHOP = load_rules("rules/tea-shop")


@settings(max_examples=40, deadline=None)
@given(event_streams(ruleset=TEA_SHOP))
def test_every_invariant_holds_on_the_tea_shop(events):
    with Shop(TEA_SHOP) as shop:
        until = shop.settle_until(events)
        actions = shop.run(events, until=until)
    check_all(TEA_SHOP, events, actions, until=until)


def test_a_duplicate_send_is_reported(ruleset):
    events = [ev("e1", "chat.received", "2026-03-02T10:00:00+08:00", text="hi")]
    actions, _ = run(ruleset, events)
    no_duplicate_sends(ruleset, events, actions)
    with pytest.raises(InvariantViolation, match="promo\\|c-1\\|e1 was sent 2 times"):
        no_duplicate_sends(ruleset, events, actions + actions)


def test_marketing_after_an_opt_out_is_reported(ruleset):
    events = [ev("e1", "customer.opted_out", "2026-03-02T10:00:00+08:00"),
              ev("e2", "chat.received", "2026-03-02T10:00:00+08:00", text="hi")]
    actions, _ = run(ruleset, events)
    no_marketing_to_opted_out(ruleset, events, actions)
    forged = copy.deepcopy(actions)
    forged[0].update(status="sent", reason=None, sent_at=forged[0]["due_at"])
    with pytest.raises(InvariantViolation) as raised:
        no_marketing_to_opted_out(ruleset, events, forged)
    assert raised.value.invariant == "no_marketing_to_opted_out" and raised.value.customer_id == "c-1"
    assert "customer.opted_out" in str(raised.value) and "promo|c-1|e2" in str(raised.value)


def test_an_opt_out_later_at_the_same_instant_is_not_known_to_an_earlier_trigger(ruleset):
    events = [ev("e1", "chat.received", "2026-03-02T10:00:00+08:00", text="hi"),
              ev("e2", "customer.opted_out", "2026-03-02T10:00:00+08:00")]
    actions, _ = run(ruleset, events)
    assert actions[0]["status"] == "sent"
    no_marketing_to_opted_out(ruleset, events, actions)


def test_a_send_in_quiet_hours_is_reported(ruleset):
    events = [ev("e1", "chat.received", "2026-03-02T23:00:00+08:00", text="hi")]
    actions, _ = run(ruleset, events)
    assert actions[0]["sent_at"] == "2026-03-03T08:00:00+08:00"
    quiet_hours_respected(ruleset, events, actions)
    forged = copy.deepcopy(actions)
    forged[0]["sent_at"] = "2026-03-02T23:00:00+08:00"
    with pytest.raises(InvariantViolation, match="inside quiet hours 22:00-08:00"):
        quiet_hours_respected(ruleset, events, forged)


def test_caps_count_external_sends_and_report_an_exceeded_window(ruleset):
    events = [ev("e1", "message.sent", "2026-03-02T09:00:00+08:00", channel="console"),
              ev("e2", "chat.received", "2026-03-02T10:00:00+08:00", text="hi")]
    actions, _ = run(ruleset, events)
    assert actions[0]["reason"] == "cap:daily"
    caps_respected(ruleset, events, actions)
    forged = copy.deepcopy(actions)
    forged[0].update(status="sent", reason=None, sent_at=forged[0]["due_at"])
    with pytest.raises(InvariantViolation, match="cap daily .* let 2 messages through") as raised:
        caps_respected(ruleset, events, forged)
    assert '"id": "e1"' in str(raised.value)


def test_escalations_must_be_justified_and_complete(ruleset):
    events = [ev("e1", "review.created", "2026-03-02T10:00:00+08:00", review_id="r1", rating=1),
              ev("e2", "review.handled", "2026-03-02T12:00:00+08:00", review_id="r1"),
              ev("e3", "review.created", "2026-03-02T10:00:00+08:00", review_id="r2", rating=1)]
    actions, until = run(ruleset, events)
    escalations_justified(ruleset, events, actions, until=until)
    escalated = [a for a in actions if a["kind"] == "escalate"]
    assert [a["trigger"] for a in escalated] == ["e3"]
    with pytest.raises(InvariantViolation, match="did not escalate step 1"):
        escalations_justified(ruleset, events, [a for a in actions if a["kind"] != "escalate"], until=until)
    unjustified = dict(escalated[0], key="bad-review|c-1|e1|step1", trigger="e1")
    with pytest.raises(InvariantViolation, match="although review.handled e2"):
        escalations_justified(ruleset, events, actions + [unjustified], until=until)


def test_a_cap_bypassed_on_another_channel_names_the_cap_and_the_rule(tmp_path):
    ruleset = load_rules(write_rules(tmp_path, """
        shop: {timezone: Asia/Shanghai}
        channels:
          sms: {type: webhook, url: "http://127.0.0.1:9/sms"}
        caps:
          - {id: daily, kinds: [marketing], max: 1, per: 1d, channels: [sms]}
        rules:
          - id: order-promo
            on: order.placed
            notify: {to: customer, channel: sms, template: "coupon"}
          - id: chat-promo
            on: chat.received
            notify: {to: customer, channel: console, template: "new teas"}
    """))
    events = [ev("e1", "order.placed", "2026-03-02T10:00:00+08:00", order_id="o1"),
              ev("e2", "chat.received", "2026-03-02T11:00:00+08:00", text="hi")]
    actions, until = run(ruleset, events)
    check_all(ruleset, events, actions, until=until, intent=False)  # the engine did what the file says
    with pytest.raises(InvariantViolation) as raised:
        caps_not_bypassed(ruleset, events, actions)
    message = str(raised.value)
    assert raised.value.invariant == "caps_not_bypassed"
    assert "cap daily" in message and "channels sms" in message and "rule chat-promo" in message
    assert "order-promo|c-1|e1" in message and '"id": "e2"' in message


def test_a_cap_whose_kinds_leave_marketing_out_is_bypassed(tmp_path):
    ruleset = load_rules(write_rules(tmp_path, """
        caps:
          - {id: daily, kinds: [service], max: 1, per: 1d}
        rules:
          - id: check-in
            on: order.delivered
            notify: {to: customer, kind: service, template: "arrived?"}
          - id: promo
            on: order.placed
            notify: {to: customer, template: "buy more"}
    """))
    events = [ev("e1", "order.placed", "2026-03-02T10:00:00Z", order_id="o1"),
              ev("e2", "order.delivered", "2026-03-02T11:00:00Z", order_id="o1")]
    actions, _ = run(ruleset, events)
    with pytest.raises(InvariantViolation, match="not counted by the cap: rule promo"):
        caps_not_bypassed(ruleset, events, actions)


def test_assert_at_most_counts_every_channel(ruleset):
    events = [ev("e1", "chat.received", "2026-03-02T10:00:00+08:00", text="hi")]
    actions, _ = run(ruleset, events)
    assert_at_most(actions, 1, per=timedelta(days=1), kind="marketing")
    second = dict(actions[0], key="other|c-1|e1", channel="sms", sent_at="2026-03-02T20:00:00+08:00")
    with pytest.raises(InvariantViolation, match="2 marketing messages within 1d"):
        assert_at_most(actions + [second], 1, per=timedelta(days=1), kind="marketing")
    assert_at_most(actions + [second], 1, per=timedelta(days=1), channels=["console"])


def test_assert_escalated_or_handled(ruleset):
    events = [ev("e1", "review.created", "2026-03-02T10:00:00+08:00", review_id="r1", rating=1),
              ev("e2", "chat.received", "2026-03-03T12:00:00+08:00", text="later")]
    actions, _ = run(ruleset, events)
    assert_escalated_or_handled(events, actions, within=timedelta(hours=24))
    with pytest.raises(InvariantViolation, match="e1 was neither handled nor escalated within 1d"):
        assert_escalated_or_handled(events, [a for a in actions if a["kind"] != "escalate"],
                                    within=timedelta(hours=24))
