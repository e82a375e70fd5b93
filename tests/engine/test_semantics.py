"""The semantics of docs/rules.md on small timelines, exactly, for both matching backends."""
from __future__ import annotations

import pytest
from helpers import ev, of, run

pytestmark = pytest.mark.parametrize("backend", ["python", "durable"])

REVIEWS = """
contacts:
  cs: {channel: console, address: cs-group}
  manager: {channel: console, address: boss}
rules:
  - id: bad-review
    on: review.created
    when: event.rating <= 2
    notify: {to: cs, kind: service, template: "bad {event.rating}"}
    escalate:
      unless: review.handled same review_id
      steps:
        - {after: 2h, notify: {to: cs}}
        - {after: 24h, notify: {to: manager}}
"""


def review(at, rid="r1", rating=1, customer="c1"):
    return ev("review.created", customer, at, id=f"{rid}-created", review_id=rid, rating=rating, text="x")


def handled(at, rid="r1", customer="c1"):
    return ev("review.handled", customer, at, id=f"{rid}-handled-{at}", review_id=rid)


def test_handled_exactly_at_deadline_is_in_time(tmp_path, backend):
    actions, _ = run(tmp_path, REVIEWS, [review("2026-03-01T10:00:00Z"), handled("2026-03-01T12:00:00Z")],
                     until="2026-03-05T00:00:00Z", backend=backend)
    assert [a["kind"] for a in actions] == ["notify"]


def test_handled_one_second_late_escalates_once(tmp_path, backend):
    actions, _ = run(tmp_path, REVIEWS, [review("2026-03-01T10:00:00Z"), handled("2026-03-01T12:00:01Z")],
                     until="2026-03-05T00:00:00Z", backend=backend)
    escalations = of(actions, kind="escalate")
    assert [(a["step"], a["to"], a["due_at"], a["late_by"]) for a in escalations] == [
        (1, "cs", "2026-03-01T12:00:00+00:00", "2h")
    ]
    assert escalations[0]["message"] == "bad 1"  # the step inherits the rule's template


def test_unhandled_review_escalates_every_step(tmp_path, backend):
    actions, _ = run(tmp_path, REVIEWS, [review("2026-03-01T10:00:00Z"), handled("2026-03-01T12:00:00Z", rid="other")],
                     until="2026-03-05T00:00:00Z", backend=backend)
    assert [(a["step"], a["to"], a["late_seconds"]) for a in of(actions, kind="escalate")] == [
        (1, "cs", 7200), (2, "manager", 86400)
    ]


def test_good_review_is_not_escalated(tmp_path, backend):
    actions, _ = run(tmp_path, REVIEWS, [review("2026-03-01T10:00:00Z", rating=5)], until="2026-03-05T00:00:00Z",
                     backend=backend)
    assert actions == []


def test_until_limits_the_timers_that_fire(tmp_path, backend):
    actions, _ = run(tmp_path, REVIEWS, [review("2026-03-01T10:00:00Z")], until="2026-03-01T12:00:00Z", backend=backend)
    assert [a["step"] for a in of(actions, kind="escalate")] == [1]  # due exactly at --until fires


REPURCHASE = """
products:
  - {sku: tea, name: Tea, category: tea, cycle: 30d, learn_cycle: true}
  - {sku: pot, name: Pot, category: ware, cycle: 100d}
rules:
  - id: repurchase
    on: order.placed
    after: cycle - 3d
    unless: order.placed same sku
    notify: {to: customer, kind: service, template: "{product.name} again?"}
"""


def order(at, sku="tea", customer="c1", oid=None, **extra):
    oid = oid or f"{customer}-{sku}-{at}"
    return ev("order.placed", customer, at, id=oid, order_id=oid, sku=sku, category="tea", amount=10.0, **extra)


def test_declared_cycle_minus_three_days(tmp_path, backend):
    actions, _ = run(tmp_path, REPURCHASE, [order("2026-01-01T00:00:00Z")], until="2026-12-31T00:00:00Z",
                     backend=backend)
    assert [(a["due_at"], a["message"]) for a in actions] == [("2026-01-28T00:00:00+00:00", "Tea again?")]


