"""A small shop and a strategy of its event streams, shared by the engine's and explain's property tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

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
            data = {"owner": draw(st.sampled_from(["rep-a", "cs"])),
                    "birthday": draw(st.sampled_from(["03-02", "02-29"])),
                    "timezone": draw(st.sampled_from(["Asia/Shanghai", "Europe/Berlin"]))}
        events.append({"id": f"e{n}", "type": type_, "customer_id": customer, "at": at.isoformat(), "data": data})
    return events
