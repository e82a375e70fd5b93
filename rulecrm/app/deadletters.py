"""Re-ingesting rejected input after a fix, and dropping dead letters on purpose."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import attrs

from rulecrm.app.applying import TIMER_SOURCE, GuardedApplier
from rulecrm.errors import EventError, UsageError
from rulecrm.engine.core import APPLIED, CONFLICT, DUPLICATE
from rulecrm.events import content_digest, id_conflict, parse_event_line, synthetic_id
from rulecrm import plugins
from rulecrm.app.replay import build_engine
from rulecrm.state.store import DELIVERS, Store


@attrs.define
class RetryResult:
    applied: int = 0
    duplicates: int = 0
    still_rejected: int = 0
    remaining: list = attrs.field(factory=list)
    actions: Counter = attrs.field(factory=Counter)  # final status of each action the retry decided
    delivered: bool = False  # the actions went through their channels

    @property
    def exit_code(self) -> int:
        """The command line's exit status (docs/cli.md): 4 failed or dead actions, else 3 still rejected, else 0."""
        return 4 if self.actions.get("failed") or self.actions.get("dead") else 3 if self.still_rejected else 0


def read_corrections(stream) -> dict[int, str]:
    """Corrected dead letters: JSON lines with the dead letter's `id` and its fixed `raw` line."""
    corrections = {}
    for line_no, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            corrections[int(record["id"])] = str(record["raw"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"corrections line {line_no}: expected a JSON object with 'id' and 'raw' ({exc})") from None
    return corrections


def retried_event_id(event, item: dict) -> str:
    """The id of a re-ingested line that has none: from its content and the line it came from.

    Deterministic, so a retry interrupted and run again applies it once; distinct from the ids a
    replay gives id-less lines, so it cannot be mistaken for another line with the same content.
    """
    origin = f"{content_digest(event)}|dead-letter|{item['source']}|{item['line_no']}"
    return synthetic_id(event, 1, digest=hashlib.sha256(origin.encode("utf-8")).hexdigest())


def state_delivers(store) -> bool:
    """Whether actions decided on this state are delivered (a live state) or only recorded (history)."""
    if store.get_meta(DELIVERS, False):
        return True
    return any(next(store.iter_actions(status=status), None) is not None for status in ("queued", "failed", "dead"))


def retry_dead_letters(state_path, *, rules_path=None, corrections=None, manager=None, env=None,
                       on_report=None, on_warning=None) -> RetryResult:
    """Parse every dead letter again (with its corrected line when `corrections` has one); apply the
    valid ones through the engine exactly like live input and remove them.

    On a state whose actions are delivered, the actions these events decide are queued and
    delivered through their channels before returning; on a replayed history they are recorded only.
    """
    corrections = corrections or {}
    unknown = set(corrections) - {item["id"] for item in _all(state_path)}
    if unknown:
        raise UsageError(f"--from names dead letter(s) that do not exist: {', '.join(map(str, sorted(unknown)))}; "
                         "list them with `rulecrm dead-letters --state STATE`")
    manager = manager or plugins.build_plugin_manager()
    store = Store.open(state_path, lock=True)
    result = RetryResult()
    applier = dispatcher = None
    on_report = on_report or (lambda record: None)
    try:
        rules_path = rules_path or store.get_meta("rules_path")
        if not rules_path:
            raise UsageError("no rules known for this state: pass --rules")
        ruleset = plugins.load_rules_with(manager, rules_path)
        if state_delivers(store):
            from rulecrm.channels.dispatch import Dispatcher

            dispatcher = Dispatcher(ruleset, manager, store, env=env, on_report=on_report, on_warning=on_warning)
            result.delivered = True

        def make_engine(on_action):
            return build_engine(
                ruleset, store, functions=plugins.functions(manager), address_fields=plugins.address_fields(manager),
                on_action=on_action, dispatcher=dispatcher,
            )

        def set_aside(pair, error):
            item, _event = pair  # the stored line keeps its text (a correction can be given again)
            store.add_dead_letter(source=item["source"], line_no=item["line_no"], raw=item["raw"], error=error)

        def decided(actions):
            for action in actions:
                result.actions[action.status] += 1
                if action.status != "queued":  # queued ones are reported by the dispatcher once answered
                    on_report(action.public_dict())

        applier = GuardedApplier(store, make_engine, set_aside=set_aside, on_committed=decided)
        ready = []
        for item in _all(state_path, store):
            if item["source"] == TIMER_SOURCE:
                continue  # a timer set aside is not an input line: kept for people to look at
            raw = corrections.get(item["id"], item["raw"])
            try:
                event = parse_event_line(raw, default_tz=ruleset.shop.timezone)
            except EventError as exc:
                result.still_rejected += 1
                result.remaining.append({**item, "raw": raw, "error": str(exc)})
                continue
            if event.id is None:
                event = attrs.evolve(event, id=retried_event_id(event, item))
            ready.append((item, event))
        ready.sort(key=lambda pair: pair[1].at)  # event time, like any input (stable: file order at ties)

        def apply(engine, pair):
            item, event = pair
            outcome = engine.ingest_outcome(event)
            if outcome == CONFLICT:
                store.add_dead_letter(source=item["source"], line_no=item["line_no"], raw=item["raw"],
                                      error=id_conflict(event.id))
            else:
                store.resolve_dead_letter(item["id"], how="retried")
            return outcome

        step = applier.step(ready, apply)
        for (item, event), outcome in step.outcomes:
            if outcome == APPLIED:
                result.applied += 1
            elif outcome == DUPLICATE:
                result.duplicates += 1
            else:
                result.still_rejected += 1
                result.remaining.append({**item, "error": id_conflict(event.id)})
        for (item, _event), error in step.set_aside:
            result.still_rejected += 1
            result.remaining.append({**item, "error": error})
        applier.close()
        if dispatcher is not None:
            with_answers = Counter()

            def delivered(record):
                with_answers[record["status"]] += 1
                on_report(record)

            dispatcher.on_report = delivered
            dispatcher.dispatch_ready()
            dispatcher.drain()
            dispatcher.report_unfinished()
            result.actions -= Counter({"queued": result.actions["queued"]})
            result.actions.update(with_answers)
    finally:
        if applier is not None:
            applier.close()
        if dispatcher is not None:
            dispatcher.close()
        store.close()
    return result


def _all(state_path, store=None):
    if store is not None:
        return list(store.iter_dead_letters())
    with Store.open(state_path) as opened:
        return list(opened.iter_dead_letters())


def remove_dead_letters(state_path, ids) -> None:
    """Drop dead letters on purpose; every id must exist (nothing is removed otherwise)."""
    ids = list(dict.fromkeys(ids))
    store = Store.open(state_path, lock=True)
    try:
        with store.transaction():
            known = {item["id"] for item in store.iter_dead_letters()}
            unknown = [id_ for id_ in ids if id_ not in known]
            if unknown:
                raise UsageError(
                    f"no dead letter with id {', '.join(map(str, unknown))}; nothing removed "
                    "(list them with `rulecrm dead-letters --state STATE`)"
                )
            for id_ in ids:
                store.resolve_dead_letter(id_, how="removed")
    finally:
        store.close()
