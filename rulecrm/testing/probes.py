"""Hand-made streams tried before the generated ones: the cases a rule about open items most often gets wrong.

For every escalation of a review or a complaint (items with a built-in meaning, see
`rulecrm.schema.ITEM_LIFECYCLES`): the item closed a minute after it opened (an escalation now is
one of a closed item), and another item of the same customer opened and closed while the first
stays open (an `unless` that does not say which item cancels the wrong one). A random search meets
the second case rarely, so `rulecrm test` starts with these.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from rulecrm.schema import ITEM_LIFECYCLES

START = datetime(2025, 1, 6, 10, 0)  # a Monday morning, shop-local: outside any quiet hours


def item_probes(ruleset) -> list[list[dict]]:
    """Streams of events (dicts, shop-local times) for the rules' escalations of reviews and complaints."""
    probes = []
    for opening in sorted({rule.on for rule in ruleset.active_rules if rule.escalate and rule.on in ITEM_LIFECYCLES}):
        field, closing = ITEM_LIFECYCLES[opening]
        opened = _opened_data(opening, field)
        probes.append(_stream([(0, opening, opened("a")), (1, closing, {field: "a"})]))
        probes.append(_stream([(0, opening, opened("a")), (1, opening, opened("b")), (2, closing, {field: "b"})]))
    return probes


def _opened_data(opening: str, field: str):
    def data(item: str) -> dict:
        base = {field: item, "order_id": f"o-{item}"}
        return {**base, "rating": 1, "text": "bad"} if opening == "review.created" else {**base, "text": "broken"}
    return data


def _stream(items) -> list[dict]:
    return [{"id": f"p{n}", "type": type_, "customer_id": "c-1",
             "at": (START + timedelta(minutes=minute)).isoformat(), "data": data}
            for n, (minute, type_, data) in enumerate(items, 1)]
