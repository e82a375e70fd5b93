"""Every duration in a rule file is at most 100 years and every number at most 2^53 - 1, checked with a
position; what a delay computes at run time beyond that is skipped by the engine, never a crash."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rulecrm.app.session import build_engine
from rulecrm.backends import available_backends
from rulecrm.events import Event
from rulecrm.rulefile.loader import check_rules
from rulecrm.state.store import Store
from rulecrm.timeutil import MAX_DURATION, add_delay, parse_duration

NOTIFY = "notify: {to: customer, template: hi}"


def check(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return check_rules(path)


def only_error(tmp_path, text: str):
    ruleset, diagnostics = check(tmp_path, text)
    errors = [d for d in diagnostics if d.is_error]
    assert ruleset is None and len(errors) == 1, [d.format() for d in diagnostics]
    return errors[0]


def rule(body: str, on: str = "order.placed") -> str:
    return f"rules:\n  - id: r\n    on: {on}\n{body}"


def where(template: str) -> tuple[int, int]:
    """The (line, column) of `{value}` in a rule-file template: where the error must point."""
    at = template.index("{value}")
    return template.count("\n", 0, at) + 1, at - template.rfind("\n", 0, at)


TAG = rule("    tag: t\n")
# rule files with {value} where the duration goes
DURATION_PLACES = {
    "product cycle": "products:\n  - {sku: tea, cycle: {value}}\n" + TAG,
    "cap per": "caps:\n  - {id: c, max: 1, per: {value}}\n" + TAG,
    "lifecycle dormant_after": "lifecycle:\n  dormant_after: {value}\n  churned_after: 36500d\n" + TAG,
    "lifecycle churned_after": "lifecycle:\n  churned_after: {value}\n" + TAG,
    "rule after": rule(f"    after: {{value}}\n    {NOTIFY}\n"),
    "after expression": rule(f"    after: 1d + {{value}}\n    {NOTIFY}\n"),
    "escalation step": rule(f"    {NOTIFY}\n    escalate:\n      steps:\n"
                            f"        - {{after: {{value}}, notify: {{to: customer}}}}\n"),
    "recheck": rule(f"    after: 1d\n    recheck: event.at - customer.first_seen_at < {{value}}\n    {NOTIFY}\n"),
    "when": rule("    when: customer.last_order_at > event.at - {value}\n    tag: t\n"),
    "untag": "rules:\n  - id: r\n    when: customer.order_count > 1\n    tag: t\n"
             "    untag: customer.first_seen_at + {value} < customer.last_order_at\n",
}


@pytest.mark.parametrize("place", DURATION_PLACES)
@pytest.mark.parametrize("value", ["36501d", "3000000d", "99999999999999999d", "5215w", "876001h", "36500d1ms",
                                   "9" * 400 + "d"])
def test_durations_beyond_100_years_are_positioned_errors_everywhere(tmp_path, place, value):
    template = DURATION_PLACES[place]
    error = only_error(tmp_path, template.replace("{value}", value))
    assert (error.line, error.column) == where(template), error.format()
    assert "longer than 100 years" in error.message
    assert error.expected == "a duration of at most 36500d (100 years)"
    assert error.hint and error.found


@pytest.mark.parametrize("place", DURATION_PLACES)
def test_100_years_itself_is_accepted_everywhere(tmp_path, place):
    template = DURATION_PLACES[place]
    # dormant_after must stay below churned_after (36500d); `1d + {value}` must stay within 100 years
    value = {"lifecycle dormant_after": "36499d", "after expression": "36499d"}.get(place, "36500d")
    ruleset, diagnostics = check(tmp_path, template.replace("{value}", value))
    assert ruleset is not None, [d.format() for d in diagnostics]


@pytest.mark.parametrize(
    ("after", "column"),
    [("3d * 100000", 12), ("36500d + 1d", 12), ("-36500d - 1d", 12), ("(1d + 36500d) / 0.5", 13),
     ("1d * 9007199254740991 * 9007199254740991", 12)],
)
def test_a_constant_delay_that_comes_to_more_than_100_years_is_an_error(tmp_path, after, column):
    error = only_error(tmp_path, rule(f"    after: {after}\n    {NOTIFY}\n"))
    assert (error.line, error.column) == (4, column), error.format()
    assert "more than 100 years" in error.message and error.hint


NUMBER_PLACES = {
    "cap max": "caps:\n  - {id: c, max: {value}, per: 1d}\n" + TAG,
    "learn_min_orders": "products:\n  - {sku: tea, cycle: 3d, learn_cycle: true, learn_min_orders: {value}}\n" + TAG,
    "price": "products:\n  - {sku: tea, price: {value}}\n" + TAG,
    "growing_orders": "lifecycle:\n  growing_orders: {value}\n" + TAG,
    "mature_orders": "lifecycle:\n  mature_orders: {value}\n" + TAG,
}


@pytest.mark.parametrize("place", NUMBER_PLACES)
@pytest.mark.parametrize("value", ["99999999999999999999999", "9007199254740992", "1.0e400", ".inf",
                                   "9007199254740993"])
def test_numbers_beyond_2_to_the_53_are_positioned_errors(tmp_path, place, value):
    template = NUMBER_PLACES[place]
    ruleset, diagnostics = check(tmp_path, template.replace("{value}", value))
    errors = [d for d in diagnostics if d.is_error]
    assert ruleset is None and errors
    assert all((d.line, d.column) == where(template) for d in errors), [d.format() for d in errors]
    assert all(d.expected for d in errors)


@pytest.mark.parametrize("place", ["cap max", "learn_min_orders", "price"])
def test_2_to_the_53_minus_1_itself_is_accepted(tmp_path, place):
    template = NUMBER_PLACES[place]
    ruleset, diagnostics = check(tmp_path, template.replace("{value}", "9007199254740991"))
    assert ruleset is not None, [d.format() for d in diagnostics]


@pytest.mark.parametrize("literal", ["1e999", "99999999999999999999999", "9007199254740992", "1e16", "9" * 5000])
def test_numbers_in_expressions_beyond_2_to_the_53_are_positioned_errors(tmp_path, literal):
    template = rule("    when: customer.total_spent > {value}\n    tag: t\n")
    error = only_error(tmp_path, template.replace("{value}", literal))
    assert (error.line, error.column) == where(template), error.format()
    assert "out of range" in error.message and "2^53" in error.expected


def test_big_numbers_reach_the_durable_backend_only_within_range(tmp_path):
    # durable-rules saturates integers beyond 64 bits: the largest literal check lets through compares exactly.
    ruleset, diagnostics = check(tmp_path, rule("    when: event.amount >= 9007199254740990\n    tag: big\n"))
    assert ruleset is not None
    for backend in available_backends():
        engine = build_engine(ruleset, Store.open(":memory:"), backend_name=backend)
        for n, amount in enumerate((2**53 - 3, 2**53 - 2, 2**53 - 1)):
            engine.ingest(order(f"c{n}", amount=amount))
        assert {p for p in engine.profiles if "big" in engine.profile(p).tags} == {"c1", "c2"}, backend


T0 = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)


def order(customer: str, at: datetime = T0, **data) -> Event:
    return Event.from_dict({"id": f"o-{customer}-{at.isoformat()}", "type": "order.placed", "customer_id": customer,
                            "at": at.isoformat(), "data": {"sku": "tea", "amount": 10, **data}},
                           default_tz=timezone.utc)


RUN_TIME_RULES = """
products:
  - {sku: tea, cycle: 30d}
