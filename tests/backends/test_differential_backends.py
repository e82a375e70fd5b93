"""Generated rule files × generated event streams: the python and durable backends give identical actions."""
from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulecrm.testing.harness import Shop
from rulecrm.testing.rulegen import SKUS, TEXTS, rule_files

START = datetime(2026, 2, 27, 8, tzinfo=timezone.utc)  # near 29 February birthdays and a month end
CUSTOMERS = ("c1", "c2", "c3")
GAPS = (0, 0, 30, 60, 120, 360, 1440, 2880, 10080)  # minutes; repeated zeros give ties

_ids = st.sampled_from(["x1", "x2"])
EVENTS = st.one_of(
    st.tuples(st.sampled_from(["order.placed", "order.delivered", "order.refunded"]), st.fixed_dictionaries(
        {"order_id": _ids, "sku": st.sampled_from(SKUS), "amount": st.sampled_from([5, 50.5, 300]),
         "category": st.sampled_from(["tea", "ware"])},
        optional={"quantity": st.integers(1, 3), "platform": st.sampled_from(["tmall", "jd"])})),
    st.tuples(st.just("review.created"), st.fixed_dictionaries(
        {"review_id": _ids, "rating": st.integers(1, 5), "text": st.sampled_from(TEXTS)}, optional={"order_id": _ids})),
    st.tuples(st.just("review.handled"), st.fixed_dictionaries({"review_id": _ids}, optional={"order_id": _ids})),
    st.tuples(st.sampled_from(["complaint.opened", "complaint.resolved"]),
              st.fixed_dictionaries({"complaint_id": _ids}, optional={"text": st.sampled_from(TEXTS)})),
    st.tuples(st.just("chat.received"), st.fixed_dictionaries({"text": st.sampled_from(TEXTS)})),
    st.tuples(st.just("customer.upserted"), st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(["Li", "Ann"]), "owner": st.sampled_from(["cs", "rep-a"]),
        "birthday": st.sampled_from(["2000-02-29", "03-01", "--02-28"]), "source": st.sampled_from(["stop", "shop"]),
        "timezone": st.sampled_from(["Asia/Shanghai", "America/New_York", "UTC"])})),
    st.tuples(st.sampled_from(["customer.opted_out", "customer.opted_in", "contact.added"]), st.just({})),
    st.tuples(st.just("message.sent"), st.fixed_dictionaries({"kind": st.sampled_from(["marketing", "service"])})),
)


@st.composite
def event_streams(draw, max_size: int = 25):
    """Time-ordered events for a few customers, with ties and the fields the generated rules read."""
    at, events = START, []
    for n in range(draw(st.integers(1, max_size))):
        at += timedelta(minutes=draw(st.sampled_from(GAPS)))
        event_type, data = draw(EVENTS)
        events.append({"id": f"e{n}", "type": event_type, "customer_id": draw(st.sampled_from(CUSTOMERS)),
                       "at": at.isoformat(), "data": data})
    return events


def run(rules: Path, backend: str, events: list[dict]) -> list[dict]:
    with Shop(rules, backend=backend) as shop:
        shop.add(*events)
        shop.advance(datetime.fromisoformat(events[-1]["at"]) + timedelta(days=60))
        shop.finish()
        return list(shop.actions)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rule_files(min_rules=2, max_rules=8), event_streams())
def test_backends_agree_on_generated_rules_and_streams(text, events):
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(text, encoding="utf-8")
        assert run(rules, "durable", events) == run(rules, "python", events)
