""""Why / why not" for one customer and one rule: `rulecrm explain`, read-only, shown on a page."""
from __future__ import annotations

from rulecrm.explain import StateReader, explain, render_text
from rulecrm.plugins import address_fields, functions
from rulecrm.state.partitioned import customer_state_file
from rulecrm.state.store import storage_errors


def why(state_path: str, ruleset, customer_id: str, rule_id: str | None, manager) -> dict:
    """What `rulecrm explain --customer ID [--rule RULE]` reports: {"report": dict, "text": str}.

    Raises ExplainError (an unknown customer or rule, with a did-you-mean) like the command.
    """
    state_file, _shard = customer_state_file(state_path, customer_id)
    with storage_errors(state_file), StateReader(state_file) as reader:
        customer_state = reader.customer(customer_id)
    report = explain(ruleset, customer_state, rule_id=rule_id, functions=functions(manager),
                     address_fields=address_fields(manager))
    return {"report": report, "text": render_text(report)}


def unknown_customer_hint(state_path: str, customer_id: str) -> str | None:
    """`explain`'s message for a customer the state does not hold, with its did-you-mean (None if it
    turns out to hold them after all)."""
    from rulecrm.explain import ExplainError

    state_file, _shard = customer_state_file(state_path, customer_id)
    try:
        with storage_errors(state_file), StateReader(state_file) as reader:
            reader.customer(customer_id)
    except ExplainError as exc:
        return str(exc)
    return None
