"""`rulecrm explain`: the tracer in-process, and the command on states built by `rulecrm replay --state`."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import timedelta

import pytest

from rulecrm.explain import evaluate, expression_text, trace
from rulecrm.explain.trace import explain_outcome
from rulecrm.expr.compiler import compile_expression
from rulecrm.expr.context import MISSING, EvalContext
from rulecrm.expr.parser import parse_expression

RULES = """\
shop:
  timezone: Asia/Shanghai
  quiet_hours: "22:00-08:00"

products:
  - {sku: tea-xqg, name: 小青柑普洱, category: tea, cycle: 30d}

caps:
  - {id: marketing-daily, kinds: [marketing], max: 1, per: 1d}

rules:
  - id: repeat-buyer
    when: customer.order_count >= 2
    tag: repeat-buyer

  - id: thanks
    on: order.placed
    notify: {to: customer, kind: marketing, template: "thanks {customer.name}"}

  - id: tea-repurchase
    on: order.placed
    when: event.category == "tea"
    after: cycle - 3d
    unless: order.placed same sku
    notify: {to: customer, kind: marketing, template: "{product.name} again?"}

  - id: bad-review
    on: review.created
    when: event.rating <= 2
    notify: {to: owner, kind: service, template: "bad review {event.rating}"}
"""

EVENTS = [
    # c1: a send, a capped send, a send held by quiet hours, a review that does not match
    {"type": "customer.upserted", "customer_id": "c1", "at": "2026-04-01T09:00:00+08:00", "data": {"name": "Li"}},
    {"type": "order.placed", "customer_id": "c1", "at": "2026-04-01T10:00:00+08:00", "id": "o-1",
     "data": {"sku": "tea-xqg", "category": "tea", "amount": 128}},
    {"type": "order.placed", "customer_id": "c1", "at": "2026-04-01T15:00:00+08:00", "id": "o-2",
     "data": {"sku": "cup", "category": "ware", "amount": 60}},
    {"type": "order.placed", "customer_id": "c1", "at": "2026-04-02T23:10:00+08:00", "id": "o-3",
     "data": {"sku": "tea-xqg", "category": "tea", "amount": 128}},
    {"type": "review.created", "customer_id": "c1", "at": "2026-04-03T10:00:00+08:00", "id": "r-9",
     "data": {"review_id": "r-9", "rating": 4}},
    # c2: opted out before an order; a bad review with no owner to tell
    {"type": "customer.opted_out", "customer_id": "c2", "at": "2026-04-01T08:00:00+08:00", "id": "oo-1"},
    {"type": "order.placed", "customer_id": "c2", "at": "2026-04-01T12:00:00+08:00", "id": "p-1",
     "data": {"sku": "cup", "amount": 10}},
    {"type": "review.created", "customer_id": "c2", "at": "2026-04-02T12:00:00+08:00", "id": "r-1",
     "data": {"review_id": "r-1", "rating": 1}},
]


def rulecrm(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "rulecrm", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A state written by `rulecrm replay --state` over the timeline above."""
    directory = tmp_path_factory.mktemp("explain")
    rules = directory / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    events = directory / "events.jsonl"
    events.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in EVENTS), encoding="utf-8")
    db = directory / "state.db"
    rulecrm("replay", "--rules", str(rules), "--events", str(events), "--state", str(db))
    return rules, db


def explain(state, *args, check=True):
    rules, db = state
    return rulecrm("explain", "--rules", str(rules), "--state", str(db), *args, check=check)


def as_json(state, *args) -> dict:
    return json.loads(explain(state, *args, "--json").stdout)


def rule_of(report, rule_id) -> dict:
    return next(rule for rule in report["rules"] if rule["id"] == rule_id)


