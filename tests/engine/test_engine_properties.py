"""Property tests on generated event streams: the two backends agree, and caps are never exceeded."""
from __future__ import annotations

import io
import json
import tempfile
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.app.replay import replay

SHOP_ZONE = ZoneInfo("Asia/Shanghai")

RULES = """
shop: {timezone: Asia/Shanghai, quiet_hours: "22:00-08:00"}
products:
  - {sku: tea, name: Tea, category: tea, cycle: 3d, learn_cycle: true, learn_min_orders: 3}
  - {sku: pot, name: Pot, category: ware}
contacts:
  cs: {channel: console, address: cs-group}
caps:
  - {id: daily, kinds: [marketing], max: 1, per: 1d}
  - {id: weekly, kinds: [marketing], max: 3, per: 1w, window: calendar, on_cap: defer}
lifecycle: {growing_orders: 2, mature_orders: 4, dormant_after: 5d, churned_after: 9d}
rules:
  - id: repeat
    when: customer.order_count >= 2
    tag: repeat
  - id: big
    when: customer.total_spent >= 300 and not customer.opted_out
    tag: big
    untag: true
  - id: vip-hello
    when: "'big' in customer.tags"
    notify: {to: customer, template: "vip {customer.total_spent}"}
  - id: intent
    on: chat.received
    when: event.text matches "soon|近期" or event.text contains "buy"
    tag: intent
    notify: {to: owner, template: "{customer.id} wants to buy"}
  - id: promo
    on: chat.received
    when: not (event.text in ["stop", "no"])
    notify: {to: customer, template: "promo {event.text}"}
  - id: refill
    on: order.placed
    when: event.category == "tea" and event.amount > 10
    after: cycle - 1d
    unless: order.placed same sku
    recheck: customer.opted_out != true
    notify: {to: customer, template: "refill {product.name}"}
  - id: bad-review
    on: review.created
    when: event.rating <= 2
    notify: {to: cs, template: "bad {event.rating}"}
    escalate:
      unless: review.handled same review_id
      steps:
        - {after: 2h, notify: {to: cs}}
        - {after: 1d, notify: {to: owner}}
  - id: birthday
    on: birthday
    at: "09:00"
    notify: {to: customer, template: "happy birthday"}
  - id: win-back
    on: stage.changed
    when: event.to == "dormant"
    notify: {to: customer, template: "we miss you"}
"""

BASE = datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)
CUSTOMERS = ["c1", "c2", "c3"]


@st.composite
def event_streams(draw):
    """Time-ordered streams with many ties, for a few customers and every event type the rules use."""
    count = draw(st.integers(min_value=1, max_value=40))
    minutes = sorted(draw(st.lists(st.sampled_from([0, 30, 60, 120, 600, 1440, 2880, 4320, 8640, 14400]),
                                   min_size=count, max_size=count)))
    events = []
    offset = 0
    for n, step in enumerate(minutes):
        offset = step if draw(st.booleans()) else offset  # reuse the previous instant now and then: ties
        at = BASE + timedelta(minutes=offset + n * draw(st.sampled_from([0, 7, 61])))
        customer = draw(st.sampled_from(CUSTOMERS))
        kind = draw(st.sampled_from(["order", "order", "chat", "chat", "review", "handled", "optout", "optin",
                                     "sent", "upsert"]))
        data, type_ = {}, None
        if kind == "order":
            type_ = "order.placed"
            sku = draw(st.sampled_from(["tea", "pot"]))
            data = {"order_id": f"o{n}", "sku": sku, "category": "tea" if sku == "tea" else "ware",
                    "amount": draw(st.sampled_from([5, 50, 150.5, 400]))}
        elif kind == "chat":
            type_ = "chat.received"
            data = {"text": draw(st.sampled_from(["hi", "stop", "buy soon", "近期要买", "no"]))}
        elif kind == "review":
            type_ = "review.created"
            data = {"review_id": f"r{draw(st.integers(0, 2))}", "rating": draw(st.integers(1, 5)), "text": "x"}
        elif kind == "handled":
            type_ = "review.handled"
            data = {"review_id": f"r{draw(st.integers(0, 2))}"}
        elif kind == "optout":
            type_ = "customer.opted_out"
        elif kind == "optin":
            type_ = "customer.opted_in"
        elif kind == "sent":
            type_ = "message.sent"
            data = {"kind": "marketing", "channel": "console"}
        else:
            type_ = "customer.upserted"
            data = {"owner": draw(st.sampled_from(["rep-a", "cs"])), "birthday": draw(st.sampled_from(["03-02", "02-29"])),
                    "timezone": draw(st.sampled_from(["Asia/Shanghai", "Europe/Berlin"]))}
        events.append({"id": f"e{n}", "type": type_, "customer_id": customer, "at": at.isoformat(), "data": data})
    return events