def test_new_order_of_same_sku_replaces_the_reminder(tmp_path, backend):
    events = [order("2026-01-01T00:00:00Z"), order("2026-01-20T00:00:00Z")]
    actions, _ = run(tmp_path, REPURCHASE, events, until="2026-12-31T00:00:00Z", backend=backend)
    assert [a["due_at"] for a in actions] == ["2026-02-16T00:00:00+00:00"]


def test_order_of_another_sku_does_not_cancel(tmp_path, backend):
    events = [order("2026-01-01T00:00:00Z"), order("2026-01-10T00:00:00Z", sku="pot")]
    actions, _ = run(tmp_path, REPURCHASE, events, until="2026-12-31T00:00:00Z", backend=backend)
    assert sorted(a["due_at"] for a in actions) == ["2026-01-28T00:00:00+00:00", "2026-04-17T00:00:00+00:00"]


def test_cancel_exactly_at_due_time_wins(tmp_path, backend):
    events = [order("2026-01-01T00:00:00Z"), order("2026-01-28T00:00:00Z")]
    actions, _ = run(tmp_path, REPURCHASE, events, until="2026-02-20T00:00:00Z", backend=backend)
    assert actions == []


def test_learned_cycle_is_the_median_interval(tmp_path, backend):
    # intervals 10d and 12d: median 11d once 3 orders exist; reminder at last + 11d - 3d
    events = [order("2026-01-01T00:00:00Z"), order("2026-01-11T00:00:00Z"), order("2026-01-23T00:00:00Z")]
    actions, _ = run(tmp_path, REPURCHASE, events, until="2026-12-31T00:00:00Z", backend=backend)
    assert [a["due_at"] for a in actions] == ["2026-01-31T00:00:00+00:00"]


def test_unless_without_same_cancels_on_any_event_of_the_type(tmp_path, backend):
    rules = """
    rules:
      - id: nudge
        on: order.placed
        after: 2d
        unless: chat.received
        notify: {to: customer, kind: service, template: "hi"}
    """
    events = [order("2026-01-01T00:00:00Z"), ev("chat.received", "c1", "2026-01-02T00:00:00Z", id="ch", text="hey"),
              order("2026-02-01T00:00:00Z", sku="pot")]
    actions, _ = run(tmp_path, rules, events, until="2026-12-31T00:00:00Z", backend=backend)
    assert [a["due_at"] for a in actions] == ["2026-02-03T00:00:00+00:00"]


def test_timer_ties_follow_rule_order_then_creation(tmp_path, backend):
    rules = """
    rules:
      - id: first
        on: order.placed
        after: 1d
        notify: {to: customer, kind: service, template: "first {event.order_id}"}
      - id: second
        on: chat.received
        after: 1d
        notify: {to: customer, kind: service, template: "second"}
    """
    events = [ev("chat.received", "c1", "2026-01-01T00:00:00Z", id="ch", text="x"),
              order("2026-01-01T00:00:00Z", oid="a"), order("2026-01-01T00:00:00Z", customer="c2", oid="b")]
    actions, _ = run(tmp_path, rules, events, until="2026-12-31T00:00:00Z", backend=backend)
    assert [a["message"] for a in actions] == ["first a", "first b", "second"]


CAPS = """
caps:
  - {id: daily, kinds: [marketing], max: 1, per: 1d}
rules:
  - id: promo
    on: chat.received
    notify: {to: customer, template: "promo {event.text}"}
"""


def chat(at, text, customer="c1"):
    return ev("chat.received", customer, at, id=f"{customer}-{at}-{text}", text=text)


def test_rolling_cap_window_is_half_open(tmp_path, backend):
    events = [chat("2026-01-01T10:00:00Z", "a"), chat("2026-01-02T09:59:59Z", "b"), chat("2026-01-02T10:00:00Z", "c")]
    actions, _ = run(tmp_path, CAPS, events, backend=backend)
    assert [(a["message"], a["status"], a["reason"]) for a in actions] == [
        ("promo a", "sent", None), ("promo b", "suppressed", "cap:daily"), ("promo c", "sent", None)
    ]


