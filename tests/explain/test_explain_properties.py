"""explain agrees with the engine on generated histories: it reports the engine's own decisions, so it
never claims that the rules or the history changed when neither did, and every gated action's last
gate is the status the outbox holds."""
from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from shop_streams import BASE, RULES, event_streams

from rulecrm.app.replay import replay
from rulecrm.explain import StateReader, explain
from rulecrm.plugins import address_fields, build_plugin_manager, functions, load_rules_with

MANAGER = build_plugin_manager()


def final_gate(action) -> str | None:
    gates = action["gates"]
    if not gates:
        return None
    last = gates[-1]
    return "deferred" if last.get("pending") else {"held": "deferred"}.get(last["outcome"], last["outcome"])


@settings(max_examples=40)
@given(event_streams())
def test_explain_never_contradicts_the_engine_that_decided(events):
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        (rules / "shop.yaml").write_text(RULES, encoding="utf-8")
        path = Path(tmp) / "events.jsonl"
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
        state = Path(tmp) / "state.db"
        # Up to a time after the last event, so releases and escalations are decided too.
        replay(rules, path, state=str(state), until=BASE + timedelta(days=12), backend_name="python")
        ruleset = load_rules_with(MANAGER, rules)
        with StateReader(state) as reader:
            for customer in sorted({e["customer_id"] for e in events}):
                report = explain(ruleset, reader.customer(customer), functions=functions(MANAGER),
                                 address_fields=address_fields(MANAGER))
                for rule in report["rules"]:
                    for action in rule["actions"]:
                        notes = [g["detail"] for g in action["gates"] if g["gate"] == "note"]
                        assert notes == [], (customer, action["key"])
                        if action["kind"] in ("notify", "escalate") and action["to"] == "customer" \
                                and action["reason"] != "no-address":
                            status = {"queued": "sent"}.get(action["status"], action["status"])
                            assert final_gate(action) == status, (customer, action["key"], action["gates"])