def replay_stream(events, backend, until=None):
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        (rules / "shop.yaml").write_text(RULES, encoding="utf-8")
        path = Path(tmp) / "events.jsonl"
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
        out = io.StringIO()
        replay(rules, path, out=out, backend_name=backend, until=until)
        return [json.loads(line) for line in out.getvalue().splitlines()]


@settings(max_examples=40)
@given(event_streams())
def test_backends_give_identical_actions(events):
    assert replay_stream(events, "durable") == replay_stream(events, "python")


def _marketing_sent(action) -> bool:
    return action["status"] == "sent" and action["to"] == "customer" and action["message_kind"] == "marketing"


@settings(max_examples=60)
@given(event_streams())
def test_caps_are_never_exceeded(events):
    until = (BASE + timedelta(days=30)).isoformat()
    actions = replay_stream(events, "python", until=datetime.fromisoformat(until))
    for customer in CUSTOMERS:
        ours = sorted(datetime.fromisoformat(a["sent_at"]) for a in actions
                      if a["customer_id"] == customer and _marketing_sent(a))
        # Sends made outside rulecrm count from their instant; one at the very instant of ours but
        # later in the file could not have been known when ours went out.
        theirs = [datetime.fromisoformat(e["at"]) for e in events
                  if e["customer_id"] == customer and e["type"] == "message.sent"]
        for n, sent in enumerate(ours):
            in_day = [t for t in ours[: n + 1] if sent - timedelta(days=1) < t] + [
                t for t in theirs if sent - timedelta(days=1) < t < sent]
            assert len(in_day) <= 1, (customer, sent, in_day)
        rulecrm_sends = ours
        zones = {e["data"].get("timezone") for e in events if e["customer_id"] == customer and e["data"].get("timezone")}
        if not zones:  # the calendar week is the shop's: count rulecrm's own sends per ISO week
            weeks = defaultdict(int)
            for sent in rulecrm_sends:
                weeks[sent.astimezone(SHOP_ZONE).isocalendar()[:2]] += 1
            assert all(n <= 3 for n in weeks.values())


IMMEDIATE_RULES = {"promo", "vip-hello"}  # decided while their trigger event is applied


def applied_when_sent(events, action):
    """The customer's events already applied when `action` went out.

    Events at the send's very instant count if they came first: up to and including the trigger
    for a send decided while its trigger was applied, all of them for a send released by a timer
    (events at an instant come before timers at it). In event-time order, ties in file order.
    """
    sent = datetime.fromisoformat(action["sent_at"])
    during_trigger = action["rule"] in IMMEDIATE_RULES and action["sent_at"] == action["due_at"]
    ids = [event["id"] for event in events]
    limit = ids.index(action["trigger"]) if during_trigger and action["trigger"] in ids else len(events)
    applied = [(datetime.fromisoformat(event["at"]), n, event) for n, event in enumerate(events)
               if event["customer_id"] == action["customer_id"]]
    return [event for at, n, event in sorted(applied, key=lambda item: item[:2])
            if at < sent or (at == sent and n <= limit)]


@settings(max_examples=40)
@given(event_streams())
def test_nothing_marketing_reaches_an_opted_out_customer(events):
    for action in filter(_marketing_sent, replay_stream(events, "python")):
        flags = [event["type"] == "customer.opted_out" for event in applied_when_sent(events, action)
                 if event["type"] in ("customer.opted_out", "customer.opted_in")]
        assert not (flags and flags[-1]), action


@settings(max_examples=40)
@given(event_streams())
def test_quiet_hours_are_respected(events):
    for action in filter(_marketing_sent, replay_stream(events, "python")):
        zones = [event["data"]["timezone"] for event in applied_when_sent(events, action)
                 if event["type"] == "customer.upserted"]
        local = datetime.fromisoformat(action["sent_at"]).astimezone(ZoneInfo(zones[-1] if zones else "Asia/Shanghai"))
        assert 8 <= local.hour < 22, action