def test_external_sends_count_against_caps(tmp_path, backend):
    events = [ev("message.sent", "c1", "2026-01-01T09:00:00Z", id="m", kind="marketing", channel="console"),
              chat("2026-01-01T10:00:00Z", "a")]
    actions, _ = run(tmp_path, CAPS, events, backend=backend)
    assert [(a["status"], a["reason"]) for a in actions] == [("suppressed", "cap:daily")]


def test_service_messages_are_not_capped(tmp_path, backend):
    rules = CAPS.replace('template: "promo {event.text}"', 'kind: service, template: "promo {event.text}"')
    actions, _ = run(tmp_path, rules, [chat("2026-01-01T10:00:00Z", "a"), chat("2026-01-01T11:00:00Z", "b")],
                     backend=backend)
    assert [a["status"] for a in actions] == ["sent", "sent"]


def test_opted_out_customers_get_no_marketing(tmp_path, backend):
    events = [ev("customer.opted_out", "c1", "2026-01-01T09:00:00Z", id="x"), chat("2026-01-01T10:00:00Z", "a"),
              ev("customer.opted_in", "c1", "2026-01-01T11:00:00Z", id="y"), chat("2026-01-01T12:00:00Z", "b")]
    actions, _ = run(tmp_path, CAPS, events, backend=backend)
    assert [(a["status"], a["reason"]) for a in actions] == [("suppressed", "opt-out"), ("sent", None)]


def test_calendar_week_cap_defers_to_next_iso_week(tmp_path, backend):
    rules = """
    shop: {timezone: Asia/Shanghai}
    caps:
      - {id: weekly, kinds: [marketing], max: 1, per: 7d, window: calendar, on_cap: defer}
    rules:
      - id: promo
        on: chat.received
        notify: {to: customer, template: "promo {event.text}"}
    """
    # 2026-03-04 is a Wednesday; the next ISO week starts Monday 2026-03-09 00:00 in Shanghai.
    events = [chat("2026-03-04T10:00:00+08:00", "a"), chat("2026-03-05T10:00:00+08:00", "b")]
    actions, _ = run(tmp_path, rules, events, until="2026-03-20T00:00:00+08:00", backend=backend)
    assert [(a["message"], a["status"], a["sent_at"]) for a in actions] == [
        ("promo a", "sent", "2026-03-04T10:00:00+08:00"),
        ("promo b", "sent", "2026-03-09T00:00:00+08:00"),
    ]
    assert actions[1]["due_at"] == "2026-03-05T10:00:00+08:00"


def test_deferring_cap_gives_up_after_three_defers(tmp_path, backend):
    rules = """
    caps:
      - {id: daily, kinds: [marketing], max: 1, per: 1d, on_cap: defer}
    rules:
      - id: promo
        on: chat.received
        notify: {to: customer, template: "promo {event.text}"}
    """
    # Five messages at once: each day one goes out; the others are pushed back, at most three times.
    events = [chat("2026-01-01T10:00:00Z", str(n)) for n in range(5)]
    actions, _ = run(tmp_path, rules, events, until="2026-02-01T00:00:00Z", backend=backend)
    final = {a["message"]: (a["status"], a["sent_at"], a["defers"]) for a in actions}
    assert final == {
        "promo 0": ("sent", "2026-01-01T10:00:00+00:00", 0),
        "promo 1": ("sent", "2026-01-02T10:00:00+00:00", 1),
        "promo 2": ("sent", "2026-01-03T10:00:00+00:00", 2),
        "promo 3": ("sent", "2026-01-04T10:00:00+00:00", 3),
        "promo 4": ("suppressed", None, 3),
    }


def test_quiet_hours_hold_marketing_until_the_window_ends(tmp_path, backend):
    rules = """
    shop: {timezone: Asia/Shanghai, quiet_hours: "22:00-08:00"}
    caps:
      - {id: daily, kinds: [marketing], max: 1, per: 1d}
    rules:
      - id: promo
        on: chat.received
        notify: {to: customer, template: "promo {event.text}"}
    """
    events = [chat("2026-03-04T23:30:00+08:00", "late"), chat("2026-03-05T07:00:00+08:00", "early")]
    actions, _ = run(tmp_path, rules, events, until="2026-03-06T00:00:00+08:00", backend=backend)
    assert [(a["message"], a["status"], a["reason"], a["sent_at"]) for a in actions] == [
        ("promo late", "sent", None, "2026-03-05T08:00:00+08:00"),
        ("promo early", "suppressed", "cap:daily", None),  # released at 08:00 too, after the first: capped
    ]