# -- the tracer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    'event.rating <= 2',
    'event.rating <= 2 and customer.order_count >= 2',
    'not (event.x == "a" or event.y in [1, 2]) and customer.tags contains "vip"',
    'customer.sku["tea-xqg"].order_count > 1 - -2 * (3 + 4)',
    'event.text matches "近期|最近"',
    '(customer.last_order_at + 30d) < event.at or not customer.opted_out',
])
def test_expression_text_parses_back_to_itself(text):
    spelled = expression_text(parse_expression(text))
    assert expression_text(parse_expression(spelled)) == spelled


def test_every_value_in_a_trace_is_the_compilers():
    node = parse_expression('customer.order_count * 2 >= event.n and event.missing == 1 or cycle - 3d > 20d')
    ctx = EvalContext(event={"n": 3}, customer={"order_count": 1}, cycle=timedelta(days=30))
    stack = [trace(node, ctx)]
    while stack:
        part = stack.pop()
        assert part.value == compile_expression(part.node)(ctx) or part.value is MISSING
        stack.extend(part.parts)


def test_a_false_condition_names_the_comparison_and_the_value_it_saw():
    node = parse_expression("event.rating <= 2 and customer.order_count >= 1")
    evaluation = evaluate(node, EvalContext(event={"rating": 4}, customer={"order_count": 3}))
    assert evaluation.result is False
    assert explain_outcome(evaluation) == "event.rating <= 2 was false (event.rating was 4)"


def test_missing_values_are_shown_as_missing():
    node = parse_expression('event.category == "tea"')
    evaluation = evaluate(node, EvalContext(event={}))
    assert explain_outcome(evaluation) == 'event.category == "tea" was false (event.category was missing)'
    assert evaluation.trace.to_dict()["parts"][0] == {"expr": "event.category", "value": None, "shown": "missing"}


def test_a_false_or_names_every_part():
    node = parse_expression('event.a == 1 or not (event.b == 2)')
    evaluation = evaluate(node, EvalContext(event={"a": 0, "b": 2}))
    assert explain_outcome(evaluation) == ("event.a == 1 was false (event.a was 0) and "
                                           "event.b == 2 was true (event.b was 2)")


# -- the command -----------------------------------------------------------------------------------


def test_a_capped_message_shows_the_cap_and_the_sends_it_counted(state):
    text = explain(state, "--customer", "c1", "--rule", "thanks").stdout
    assert "suppressed (cap:marketing-daily); due 2026-04-01T15:00:00+08:00" in text
    assert ("cap marketing-daily (rolling 1d, max 1) at 2026-04-01T15:00:00+08:00: counted 1: "
            "2026-04-01T10:00:00+08:00 by rule thanks (thanks|c1|o-1); suppressed") in text
    gate = next(g for a in rule_of(as_json(state, "--customer", "c1"), "thanks")["actions"] for g in a["gates"]
                if g["gate"] == "cap")
    assert gate["count"] == 1 and gate["counted"][0]["at"] == "2026-04-01T10:00:00+08:00"


def test_a_quiet_hours_hold_shows_the_local_time_and_the_release(state):
    text = explain(state, "--customer", "c1", "--rule", "thanks").stdout
    assert ("quiet hours 22:00-08:00 Asia/Shanghai: local time 2026-04-02 23:10; "
            "held until 2026-04-03T08:00:00+08:00") in text
    action = next(a for a in rule_of(as_json(state, "--customer", "c1"), "thanks")["actions"] if a["trigger"] == "o-3")
    assert action["sent_at"] == "2026-04-03T08:00:00+08:00"
    assert action["gates"][0]["release_at"] == "2026-04-03T08:00:00+08:00"


def test_opt_out_shows_when_the_customer_opted_out(state):
    text = explain(state, "--customer", "c2", "--rule", "thanks").stdout
    assert "opt-out: the customer opted out at 2026-04-01T08:00:00+08:00 (oo-1); suppressed" in text
    assert "verdict: suppressed 1 time (opt-out)" in text


