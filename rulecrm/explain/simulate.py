"""Re-runs one customer's stored events through a scratch engine to see each rule's condition as it was."""
from __future__ import annotations

from datetime import timezone
from typing import Any

import attrs

from ..engine.actions import Action
from ..events import Event
from ..expr.compiler import compile_expression
from ..expr.context import MISSING
from ..replay import build_engine
from ..rulefile.model import Rule
from ..scratchstore import ScratchStore
from .trace import Evaluation, evaluate

SYNTHETIC_TRIGGERS = ("birthday",)  # no stored event: the engine makes it from a timer


@attrs.frozen
class Sighting:
    """A rule's `when` on the customer's last event of the rule's trigger type, against the profile then."""

    rule: Rule
    event: Event
    index: int | None  # position in the customer's stored events (None: a stage.changed)
    evaluation: Evaluation | None  # None: the rule has no condition
    delay: Any = None  # delayed rules: what `after` gave (a timedelta, or MISSING)

    @property
    def matched(self) -> bool:
        return self.evaluation is None or self.evaluation.result


def last_sightings(ruleset, state, *, functions=None, address_fields=None) -> dict[str, Sighting]:
    """For each event rule, its condition on the last trigger event, evaluated as the engine did.

    The customer's events are applied again, in their stored order, to an engine over a throwaway
    store, so `customer.*` reads the profile as it was right after that event (other customers
    never influence a customer's rules).
    """
    by_type: dict[str, list[Rule]] = {}
    for rule in ruleset.active_rules:
        if rule.on is not None and rule.on not in SYNTHETIC_TRIGGERS:
            by_type.setdefault(rule.on, []).append(rule)
    if not by_type:
        return {}
    last = {event.type: index for index, event in enumerate(state.events)}
    found: dict[str, Sighting] = {}
    store = ScratchStore.open_scratch()
    engine = None

    def look(event: Event, index: int | None) -> None:
        profile = engine.profile(event.customer_id)
        # The engine's own context builder, so values (the learned `cycle` too) are exactly its.
        ctx = engine.context_for(profile, event)
        for rule in by_type.get(event.type, ()):
            evaluation = evaluate(rule.when, ctx, functions) if rule.when is not None else None
            delay = compile_expression(rule.after)(ctx) if rule.after is not None else None
            found[rule.id] = Sighting(rule, event, index, evaluation, MISSING if delay is MISSING else delay)

    def on_action(action: Action) -> None:
        if action.kind == "stage" and "stage.changed" in by_type and action.status == "sent":
            old = (action.message or "").split(" -> ")[0]
            at = action.due_at.astimezone(timezone.utc)
            look(Event("stage.changed", action.customer_id, at, {"from": old, "to": action.to},
                       id=f"stage.changed|{action.customer_id}|{at.isoformat()}|{action.to}"), None)

    try:
        engine = build_engine(
            ruleset, store, backend_name="python", on_action=on_action,
            functions=functions, address_fields=address_fields,
        )
        for index, event in enumerate(state.events):
            engine.ingest(event)
            if last.get(event.type) == index:
                look(event, index)
        if state.now is not None:
            engine.advance(state.now)
        engine.backend.close()
    finally:
        store.close()
    return found