def test_quiet_hours_use_the_customer_time_zone(tmp_path, backend):
    rules = """
    shop: {timezone: Asia/Shanghai, quiet_hours: "22:00-08:00"}
    rules:
      - id: promo
        on: chat.received
        notify: {to: customer, template: "promo"}
    """
    events = [ev("customer.upserted", "c1", "2026-03-01T00:00:00Z", id="u", timezone="Europe/London"),
              chat("2026-03-04T23:30:00+08:00", "x")]  # 15:30 in London: not quiet there
    actions, _ = run(tmp_path, rules, events, backend=backend)
    assert [(a["status"], a["sent_at"]) for a in actions] == [("sent", "2026-03-04T23:30:00+08:00")]


LIFECYCLE = """
lifecycle: {dormant_after: 90d, churned_after: 180d}
contacts:
  rep: {channel: console, address: rep}
rules:
  - id: win-back
    on: stage.changed
    when: event.to == "dormant"
    notify: {to: owner, kind: service, template: "{customer.name} is dormant (was {event.from})"}
"""


def test_dormancy_happens_at_the_exact_instant(tmp_path, backend):
    events = [ev("customer.upserted", "c1", "2026-01-01T00:00:00Z", id="u", name="Ann", owner="rep"),
              order("2026-01-01T12:00:00Z"), order("2026-01-05T12:00:00Z", sku="pot")]
    actions, _ = run(tmp_path, LIFECYCLE, events, until="2026-12-31T00:00:00Z", backend=backend, stages=True)
    stages = [(a["to"], a["due_at"]) for a in of(actions, kind="stage")]
    assert stages == [("growing", "2026-01-05T12:00:00+00:00"), ("dormant", "2026-04-05T12:00:00+00:00"),
                      ("churned", "2026-07-04T12:00:00+00:00")]
    winback = of(actions, rule="win-back")
    assert [(a["to"], a["address"], a["message"], a["due_at"]) for a in winback] == [
        ("owner", "rep", "Ann is dormant (was growing)", "2026-04-05T12:00:00+00:00")]


def test_an_order_exactly_at_the_dormancy_instant_keeps_the_customer_active(tmp_path, backend):
    events = [order("2026-01-01T00:00:00Z"), order("2026-04-01T00:00:00Z", sku="pot")]  # exactly 90 days later
    actions, _ = run(tmp_path, LIFECYCLE, events, until="2026-04-02T00:00:00Z", backend=backend, stages=True)
    assert [a["to"] for a in of(actions, kind="stage")] == ["growing"]


def test_dormant_customer_who_orders_again_is_active_again(tmp_path, backend):
    events = [order("2026-01-01T00:00:00Z"), order("2026-06-01T00:00:00Z", sku="pot")]
    actions, _ = run(tmp_path, LIFECYCLE, events, until="2026-06-02T00:00:00Z", backend=backend, stages=True)
    assert [a["to"] for a in of(actions, kind="stage")] == ["dormant", "growing"]


def test_owner_missing_is_no_address(tmp_path, backend):
    events = [order("2026-01-01T00:00:00Z")]
    actions, _ = run(tmp_path, LIFECYCLE, events, until="2026-05-01T00:00:00Z", backend=backend)
    assert [(a["status"], a["reason"]) for a in of(actions, rule="win-back")] == [("suppressed", "no-address")]


BIRTHDAY = """
shop: {timezone: Asia/Shanghai}
rules:
  - id: birthday
    on: birthday
    at: "09:00"
    notify: {to: customer, template: "happy birthday {customer.name}"}
"""


def test_birthday_on_29_february_falls_on_28_february(tmp_path, backend):
    events = [ev("customer.upserted", "c1", "2026-01-01T00:00:00+08:00", id="u", name="Li", birthday="2000-02-29")]
    actions, _ = run(tmp_path, BIRTHDAY, events, until="2028-12-31T00:00:00+08:00", backend=backend)
    assert [a["due_at"] for a in actions] == [
        "2026-02-28T09:00:00+08:00", "2027-02-28T09:00:00+08:00", "2028-02-29T09:00:00+08:00"]