def test_no_address_says_what_was_missing(state):
    report = as_json(state, "--customer", "c2", "--rule", "bad-review")
    (action,) = rule_of(report, "bad-review")["actions"]
    assert action["reason"] == "no-address"
    assert action["gates"][0]["field"] == "owner"


def test_a_rule_that_never_matched_shows_the_false_comparison(state):
    text = explain(state, "--customer", "c1", "--rule", "bad-review").stdout
    assert ("verdict: never matched: event.rating <= 2 was false (event.rating was 4) "
            "on review.created r-9 at 2026-04-03T10:00:00+08:00") in text


def test_event_rules_see_the_profile_as_it_was_then(state):
    report = as_json(state, "--customer", "c1", "--rule", "tea-repurchase")
    condition = rule_of(report, "tea-repurchase")["condition"]
    assert condition["against"]["id"] == "o-3" and condition["result"] is True
    assert condition["delay"] == "27d"


def test_profile_rules_are_evaluated_now(state):
    report = as_json(state, "--customer", "c1", "--rule", "repeat-buyer")
    assert report["profile"]["read_by_rules"] == {"customer.order_count": 3}
    condition = rule_of(report, "repeat-buyer")["condition"]
    assert condition["against"] == {"what": "profile now"}
    assert condition["why"] == "customer.order_count >= 2 was true (customer.order_count was 3)"


def test_pending_timers_show_due_times_and_what_cancels_them(state):
    text = explain(state, "--customer", "c1").stdout
    assert ("verdict: waiting: delay due 2026-04-29T23:10:00+08:00 unless order.placed with sku tea-xqg") in text
    timers = as_json(state, "--customer", "c1")["timers"]
    kinds = {t["kind"]: t for t in timers}
    assert kinds["delay"]["due_at"] == "2026-04-29T23:10:00+08:00"
    assert kinds["delay"]["trigger"]["id"] == "o-3"
    assert kinds["lifecycle"]["becomes"] == "dormant"


def test_json_has_the_same_facts_as_the_text(state):
    text = explain(state, "--customer", "c1").stdout
    report = as_json(state, "--customer", "c1")
    assert report["customer"] == "c1"
    for rule in report["rules"]:
        assert f"verdict: {rule['verdict']}" in text
        for action in rule["actions"]:
            assert action["key"] in text
    for timer in report["timers"]:
        assert timer["due_at"] in text


def test_unknown_customer_fails_with_a_suggestion(state):
    result = explain(state, "--customer", "c", check=False)
    assert result.returncode == 1
    assert "customer 'c' has no events in state" in result.stderr
    result = explain(state, "--customer", "c1x", check=False)
    assert result.returncode == 1 and "did you mean 'c1'?" in result.stderr


def test_unknown_rule_fails_with_a_suggestion(state):
    result = explain(state, "--customer", "c1", "--rule", "bad-reveiw", check=False)
    assert result.returncode == 1 and "did you mean 'bad-review'?" in result.stderr


def test_explain_does_not_change_the_state(state):
    _rules, db = state
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    explain(state, "--customer", "c1")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


# -- explain from the engine's own decisions ---------------------------------------------------------


def replayed(tmp_path, rules: str, events, until="2026-04-03T00:00:00+08:00") -> tuple:
    """(rules path, state path, the outbox by key) after `rulecrm replay --state --until`."""
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(rules, encoding="utf-8")
    events_path = tmp_path / "events.jsonl"
    events_path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
    db = tmp_path / "state.db"
    out = rulecrm("replay", "--rules", str(rules_path), "--events", str(events_path), "--state", str(db),
                  "--until", until).stdout
    return rules_path, db, {a["key"]: a for a in map(json.loads, out.splitlines())}


def explained(rules_path, db, customer, *args, check=True):
    return rulecrm("explain", "--rules", str(rules_path), "--state", str(db), "--customer", customer, *args,
                   check=check)


def gates_of(report) -> dict:
    return {action["key"]: action["gates"] for rule in report["rules"] for action in rule["actions"]}


