"""Builds the explanation of one customer: profile facts, each rule's condition, actions, gates, timers, verdict."""
from __future__ import annotations

from rulecrm.explain.gatepath import gate_steps
from rulecrm.explain.pending import pending_timers
from rulecrm.explain.simulate import rerun as rerun_customer
from rulecrm.explain.state import ExplainError
from rulecrm.explain.trace import evaluate, explain_outcome, expression_text
from rulecrm.explain.values import jsonable, local_iso
from rulecrm.explain.verdict import cancelled_by, verdict
from rulecrm.expr.ast import Name
from rulecrm.expr.context import EvalContext, resolve
from rulecrm.expr.parser import children
from rulecrm.suggest import did_you_mean

PROFILE_FACTS = ("name", "order_count", "total_spent", "refund_count", "stage", "tags", "opted_out", "timezone",
                 "owner", "channel", "last_order_at", "first_seen_at")
ACTION_FIELDS = ("key", "kind", "to", "channel", "address", "status", "reason", "due_at", "sent_at", "message",
                 "message_kind", "trigger", "step", "late_by", "defers")


def explain(ruleset, state, *, rule_id=None, functions=None, address_fields=None) -> dict:
    """The whole explanation as JSON-ready data; `render` turns it into text."""
    tz = ruleset.shop.timezone
    rules = select_rules(ruleset, rule_id)
    timers = pending_timers(ruleset, state)
    # The engine's own decisions, from re-running the customer's stored events: explain reads
    # them rather than deriving conditions and gates a second time.
    rerun = rerun_customer(ruleset, state, functions=functions, address_fields=address_fields)
    sightings = rerun.sightings
    context = EvalContext(customer=state.profile.mapping(), functions=dict(functions or {}))
    shown_rules = [
        _rule(rule, ruleset, state, context, sightings.get(rule.id), timers, rerun, address_fields) for rule in rules
    ]
    if rule_id is not None:
        timers = [t for t in timers if t["rule"] == rule_id]
    return {
        "customer": state.customer_id,
        "now": local_iso(state.now, tz),
        "shop_timezone": ruleset.shop.timezone_name,
        "profile": _profile(ruleset, state, rules, context),
        "rules": shown_rules,
        "timers": timers,
    }


def select_rules(ruleset, rule_id):
    """Every rule, or the one named; an unknown id gets a did-you-mean."""
    if rule_id is None:
        return ruleset.rules
    for rule in ruleset.rules:
        if rule.id == rule_id:
            return (rule,)
    ids = [rule.id for rule in ruleset.rules]
    hint = did_you_mean(rule_id, ids) or f"rule ids: {', '.join(ids)}"
    raise ExplainError(f"no rule {rule_id!r} in the rules; {hint}")


def _profile(ruleset, state, rules, context) -> dict:
    tz = ruleset.shop.timezone
    mapping = state.profile.mapping()
    facts = {name: jsonable(mapping.get(name), tz) for name in PROFILE_FACTS}
    zone_name = state.profile.fields.get("timezone")
    facts["local_timezone"] = f"{zone_name} (customer)" if zone_name else f"{ruleset.shop.timezone_name} (shop)"
    if state.profile.opted_out:
        since = [e for e in state.events if e.type == "customer.opted_out"]
        facts["opted_out_at"] = local_iso(since[-1].at, tz) if since else None
    read = {}
    for rule in rules:
        for name in _customer_names(rule):
            read[expression_text(name)] = jsonable(resolve(context, "customer", name.path), tz)
    facts["read_by_rules"] = dict(sorted(read.items()))
    facts["stage_history"] = [
        {"at": record["due_at"], "change": record.get("message")}
        for record in state.actions if record["kind"] == "stage"
    ]
    return facts


def _customer_names(rule):
    roots = [rule.when, rule.after, rule.recheck, rule.untag if rule.untag not in (True, False) else None]
    stack = [node for node in roots if node is not None]
    while stack:
        node = stack.pop()
        if isinstance(node, Name) and node.root == "customer":
            yield node
        stack.extend(children(node))


def _rule(rule, ruleset, state, context, sighting, timers, rerun, address_fields) -> dict:
    tz = ruleset.shop.timezone
    records = [r for r in state.actions if r["rule"] == rule.id]
    actions = []
    for record in records:
        item = {field: record.get(field) for field in ACTION_FIELDS}
        item["gates"] = gate_steps(ruleset, state, record, rerun=rerun, address_fields=address_fields)
        actions.append(item)
    condition = _condition(rule, context, sighting, tz)
    own_timers = [t for t in timers if t["rule"] == rule.id]
    cancel = cancelled_by(rule, state, sighting, tz) if sighting is not None and not own_timers else None
    return {
        "id": rule.id,
        "source": str(rule.source),
        "description": rule.description,
        "enabled": rule.enabled,
        "trigger": trigger_text(rule),
        "does": does_text(rule),
        "condition": condition,
        "cancelled_by": cancel,
        "actions": actions,
        "timers": own_timers,
        "verdict": verdict(rule, actions, own_timers, condition, cancel),
    }


def _condition(rule, context, sighting, tz) -> dict | None:
    """The `when`: now against the profile for profile rules, else on the last trigger event."""
    text = expression_text(rule.when) if rule.when is not None else None
    if rule.on is None:
        against = {"what": "profile now"}
        evaluation = evaluate(rule.when, context) if rule.when is not None else None
    elif sighting is None:
        return {"expr": text, "against": None, "result": None,
                "why": _no_trigger(rule)}
    else:
        event = sighting.event
        against = {"what": "event", "type": event.type, "id": event.id, "at": local_iso(event.at, tz)}
        evaluation = sighting.evaluation
    result = {"expr": text, "against": against}
    if evaluation is None:
        result.update(result=True, why="no condition: always true")
    else:
        result.update(result=evaluation.result, why=explain_outcome(evaluation, tz),
                      trace=evaluation.trace.to_dict(tz))
    if sighting is not None and rule.after is not None:
        result["delay"] = jsonable(sighting.delay, tz)
    return result


def _no_trigger(rule) -> str:
    if rule.on == "birthday":
        return "evaluated on the birthday itself; see the birthday timer"
    return f"no {rule.on} event for this customer"


def trigger_text(rule) -> str:
    """`on order.placed, after cycle - 3d, unless order.placed same sku`."""
    if rule.on is None:
        text = "profile rule: evaluated whenever the profile changes"
    elif rule.on == "birthday":
        text = f"on birthday at {(rule.at.strftime('%H:%M') if rule.at else '09:00')} local time"
    else:
        text = f"on {rule.on}"
    if rule.after is not None:
        text += f", after {expression_text(rule.after)}"
    unless = rule.escalate.unless if rule.escalate is not None and rule.escalate.unless else rule.unless
    if unless is not None:
        text += f", unless {unless.event_type}" + (f" same {unless.same}" if unless.same else "")
    if rule.recheck is not None:
        text += f", recheck {expression_text(rule.recheck)}"
    return text


def does_text(rule) -> str:
    """`tag repeat-buyer; notify customer (marketing); escalate 2h, 24h`."""
    parts = []
    if rule.tag:
        parts.append(f"tag {rule.tag}" + (" (untag when false)" if rule.untag is True else ""))
    if rule.notify is not None:
        channel = f" via {rule.notify.channel}" if rule.notify.channel else ""
        parts.append(f"notify {rule.notify.to}{channel} ({rule.notify.resolved_kind()})")
    if rule.escalate is not None:
        parts.append("escalate " + ", ".join(expression_text(step.after) for step in rule.escalate.steps))
    return "; ".join(parts) or "nothing"