rules:
  - id: scaled
    on: order.placed
    after: cycle * (customer.order_count + 2000)
    notify: {to: customer, template: "scaled"}
  - id: huge
    on: order.placed
    after: 1d * (customer.order_count + 3000000)
    notify: {to: customer, template: "huge"}
  - id: before-year-one
    on: order.placed
    after: -1d * (customer.order_count + 3000000)
    notify: {to: customer, template: "before"}
  - id: overflowing
    on: order.placed
    after: 36500d * (customer.order_count + 9007199254740991)
    notify: {to: customer, template: "overflowing"}
  - id: escalating
    on: order.placed
    notify: {to: customer, template: "now"}
    escalate:
      steps:
        - {after: 1h, notify: {to: customer}}
        - {after: cycle * 10000, notify: {to: customer}}
  - id: longest
    on: order.placed
    after: 36500d + cycle - cycle
    notify: {to: customer, template: "longest"}
"""


@pytest.mark.parametrize("backend", available_backends())
def test_delays_computed_beyond_100_years_are_skipped_and_counted(tmp_path, backend):
    ruleset, diagnostics = check(tmp_path, RUN_TIME_RULES)
    assert ruleset is not None, [d.format() for d in diagnostics]
    engine = build_engine(ruleset, Store.open(":memory:"), backend_name=backend)
    engine.ingest(order("c-1"))
    engine.advance(T0 + MAX_DURATION + timedelta(days=1))
    due = sorted((timer.payload["rule"], timer.payload.get("step")) for timer in engine.pending_timers()
                 if timer.payload["type"] in ("after", "escalate"))
    assert due == []  # every timer that was scheduled has fired
    # scaled: 30d * 2001, huge: 3M days, before: -3M days (before year 1), the step's 300,000 days
    assert engine.stats["delays_out_of_range"] == 4
    assert engine.stats["delays_without_duration"] == 1  # overflowing: the arithmetic itself overflowed
    assert engine.stats["timers_fired"] >= 2  # the 1 h step and the 100-year delay


def test_add_delay_bounds():
    assert add_delay(T0, timedelta(hours=2)) == T0 + timedelta(hours=2)
    assert add_delay(T0, -timedelta(hours=2)) == T0  # never before the trigger
    assert add_delay(T0, MAX_DURATION) == T0 + MAX_DURATION
    assert add_delay(T0, MAX_DURATION + timedelta(microseconds=1)) is None
    assert add_delay(T0, -MAX_DURATION - timedelta(microseconds=1)) is None
    assert add_delay(datetime(9990, 1, 1, tzinfo=timezone.utc), MAX_DURATION) is None  # after year 9999
    far = datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))  # UTC is in year 10000
    assert add_delay(far, timedelta(0)) is None


@pytest.mark.parametrize("text", ["99999999999999999d", "9" * 400 + "w", "1" + "0" * 30 + "ms", "1d" * 10_000])
def test_parse_duration_raises_value_error_never_overflow(text):
    try:
        value = parse_duration(text)
    except ValueError as exc:
        assert "too large" in str(exc)
    else:
        assert value == timedelta(days=10_000)
