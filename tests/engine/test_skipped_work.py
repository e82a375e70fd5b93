"""Work the engine skips because it cannot change the outcome.

Profile rules are evaluated again only when a field they read changed (or the profile is not
settled), and not at all once a profile has every tag of rules that only add a tag; an event is
not matched when every rule on its type requires a text in a field that the event does not have;
the keys of actions triggered by an event applied for the first time are not looked up in the store."""
from __future__ import annotations

import contextlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from helpers import ev, write_rules

from rulecrm.engine.compiled import profile_fields_read, tags_that_finish, texts_required
from rulecrm.expr.parser import parse_expression
from rulecrm.testing.harness import Shop

BOTH_BACKENDS = pytest.mark.parametrize("backend", ["python", "durable"])

REGULAR = """
  - id: regular
    when: customer.order_count >= 2
    tag: regular
"""

STAGE_AND_ORDERS = """
lifecycle: {dormant_after: 30d, churned_after: 90d}
rules:
  - id: lapsed
    when: customer.stage == "dormant"
    tag: lapsed
    untag: true""" + REGULAR + """
  - id: reviewer
    when: customer.open_reviews > 0
    notify: {to: customer, channel: console, kind: service, template: "thanks for the review"}
"""

ORDERS_ONLY = """
lifecycle: {dormant_after: 30d, churned_after: 90d}
rules:""" + REGULAR + """
  - id: loyal
    when: customer.order_count >= 5
    notify: {to: customer, channel: console, kind: service, template: "thanks for coming back"}
"""

TAGS_ONLY = """
rules:""" + REGULAR + """
  - id: big
    when: customer.total_spent >= 100
    tag: big
"""


class Rule:
    def __init__(self, when, untag=False):
        self.when = parse_expression(when) if when else None
        self.untag = parse_expression(untag) if isinstance(untag, str) else untag


def test_the_fields_read_are_the_first_step_after_customer():
    rules = [Rule('customer.sku["tea"].order_count > 1 and "vip" in customer.tags'),
             Rule("customer.total_spent > 5", untag="customer.refund_count > 2"), Rule(None, untag=True)]
    assert profile_fields_read(rules) == {"sku", "tags", "total_spent", "refund_count"}


def test_a_function_call_may_read_anything():
    assert profile_fields_read([Rule("customer.order_count > 1"), Rule("weekday(customer.last_order_at) == 1")]) is None


@BOTH_BACKENDS
def test_rules_on_the_stage_and_on_open_reviews_still_see_their_changes(tmp_path, backend):
    with Shop(write_rules(tmp_path, STAGE_AND_ORDERS), backend=backend) as shop:
        actions = shop.run([
            ev("order.placed", "c1", "2026-01-01T10:00:00Z", id="o1", amount=10),
            ev("order.placed", "c1", "2026-01-02T10:00:00Z", id="o2", amount=10),
            ev("review.created", "c1", "2026-01-03T10:00:00Z", id="r1", review_id="r1", rating=5),
            ev("order.placed", "c1", "2026-03-01T10:00:00Z", id="o3", amount=10),
        ])
    tags = [(a["kind"], a["to"], a["due_at"][:10]) for a in actions if a["kind"] in ("tag", "untag")]
    assert tags == [
        ("tag", "regular", "2026-01-02"), ("tag", "lapsed", "2026-02-01"), ("untag", "lapsed", "2026-03-01"),
    ]
    assert [(a["rule"], a["due_at"][:10]) for a in actions if a["kind"] == "notify"] == [("reviewer", "2026-01-03")]


def count_profile_matches(shop, evaluations: list) -> None:
    """Note the customer's order count at each evaluation of the profile rules by the shop's engine."""
    backend = shop._engine.backend
    match = backend.match

    def counting(trigger, ctx):
        if trigger is None:
            evaluations.append(ctx.customer["order_count"])
        return match(trigger, ctx)

    backend.match = counting


