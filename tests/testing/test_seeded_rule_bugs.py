"""Seeded rule-file bugs: each invariant judges the shop's intent, so `check_all` and `rulecrm test` catch
a rule that says something else, while the correct rules (per-channel caps included) pass both."""
from __future__ import annotations

import pytest
from helpers import rulecrm, write_rules

from rulecrm.rulefile.loader import load_rules
from rulecrm.testing import InvariantViolation, Shop, check_all

SHOP = """
shop: {timezone: Asia/Shanghai}
contacts:
  cs: {channel: console, address: cs-group}
caps:
  - {id: marketing-daily, kinds: [marketing], max: 1, per: 1d}
rules:
  - id: chat-promo
    on: chat.received
    notify: {to: customer, kind: marketing, template: "new teas this week"}

  - id: bad-review
    on: review.created
    when: event.rating <= 2
    notify: {to: cs, kind: service, template: "bad review {event.review_id}"}
    escalate:
      unless: review.handled same review_id
      steps:
        - {after: 2h, notify: {to: cs}}

  - id: complaint
    on: complaint.opened
    notify: {to: cs, kind: service, template: "complaint {event.complaint_id}"}
    escalate:
      unless: complaint.resolved same complaint_id
      steps:
        - {after: 4h, notify: {to: cs}}

  - id: repurchase
    on: order.placed
    after: cycle - 3d
    unless: order.placed same sku
    notify: {to: customer, kind: marketing, template: "more tea?"}
products:
  - {sku: tea-xqg, name: 小青柑, category: tea, cycle: 30d}
"""


def ev(n, type_, at, **data):
    return {"id": f"e{n}", "type": type_, "customer_id": "c-1", "at": f"2026-03-02T{at}:00+08:00", "data": data}


# The issue's own case: a review created at 08:00, handled at 09:00, escalated at 10:00 by a broken rule.
HANDLED_REVIEW = [ev(1, "review.created", "08:00", review_id="r1", rating=1), ev(2, "review.handled", "09:00",
                                                                                   review_id="r1")]
# Another review handled: with a rule that does not say which review, the open one is left alone.
OTHER_REVIEW_HANDLED = [ev(1, "review.created", "08:00", review_id="r1", rating=1),
                        ev(2, "review.created", "08:30", review_id="r2", rating=2),
                        ev(3, "review.handled", "09:00", review_id="r2")]
HANDLED_COMPLAINT = [ev(1, "complaint.opened", "08:00", complaint_id="k1"), ev(2, "complaint.resolved", "09:00",
                                                                               complaint_id="k1")]
REORDER = [ev(1, "order.placed", "10:00", order_id="o1", sku="tea-xqg"),
           {**ev(2, "order.placed", "10:00", order_id="o2", sku="tea-xqg"), "at": "2026-03-20T10:00:00+08:00"}]
TWO_CHATS = [ev(1, "chat.received", "10:00", text="hi"), ev(2, "chat.received", "11:00", text="any news?")]

SEEDED = {
    "misspelled same field": (("same review_id", "same reviewid"), HANDLED_REVIEW, "escalations_justified"),
    "unless on the wrong event type": (("unless: review.handled same", "unless: complaint.resolved same"),
                                       HANDLED_REVIEW, "escalations_justified"),
    "unless without same": (("unless: review.handled same review_id", "unless: review.handled"),
                            OTHER_REVIEW_HANDLED, "escalations_justified"),
    "misspelled same field of a reminder": (("order.placed same sku", "order.placed same skuu"), REORDER,
                                            "unless_can_cancel"),
    "misspelled complaint field": (("same complaint_id", "same complaintid"), HANDLED_COMPLAINT,
                                   "escalations_justified"),
    "when that can never be true": (("event.rating <= 2", "event.rating <= 2 and event.rating >= 4"),
                                    HANDLED_REVIEW, "rules_can_fire"),
    "when beyond the documented range": (("event.rating <= 2", "event.rating > 5"), HANDLED_REVIEW,
                                         "rules_can_fire"),
    "stage that does not exist": (("event.rating <= 2", 'customer.stage == "dormnat"'), HANDLED_REVIEW,
                                  "rules_can_fire"),
    "cap whose kinds miss the rule's kind": (("kinds: [marketing]", "kinds: [service]"), TWO_CHATS,
                                             "caps_not_bypassed"),
}