def order(at, oid, customer="c1"):
    return {"type": "order.placed", "customer_id": customer, "at": at, "id": oid,
            "data": {"sku": "cup", "category": "ware", "amount": 10}}


TIES = {
    # Two notifications due at one instant: the earlier rule goes through the cap first.
    "same-event": ("""
shop: {timezone: Asia/Shanghai}
caps: [{id: daily, kinds: [marketing], max: 1, per: 1d}]
rules:
  - {id: zz-first, on: order.placed, notify: {to: customer, kind: marketing, template: "a"}}
  - {id: aa-second, on: order.placed, notify: {to: customer, kind: marketing, template: "b"}}
""", [order("2026-04-01T10:00:00+08:00", "o-1")], "zz-first|c1|o-1", "aa-second|c1|o-1"),
    # A timer due at T fires after the events at T, although its rule comes first in the file.
    "timer-after-event": ("""
shop: {timezone: Asia/Shanghai}
caps: [{id: daily, kinds: [marketing], max: 1, per: 1d}]
rules:
  - {id: later, on: order.placed, after: 1h, notify: {to: customer, kind: marketing, template: "later"}}
  - {id: chat-reply, on: chat.received, notify: {to: customer, kind: marketing, template: "reply"}}
""", [order("2026-04-01T10:00:00+08:00", "o-1"),
      {"type": "chat.received", "customer_id": "c1", "at": "2026-04-01T11:00:00+08:00", "id": "m-1",
       "data": {"text": "hi"}}],
        "chat-reply|c1|m-1", "later|c1|o-1"),
    # Two sends held by quiet hours and released together: by rule order, not by when each was due.
    "quiet-release": ("""
shop: {timezone: Asia/Shanghai, quiet_hours: "22:00-08:00"}
caps: [{id: daily, kinds: [marketing], max: 1, per: 1d}]
rules:
  - {id: morning, on: chat.received, notify: {to: customer, kind: marketing, template: "m"}}
  - {id: night, on: order.placed, notify: {to: customer, kind: marketing, template: "n"}}
""", [order("2026-04-01T23:00:00+08:00", "o-1"),
      {"type": "chat.received", "customer_id": "c1", "at": "2026-04-02T07:00:00+08:00", "id": "m-1",
       "data": {"text": "hi"}}],
        "morning|c1|m-1", "night|c1|o-1"),
    # A `message.sent` counts from where it stands among the events at its instant.
    "message-sent-after": ("""
shop: {timezone: Asia/Shanghai}
caps: [{id: daily, kinds: [marketing], max: 2, per: 1d}]
rules:
  - {id: thanks, on: order.placed, notify: {to: customer, kind: marketing, template: "t"}}
  - {id: reply, on: chat.received, notify: {to: customer, kind: marketing, template: "r"}}
""", [order("2026-04-01T10:00:00+08:00", "o-1"),
      {"type": "message.sent", "customer_id": "c1", "at": "2026-04-01T10:00:00+08:00", "id": "ms-1",
       "data": {"kind": "marketing"}},
      {"type": "chat.received", "customer_id": "c1", "at": "2026-04-01T10:00:00+08:00", "id": "m-1",
       "data": {"text": "hi"}}],
        "thanks|c1|o-1", "reply|c1|m-1"),
}


