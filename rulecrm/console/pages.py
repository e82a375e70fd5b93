"""The read-only pages: overview, customers (search, timeline, why / why not), rules, outbox, dead letters.

Handlers are plain functions: Starlette runs them on its thread pool, so a slow read of the state
never holds up the event loop.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone

from starlette.requests import Request

from rulecrm.console import params, reading, rules_view
from rulecrm.console.charts import chart_json
from rulecrm.console.reading import StateFiles
from rulecrm.console.why import unknown_customer_hint, why


def _state(request: Request) -> StateFiles:
    """The state, opened afresh for each request: a runner may have created shards meanwhile."""
    return StateFiles.open(request.app.state.console.state_path)


def overview(request: Request):
    console = request.app.state.console
    period = params.period(request.query_params)
    data = reading.overview(_state(request), period)
    checked = rules_view.check(console.rules_path, console.manager)
    reload = reading.last_reload(_state(request))
    charts = {
        "events": chart_json(data.events_per_day),
        "status": chart_json(data.actions_per_day_status),
        "rule": chart_json(data.actions_per_day_rule),
    }
    return request.app.state.pages.render(request, "overview.html", data=data, period=period, charts=charts,
                                          checked=checked, reload=reload)


def customers(request: Request):
    text = params.text(request.query_params, "q")
    found = reading.search_customers(_state(request), text) if text else None
    return request.app.state.pages.render(request, "customers.html", q=text or "", found=found)


def customer(request: Request):
    console = request.app.state.console
    customer_id = request.path_params["customer_id"]
    rule_id = params.text(request.query_params, "rule")
    state = _state(request)
    timeline = reading.customer_timeline(state, customer_id)
    if timeline is None:
        from rulecrm.console.i18n import Translator, pick_language

        language = pick_language(request.query_params.get("lang"), request.cookies.get("lang"),
                                 request.headers.get("accept-language"))
        message = Translator(language)("unknown_customer", customer=customer_id)
        if os.path.exists(state.file_of(customer_id).path):  # explain's did-you-mean reads the customer's file
            message += " " + (unknown_customer_hint(console.state_path, customer_id) or "")
        return request.app.state.pages.error(request, 404, "not_found", message.strip())
    checked = rules_view.check(console.rules_path, console.manager)
    explained = None
    if checked.ruleset is not None and "explain" in request.query_params:
        explained = why(console.state_path, checked.ruleset, customer_id, rule_id, console.manager)
    rule_ids = [rule.id for rule in checked.ruleset.rules] if checked.ruleset is not None else []
    return request.app.state.pages.render(request, "customer.html", timeline=timeline, entries=_entries(timeline),
                                          rule_ids=rule_ids,
                                          rule_id=rule_id, explained=explained, rules_ok=checked.ruleset is not None)


def rules(request: Request):
    console = request.app.state.console
    period = params.period(request.query_params)
    checked = rules_view.check(console.rules_path, console.manager)
    counts = reading.rule_counts(_state(request), period)
    rule_ids = [rule.id for rule in checked.ruleset.rules] if checked.ruleset is not None else []
    rule_ids += sorted(rule for rule in counts if rule not in rule_ids)
    return request.app.state.pages.render(request, "rules.html", checked=checked, counts=counts, rule_ids=rule_ids,
                                          period=period)


def outbox(request: Request):
    wanted = params.outbox_filter(request.query_params)
    page = params.page(request.query_params)
    result = reading.outbox_page(_state(request), wanted, page)
    return request.app.state.pages.render(request, "outbox.html", wanted=wanted, result=result,
                                          statuses=reading.MESSAGE_STATUSES, notice=None)


def dead_letters(request: Request):
    page = params.page(request.query_params)
    letters, total = reading.dead_letters(_state(request), page)
    pages = max(1, -(-total // reading.PAGE_SIZE))
    return request.app.state.pages.render(request, "dead_letters.html", letters=letters, total=total, page=page,
                                          pages=pages)



def _entries(timeline: reading.Timeline) -> list[dict]:
    """Events and actions in one list, in time order (an action after the event at the same instant)."""
    items = [(_instant(e["at"]), 0, n, {"event": e}) for n, e in enumerate(timeline.events)]
    items += [(_instant(a.get("due_at")), 1, n, {"action": a}) for n, a in enumerate(timeline.actions)]
    return [entry for *_order, entry in sorted(items, key=lambda item: item[:3])]


def _instant(text) -> float:
    """An ISO time as epoch seconds for ordering (a naive one taken as UTC; an unreadable one last)."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return float("inf")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