def test_birthday_learned_after_the_greeting_time_waits_a_year(tmp_path, backend):
    events = [ev("customer.upserted", "c1", "2026-05-01T10:00:00+08:00", id="u", name="Li", birthday="05-01")]
    actions, _ = run(tmp_path, BIRTHDAY, events, until="2027-06-01T00:00:00+08:00", backend=backend)
    assert [a["due_at"] for a in actions] == ["2027-05-01T09:00:00+08:00"]


TAGS = """
rules:
  - id: big
    when: customer.total_spent >= 100
    tag: big
    untag: true
  - id: repeat
    when: customer.order_count >= 2
    tag: repeat
"""


def test_tag_once_and_untag_when_condition_turns_false(tmp_path, backend):
    events = [
        ev("order.placed", "c1", "2026-01-01T00:00:00Z", id="o1", sku="a", amount=60.0),
        ev("order.placed", "c1", "2026-01-02T00:00:00Z", id="o2", sku="a", amount=60.0),
        ev("order.placed", "c1", "2026-01-03T00:00:00Z", id="o3", sku="a", amount=1.0),
        ev("order.refunded", "c1", "2026-01-04T00:00:00Z", id="f1", sku="a", amount=60.0),
    ]
    actions, _ = run(tmp_path, TAGS, events, backend=backend)
    assert [(a["kind"], a["to"], a["due_at"][:10]) for a in actions if a["kind"] in ("tag", "untag")] == [
        ("tag", "big", "2026-01-02"), ("tag", "repeat", "2026-01-02"), ("untag", "big", "2026-01-04")]


def test_second_replay_with_state_outputs_nothing(tmp_path, backend):
    state = str(tmp_path / "state.db")
    events = [review("2026-03-01T10:00:00Z"), order("2026-03-01T11:00:00Z")]
    first, _ = run(tmp_path, REVIEWS, events, until="2026-03-05T00:00:00Z", backend=backend, state=state)
    second, summary = run(tmp_path, REVIEWS, events, until="2026-03-05T00:00:00Z", backend=backend, state=state)
    assert len(first) == 3 and second == []
    assert summary.duplicates == 2


def test_replay_in_two_halves_equals_one_replay(tmp_path, backend):
    state = str(tmp_path / "state.db")
    events = [review("2026-03-01T10:00:00Z"), review("2026-03-02T10:00:00Z", rid="r2")]
    (tmp_path / "whole").mkdir()
    whole, _ = run(tmp_path / "whole", REVIEWS, events, until="2026-03-05T00:00:00Z", backend=backend)
    part1, _ = run(tmp_path, REVIEWS, events[:1], until="2026-03-01T23:00:00Z", backend=backend, state=state)
    part2, _ = run(tmp_path, REVIEWS, events, until="2026-03-05T00:00:00Z", backend=backend, state=state)

    def key(a):
        return a["key"], a["status"], a["due_at"]

    assert sorted(map(key, part1 + part2)) == sorted(map(key, whole))


def test_unsorted_input_gives_the_same_actions(tmp_path, backend):
    events = [review("2026-03-01T10:00:00Z"), handled("2026-03-01T11:00:00Z"), review("2026-03-01T09:00:00Z", rid="r0")]
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    shuffled, _ = run(tmp_path / "x", REVIEWS, events, until="2026-03-05T00:00:00Z", backend=backend)
    ordered, _ = run(tmp_path / "y", REVIEWS, sorted(events, key=lambda e: e["at"]), until="2026-03-05T00:00:00Z",
                     backend=backend)
    assert shuffled == ordered


def test_action_keys_are_deterministic(tmp_path, backend):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    events = [review("2026-03-01T10:00:00Z")]
    a, _ = run(tmp_path / "x", REVIEWS, events, until="2026-03-05T00:00:00Z", backend=backend)
    b, _ = run(tmp_path / "y", REVIEWS, events, until="2026-03-05T00:00:00Z", backend=backend)
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert len({x["key"] for x in a}) == len(a)