@pytest.mark.parametrize("case", TIES)
def test_ties_at_one_instant_are_explained_as_the_engine_decided(tmp_path, case):
    rules, events, sent_key, suppressed_key = TIES[case]
    rules_path, db, outbox = replayed(tmp_path, rules, events)
    assert outbox[sent_key]["status"] == "sent"
    assert (outbox[suppressed_key]["status"], outbox[suppressed_key]["reason"]) == ("suppressed", "cap:daily")
    result = explained(rules_path, db, "c1")
    assert "the rules or the history changed" not in result.stdout
    gates = gates_of(json.loads(explained(rules_path, db, "c1", "--json").stdout))
    assert [g["gate"] for g in gates[sent_key]][-1] == "passed"
    cap = gates[suppressed_key][-1]
    assert (cap["gate"], cap["outcome"]) == ("cap", "suppressed")
    sent_at = outbox[sent_key]["sent_at"]
    if case == "message-sent-after":
        assert cap["count"] == 2 and cap["counted"] == [{"at": sent_at, "by": f"rule thanks ({sent_key})"},
                                                        {"at": sent_at, "by": "message.sent ms-1"}]
    else:
        assert cap["count"] == 1
        assert cap["counted"] == [{"at": sent_at, "by": f"rule {outbox[sent_key]['rule']} ({sent_key})"}]
    assert cap["at"] == sent_at  # judged at the same instant, after the one that was sent


def test_a_changed_rule_is_reported_as_a_change(tmp_path):
    rules, events, sent_key, suppressed_key = TIES["same-event"]
    rules_path, db, _outbox = replayed(tmp_path, rules, events)
    rules_path.write_text(rules.replace("max: 1", "max: 2"), encoding="utf-8")
    report = json.loads(explained(rules_path, db, "c1", "--json").stdout)
    note = gates_of(report)[suppressed_key][-1]
    assert note["gate"] == "note" and note["outcome"] == "sent"
    assert ("re-running the stored events with the current rules gives sent at 2026-04-01T10:00:00+08:00, "
            "but the outbox says suppressed (cap:daily): the rules or the history changed") in note["detail"]
    assert all(g["gate"] != "note" for g in gates_of(report)[sent_key])


def test_a_customer_whose_only_event_changed_nothing_is_explained(tmp_path):
    rules = """
shop: {timezone: Asia/Shanghai}
contacts: {cs: {channel: console, address: cs-group}}
rules:
  - {id: vip, when: customer.order_count >= 3, tag: vip}
  - {id: intent, on: chat.received, when: 'event.text contains "buy"', notify: {to: cs, template: "lead"}}
  - {id: thanks, on: order.placed, notify: {to: customer, template: "thanks"}}
"""
    events = [order("2026-04-01T10:00:00+08:00", "o-1", customer="buyer"),
              {"type": "chat.received", "customer_id": "quiet-one", "at": "2026-04-01T11:00:00+08:00",
               "id": "m-1", "data": {"text": "hello"}}]
    rules_path, db, outbox = replayed(tmp_path, rules, events)
    assert not [a for a in outbox.values() if a["customer_id"] == "quiet-one"]
    result = explained(rules_path, db, "quiet-one")
    assert result.stderr == ""
    report = json.loads(explained(rules_path, db, "quiet-one", "--json").stdout)
    verdicts = {rule["id"]: rule["verdict"] for rule in report["rules"]}
    assert verdicts == {
        "vip": "not matched now: customer.order_count >= 3 was false (customer.order_count was 0)",
        "intent": 'never matched: event.text contains "buy" was false (event.text was "hello") '
                  "on chat.received m-1 at 2026-04-01T11:00:00+08:00",
        "thanks": "never triggered: no order.placed event for this customer",
    }
    for verdict in verdicts.values():
        assert f"verdict: {verdict}" in result.stdout