@contextlib.contextmanager
def shop_counting_profile_matches(tmp_path, rules: str, backend: str):
    """A shop on these rules, and the list `count_profile_matches` fills."""
    with Shop(write_rules(tmp_path, rules), backend=backend) as shop:
        evaluations: list = []
        count_profile_matches(shop, evaluations)
        yield shop, evaluations


@BOTH_BACKENDS
def test_a_settled_profile_is_not_evaluated_for_changes_its_rules_do_not_read(tmp_path, backend):
    with shop_counting_profile_matches(tmp_path, ORDERS_ONLY, backend) as (shop, evaluations):
        shop.add(ev("order.placed", "c1", "2026-01-01T10:00:00Z", id="o1", amount=10))
        assert evaluations == [1]
        shop.add(ev("customer.upserted", "c1", "2026-01-01T11:00:00Z", id="u1", name="Ann"),
                 ev("chat.received", "c1", "2026-01-01T12:00:00Z", id="m1", text="hi"))
        shop.advance(shop.now + timedelta(days=31))  # the stage changes to dormant
        assert evaluations == [1]  # nothing the rule reads changed
        shop.add(ev("order.placed", "c1", "2026-03-01T10:00:00Z", id="o2", amount=10))
        assert evaluations == [1, 2, 2]  # the order (two passes: the tag it adds is a change too)
        shop.restart()  # a profile read back from the store is evaluated at its next change
        count_profile_matches(shop, evaluations)  # the restarted engine has a backend of its own
        shop.add(ev("customer.upserted", "c1", "2026-03-02T10:00:00Z", id="u2", name="Ann"))
        assert evaluations == [1, 2, 2, 2]


def test_only_rules_that_add_a_tag_and_nothing_else_can_be_done_with():
    def rule(tag="t", notify=None, untag=False):
        return SimpleNamespace(tag=tag, notify=notify, untag=untag)

    assert tags_that_finish([rule("a"), rule("b")]) == {"a", "b"}
    assert tags_that_finish([]) == frozenset()
    assert tags_that_finish([rule("a"), rule(notify=object())]) is None  # notifies each time it turns true
    assert tags_that_finish([rule("a"), rule("b", untag=True)]) is None  # takes its tag off again
    assert tags_that_finish([rule("a", untag=parse_expression("customer.order_count > 9"))]) is None
    assert tags_that_finish([rule(tag=None, notify=object())]) is None


@BOTH_BACKENDS
def test_a_profile_with_every_tag_its_rules_only_add_is_not_evaluated(tmp_path, backend):
    with shop_counting_profile_matches(tmp_path, TAGS_ONLY, backend) as (shop, evaluations):
        shop.add(ev("order.placed", "c1", "2026-01-01T10:00:00Z", id="o1", amount=120))
        assert evaluations == [1, 1]  # `big` added, so a second pass: `regular` may still come
        shop.add(ev("order.placed", "c1", "2026-01-02T10:00:00Z", id="o2", amount=10))
        assert evaluations == [1, 1, 2]  # `regular` added: both tags are on, no second pass
        shop.add(ev("order.placed", "c1", "2026-01-03T10:00:00Z", id="o3", amount=10),
                 ev("order.placed", "c2", "2026-01-03T11:00:00Z", id="o4", amount=10))
        assert evaluations == [1, 1, 2, 1]  # c1 has nothing left to evaluate; c2 does
        actions = shop.actions
    assert [(a["customer_id"], a["to"]) for a in actions if a["kind"] == "tag"] == [("c1", "big"), ("c1", "regular")]