def seeded(name: str) -> str:
    (old, new), _events, _invariant = SEEDED[name]
    assert SHOP.count(old) == 1
    return SHOP.replace(old, new)


def run_and_check(ruleset, events):
    with Shop(ruleset) as shop:
        until = shop.settle_until(events)
        actions = shop.run(events, until=until)
    check_all(ruleset, events, actions, until=until)


@pytest.mark.parametrize("events", [HANDLED_REVIEW, OTHER_REVIEW_HANDLED, HANDLED_COMPLAINT, REORDER, TWO_CHATS])
def test_the_correct_rules_pass_check_all(tmp_path, events):
    run_and_check(load_rules(write_rules(tmp_path, SHOP)), events)


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_check_all_catches_the_seeded_bug(tmp_path, name):
    _change, events, invariant = SEEDED[name]
    ruleset = load_rules(write_rules(tmp_path, seeded(name)))
    with pytest.raises(InvariantViolation) as caught:
        run_and_check(ruleset, events)
    assert caught.value.invariant == invariant


def test_the_handled_review_of_the_issue_is_reported_with_its_handling(tmp_path):
    ruleset = load_rules(write_rules(tmp_path, seeded("misspelled same field")))
    with pytest.raises(InvariantViolation) as caught:
        run_and_check(ruleset, HANDLED_REVIEW)
    assert ("rule bad-review escalated step 1 at 2026-03-02T10:00:00+08:00 although review.handled e2 at "
            '2026-03-02T09:00:00+08:00 had closed review "r1"') in str(caught.value)


def test_the_correct_rules_pass_rulecrm_test(tmp_path):
    result = rulecrm("test", str(write_rules(tmp_path, SHOP)), "--examples", "60")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_rulecrm_test_catches_the_seeded_bug(tmp_path, name):
    _change, _events, invariant = SEEDED[name]
    result = rulecrm("test", str(write_rules(tmp_path, seeded(name))))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED: invariant {invariant} does not hold for these rules." in result.stdout


def test_rulecrm_test_shows_checks_warning_next_to_the_counter_example(tmp_path):
    result = rulecrm("test", str(write_rules(tmp_path, seeded("misspelled same field"))))
    out = result.stdout
    assert out.index("Counter-example (shrunk)") < out.index("rulecrm check warns about these rules")
    assert "has no field 'reviewid'" in out and "review_id" in out


def test_a_dead_rule_is_named_at_its_condition(tmp_path):
    result = rulecrm("test", str(write_rules(tmp_path, seeded("when that can never be true"))))
    assert "rule bad-review can never act: its when at " in result.stdout
    assert "rules.yaml:14:11 can never be true (event.rating <= 2 and event.rating >= 4" in result.stdout
    assert "Counter-example" not in result.stdout  # nothing to run: the text alone shows it


PER_CHANNEL = """
shop: {timezone: Asia/Shanghai}
channels:
  sms: {type: webhook, url: "http://127.0.0.1:9/sms"}
caps:
  - {id: marketing-daily, kinds: [marketing], max: 1, per: 1d, per_channel: true}
rules:
  - id: order-promo
    on: order.placed
    notify: {to: customer, channel: sms, kind: marketing, template: "a coupon"}
  - id: chat-promo
    on: chat.received
    notify: {to: customer, channel: console, kind: marketing, template: "new teas this week"}
"""


def test_a_per_channel_cap_is_a_policy_not_a_bypass(tmp_path):
    rules = write_rules(tmp_path, PER_CHANNEL)
    run_and_check(load_rules(rules), [ev(1, "order.placed", "10:00", order_id="o1", sku="x"),
                                      ev(2, "chat.received", "10:30", text="hi")])
    result = rulecrm("test", str(rules), "--examples", "60")
    assert result.returncode == 0, result.stdout + result.stderr