def test_a_customer_without_events_gets_a_did_you_mean(tmp_path):
    rules = "rules:\n  - {id: thanks, on: order.placed, notify: {to: customer, template: t}}\n"
    rules_path, db, _ = replayed(tmp_path, rules, [order("2026-04-01T10:00:00+08:00", "o-1", customer="c-1042"),
                                                   order("2026-04-01T10:00:00+08:00", "o-2", customer="zhang")])
    result = explained(rules_path, db, "c-1024", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: customer 'c-1024' has no events in state {db}; did you mean 'c-1042'?\n"
    result = explained(rules_path, db, "nobody-at-all", check=False)
    assert result.returncode == 1
    assert result.stderr == (f"error: customer 'nobody-at-all' has no events in state {db}; "
                             "2 customers are known, e.g. 'c-1042', 'zhang'\n")


def test_events_applied_after_their_time_are_named_when_the_rerun_differs(tmp_path):
    """A second replay brings an earlier order: the re-run cannot know when the first run's timers fired."""
    rules = ("shop: {timezone: Asia/Shanghai}\nrules:\n  - {id: later, on: order.placed, after: 1h, "
             "unless: chat.received, notify: {to: customer, template: later}}\n")
    first = [order("2026-04-01T10:00:00+08:00", "o-1")]
    rules_path, db, outbox = replayed(tmp_path, rules, first, until="2026-04-01T12:00:00+08:00")
    assert outbox["later|c1|o-1"]["status"] == "sent"
    (tmp_path / "late.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
        order("2026-04-01T09:00:00+08:00", "o-0"),
        {"type": "chat.received", "customer_id": "c1", "at": "2026-04-01T09:30:00+08:00", "id": "m-1",
         "data": {"text": "x"}},
    ]), encoding="utf-8")
    rulecrm("replay", "--rules", str(rules_path), "--events", str(tmp_path / "late.jsonl"), "--state", str(db))
    (note,) = gates_of(json.loads(explained(rules_path, db, "c1", "--json").stdout))["later|c1|o-1"]
    assert note["gate"] == "note" and note["outcome"] is None
    assert note["detail"].startswith("re-running the stored events with the current rules gives no such action, "
                                     "but the outbox says sent: the rules or the history changed")
    assert "order.placed o-0 was applied after an event later than it" in note["detail"]


def test_a_hold_on_a_dst_night_is_explained_with_the_engine_release(tmp_path):
    """01:15 EST, the repeated hour: held until 01:30 EST, as the engine released it."""
    rules = """
shop: {timezone: America/New_York, quiet_hours: "01:00-01:30"}
rules:
  - {id: promo, on: chat.received, notify: {to: customer, kind: marketing, template: "p"}}
"""
    events = [{"type": "chat.received", "customer_id": "c1", "at": "2026-11-01T01:15:00-05:00", "id": "m-1",
               "data": {"text": "hi"}}]
    rules_path, db, outbox = replayed(tmp_path, rules, events, until="2026-11-02T00:00:00-05:00")
    assert outbox["promo|c1|m-1"]["sent_at"] == "2026-11-01T01:30:00-05:00"
    text = explained(rules_path, db, "c1").stdout
    assert ("quiet hours 01:00-01:30 America/New_York: local time 2026-11-01 01:15; "
            "held until 2026-11-01T01:30:00-05:00") in text
    assert "passed every gate at 2026-11-01T01:30:00-05:00" in text
    assert "note:" not in text


@pytest.mark.parametrize("word,expected", [
    ("c-1O42", "c-1042"), ("c-142", "c-1042"), ("c-10422", "c-1042"), ("c-0142", "c-1042"), ("c-9999", None),
    ("c-1042", None),  # the id itself is not a typo of itself
])
def test_many_customers_get_a_one_typo_suggestion(word, expected):
    from rulecrm.explain.state import one_typo_away

    assert one_typo_away(word, ["zhang", "c-1042", "c-2042x", "c-7"]) == expected


def test_a_large_state_suggests_ids_one_typo_away(tmp_path, monkeypatch):
    from rulecrm.explain import ExplainError, StateReader
    from rulecrm.explain import state as state_module

    _rules, db, _ = replayed(tmp_path, "rules: []\n", [order("2026-04-01T10:00:00+08:00", "o-1", customer="c-1042"),
                                                     order("2026-04-01T10:00:00+08:00", "o-2", customer="c-1")])
    monkeypatch.setattr(state_module, "FULL_SUGGEST_LIMIT", 1)
    with StateReader(db) as reader, pytest.raises(ExplainError, match="did you mean 'c-1042'"):
        reader.customer("c-1024")