def test_the_texts_an_event_rule_requires_are_the_equalities_its_condition_needs():
    def rule(on, when):
        return SimpleNamespace(on=on, when=parse_expression(when) if when else None)

    assert texts_required([
        rule("stage.changed", 'event.to == "dormant"'),
        rule("stage.changed", 'event.amount > 5 and (event.from == "new" and customer.order_count > 1)'),
        rule("review.created", 'event.rating <= 2 and event.channel == "tmall"'),
    ]) == {"stage.changed": (("to", "dormant"), ("from", "new")), "review.created": (("channel", "tmall"),)}
    for when in (None, 'event.to != "dormant"', 'event.to == "dormant" or event.rating > 3',
                 'customer.stage == "dormant"', "event.amount == 5", 'event.order.sku == "tea"',
                 'event.to == "dormant" and weekday(event.at) == 1', 'not (event.to == "dormant")'):
        assert texts_required([rule("x", 'event.to == "a"'), rule("x", when)]) == {"x": None}, when


WIN_BACK = """
rules:
  - id: win-back
    on: stage.changed
    when: event.to == "dormant"
    notify: {to: customer, channel: console, kind: service, template: "we miss you"}
  - id: first-review
    on: review.created
    when: event.id == "r1" and event.rating >= 4
    tag: reviewer
"""


@BOTH_BACKENDS
def test_an_event_no_rule_on_its_type_can_match_is_not_matched(tmp_path, backend):
    with Shop(write_rules(tmp_path, WIN_BACK), backend=backend) as shop:
        matched = []
        backend_match = shop._engine.backend.match
        shop._engine.backend.match = lambda trigger, ctx: matched.append(
            (trigger, ctx.event and ctx.event.get("to"))) or backend_match(trigger, ctx)
        shop.add(ev("order.placed", "c1", "2026-01-01T10:00:00Z", id="o1", amount=10),
                 ev("order.placed", "c1", "2026-01-05T10:00:00Z", id="o2", amount=10))
        assert ("stage.changed", "growing") not in matched  # new -> growing: win-back cannot hold
        shop.advance(shop.now + timedelta(days=100))  # growing -> dormant
        assert ("stage.changed", "dormant") in matched
        shop.add(ev("review.created", "c1", "2026-05-01T10:00:00Z", id="r2", review_id="r2", rating=5),
                 ev("review.created", "c1", "2026-05-02T10:00:00Z", id="r1", review_id="r1", rating=5))
        assert [trigger for trigger, _to in matched].count("review.created") == 1  # the envelope's id
        actions = shop.actions
    assert [(a["rule"], a["kind"], a["trigger"]) for a in actions if a["rule"] != "lifecycle"] == [
        ("win-back", "notify", "stage.changed|c1|2026-04-05T10:00:00+00:00|dormant"),
        ("first-review", "tag", "r1"),
    ]


THANKS_AND_REMINDER = """
rules:
  - id: thanks
    on: order.placed
    notify: {to: customer, channel: console, kind: service, template: "thanks"}
  - id: remind
    on: order.placed
    after: 1d
    notify: {to: customer, channel: console, kind: service, template: "more?"}
"""


@BOTH_BACKENDS
def test_keys_of_a_first_application_are_not_looked_up_in_the_store(tmp_path, backend):
    with Shop(write_rules(tmp_path, THANKS_AND_REMINDER), backend=backend) as shop:
        looked_up = []
        store = shop._session.store
        has_action = store.has_action
        store.has_action = lambda key: looked_up.append(key.split("|")[0]) or has_action(key)
        shop.add(ev("order.placed", "c1", "2026-01-01T10:00:00Z", id="o1"))
        shop.add(ev("order.placed", "c2", "2026-01-01T11:00:00Z", id="o2"))  # the store holds actions now
        shop.advance(shop.now + timedelta(days=2))
        actions = shop.actions
    assert sorted(a["key"] for a in actions if a["kind"] == "notify") == [
        "remind|c1|o1", "remind|c2|o2", "thanks|c1|o1", "thanks|c2|o2"]
    assert "thanks" not in looked_up  # decided while o1 and o2 were applied for the first time
    assert looked_up.count("remind") == 2  # a timer's trigger was applied before: its key may be stored