def test_channel_address_field_names_the_profile_field_to_send_to(tmp_path, backend):
    rules = """
    channels:
      sms: {type: memory, address_field: phone}
    rules:
      - id: hello
        on: chat.received
        notify: {to: customer, channel: sms, kind: service, template: "hi"}
    """
    events = [ev("customer.upserted", "c1", "2026-01-01T00:00:00Z", id="u", phone="+8613900000001"),
              chat("2026-01-01T10:00:00Z", "x"), chat("2026-01-01T10:00:00Z", "y", customer="c2")]
    actions, _ = run(tmp_path, rules, events, backend=backend)
    assert [(a["customer_id"], a["address"], a["status"], a["reason"]) for a in actions] == [
        ("c1", "+8613900000001", "sent", None), ("c2", None, "suppressed", "no-address")]


TICKETS = """
rules:
  - id: follow-up
    on: ticket.opened
    after: 2d
    unless: ticket.closed same ref
    notify: {to: customer, kind: service, template: "ticket {event.ref}"}
"""
# (first ref, second ref, whether they are the same `same` value): numbers compare as numbers,
# but true is not 1 and "1" is not 1, inside lists and objects too.
SAME_REFS = [
    (1, 1.0, True), (1, 1, True), (2.5, 2.5, True), (1, True, False), (1.0, True, False), (1, "1", False),
    ("1", "1.0", False), (True, True, True), (False, 0, False), ([1, "a"], [1.0, "a"], True),
    ([True], [1], False), ({"a": 1, "b": [2]}, {"b": [2.0], "a": 1.0}, True), ({"a": 1}, {"a": "1"}, False),
]


def ticket(kind, at, ref, n):
    return ev(f"ticket.{kind}", "c1", at, id=f"{kind}-{n}", ref=ref)


@pytest.mark.parametrize(("first", "second", "same"), SAME_REFS)
def test_same_value_replaces_the_pending_timer(tmp_path, backend, first, second, same):
    events = [ticket("opened", "2026-01-01T00:00:00Z", first, 1), ticket("opened", "2026-01-02T00:00:00Z", second, 2)]
    actions, _ = run(tmp_path, TICKETS, events, until="2026-02-01T00:00:00Z", backend=backend)
    expected = ["2026-01-04T00:00:00+00:00"] if same else ["2026-01-03T00:00:00+00:00", "2026-01-04T00:00:00+00:00"]
    assert sorted(a["due_at"] for a in actions) == expected


@pytest.mark.parametrize(("first", "second", "same"), SAME_REFS)
def test_same_value_cancels_the_pending_timer(tmp_path, backend, first, second, same):
    events = [ticket("opened", "2026-01-01T00:00:00Z", first, 1), ticket("closed", "2026-01-02T00:00:00Z", second, 2)]
    actions, _ = run(tmp_path, TICKETS, events, until="2026-02-01T00:00:00Z", backend=backend)
    assert [a["due_at"] for a in actions] == ([] if same else ["2026-01-03T00:00:00+00:00"])


@pytest.mark.parametrize(("first", "second", "same"), [(1, 1.0, True), (1.0, 1, True), (1, True, False)])
def test_same_value_equality_survives_a_restart(tmp_path, backend, first, second, same):
    """The pending timer comes back from the state file (JSON) and still compares the same way."""
    state = tmp_path / "state.db"
    run(tmp_path, TICKETS, [ticket("opened", "2026-01-01T00:00:00Z", first, 1)], until="2026-01-01T12:00:00Z",
        backend=backend, state=state)
    later = [ticket("opened", "2026-01-02T00:00:00Z", second, 2), ticket("closed", "2026-01-02T06:00:00Z", second, 3)]
    actions, _ = run(tmp_path, TICKETS, later, until="2026-02-01T00:00:00Z", backend=backend, state=state)
    assert [a["due_at"] for a in actions] == ([] if same else ["2026-01-03T00:00:00+00:00"])


def test_missing_same_value_never_cancels(tmp_path, backend):
    events = [ticket("opened", "2026-01-01T00:00:00Z", None, 1), ticket("closed", "2026-01-02T00:00:00Z", None, 2)]
    actions, _ = run(tmp_path, TICKETS, events, until="2026-02-01T00:00:00Z", backend=backend)
    assert [a["due_at"] for a in actions] == ["2026-01-03T00:00:00+00:00"]
