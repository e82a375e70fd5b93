"""`rules_can_fire` proves a condition dead only in plain cases, and never calls a live one dead."""
from __future__ import annotations

import pytest
from helpers import write_rules

from rulecrm.rulefile.loader import load_rules
from rulecrm.testing import InvariantViolation, rules_can_fire, unless_can_cancel

RULE = """
shop: {{timezone: Asia/Shanghai}}
contacts:
  cs: {{channel: console, address: cs-group}}
rules:
  - id: watched
    on: review.created
    when: {when}
    notify: {{to: cs, template: "look"}}
"""

DEAD = {
    "event.rating <= 2 and event.rating >= 3": "no number meets all of them (documented range 1-5)",
    "event.rating > 5": "no number meets all of them (documented range 1-5)",
    "event.rating < 1 or event.rating > 5": "no number meets all of them",
    "3 < event.rating and event.rating < 4 and event.rating != 3.5 and event.rating == 3": "no number",
    "event.rating == 2 and event.rating != 2": "event.rating == 2 and event.rating != 2",
    "customer.order_count < 0": "documented range 0-inf",
    'customer.stage == "dormnat"': "the stages are new, growing, mature, dormant, churned",
    'event.order_id == "o1" and event.order_id == "o2"': "event.order_id == 'o1' and event.order_id == 'o2'",
    'event.order_id == "o1" and event.order_id != "o1"': "event.order_id == 'o1' and event.order_id != 'o1'",
    'customer.tags contains "vip" and not customer.tags contains "vip"': "a condition and for its negation",
    "false": "the constant False",
    "event.rating <= 2 and (false or customer.open_reviews < 0)": "the constant False",
}

LIVE = [
    "event.rating <= 2",
    "event.rating <= 2 and event.rating >= 2",
    "event.rating >= 1 and event.rating <= 5",
    "event.rating == 2 or event.rating == 6",
    'customer.stage == "dormant" or customer.stage == "churned"',
    "not customer.opted_out",
    "customer.total_spent >= 1000",
    'event.text matches "bad" and not event.text matches "good"',
    'customer.tags contains "vip" and not customer.tags contains "vp"',
    'event.order_id != "o1" and event.order_id != "o2"',
    "customer.order_count >= 0",
    "customer.total_spent < 0",  # refunds can take it below zero
    "true",
]


@pytest.mark.parametrize("when", sorted(DEAD))
def test_a_dead_condition_is_named_with_its_reason_and_place(tmp_path, when):
    rules = write_rules(tmp_path, RULE.format(when=when))
    with pytest.raises(InvariantViolation) as caught:
        rules_can_fire(load_rules(rules))
    message = str(caught.value)
    assert f"rule watched can never act: its when at {rules}/rules.yaml:8:11 can never be true" in message
    assert DEAD[when] in message


@pytest.mark.parametrize("when, dead", [('event.to == "dormnt"', True), ('event.to == "dormant"', False),
                                        ('event.from == "new" and event.to == "churned"', False)])
def test_the_stages_of_a_stage_change_are_known(tmp_path, when, dead):
    text = RULE.format(when=when).replace("on: review.created", "on: stage.changed")
    ruleset = load_rules(write_rules(tmp_path, text))
    if not dead:
        rules_can_fire(ruleset)
        return
    with pytest.raises(InvariantViolation, match="the stages are new, growing, mature, dormant, churned"):
        rules_can_fire(ruleset)


def test_a_rating_of_the_shops_own_event_type_has_no_documented_range(tmp_path):
    text = RULE.format(when="event.rating > 5").replace("on: review.created", "on: survey.answered")
    rules_can_fire(load_rules(write_rules(tmp_path, text)))


@pytest.mark.parametrize("when", LIVE)
def test_a_condition_that_can_hold_is_left_alone(tmp_path, when):
    rules_can_fire(load_rules(write_rules(tmp_path, RULE.format(when=when))))


REMINDER = """
shop: {{timezone: Asia/Shanghai}}
products:
  - {{sku: tea-lj, name: 龙井, category: tea, cycle: 30d}}
rules:
  - id: reminder
    on: order.placed
    after: cycle - 3d
    unless: {unless}
    notify: {{to: customer, template: "more tea?"}}
"""


@pytest.mark.parametrize("unless, dead", [
    ("order.placed same skuu", "order.placed has no field 'skuu' (did you mean 'sku'?)"),
    ("order.placed same order_ids", "order.placed has no field 'order_ids' (did you mean 'order_id'?)"),
    ("order.placed same SKU", "order.placed has no field 'SKU' (did you mean 'sku'?)"),
    ("order.placed same sku", None),
    ("order.placed", None),
    ("order.placed same store_code", None),  # the shop's own field, near no documented one
])
def test_an_unless_with_a_misspelled_same_field_can_never_cancel(tmp_path, unless, dead):
    ruleset = load_rules(write_rules(tmp_path, REMINDER.format(unless=unless)))
    if dead is None:
        unless_can_cancel(ruleset)
        return
    with pytest.raises(InvariantViolation, match="unless_can_cancel") as caught:
        unless_can_cancel(ruleset)
    where = f"{tmp_path}/rules/rules.yaml:6:5"
    assert f"rule reminder at {where}: its unless `{unless}` can never cancel" in str(caught.value)
    assert dead in str(caught.value)
