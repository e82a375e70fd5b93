"""Re-ingesting rejected input after a fix, and dropping dead letters on purpose."""
from __future__ import annotations

import json

import attrs

from .errors import EventError, UsageError
from .events import parse_event_line, synthetic_id
from . import plugins
from .replay import build_engine
from .store import Store


@attrs.define
class RetryResult:
    applied: int = 0
    still_rejected: int = 0
    remaining: list = attrs.field(factory=list)


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


def retry_dead_letters(state_path, *, rules_path=None, corrections=None) -> RetryResult:
    """Parse every dead letter again (with its corrected line when `corrections` has one);
    apply the valid ones through the engine and remove them."""
    corrections = corrections or {}
    store = Store.open(state_path)
    result = RetryResult()
    try:
        store.lock()
        rules_path = rules_path or store.get_meta("rules_path")
        if not rules_path:
            raise UsageError("no rules known for this state: pass --rules")
        manager = plugins.build_plugin_manager()
        ruleset = plugins.load_rules_with(manager, rules_path)
        engine = build_engine(
            ruleset, store, functions=plugins.functions(manager), address_fields=plugins.address_fields(manager)
        )
        with store.transaction():
            done = []
            for item in list(store.iter_dead_letters()):
                raw = corrections.get(item["id"], item["raw"])
                try:
                    event = parse_event_line(raw, default_tz=ruleset.shop.timezone)
                except EventError as exc:
                    result.still_rejected += 1
                    result.remaining.append({**item, "error": str(exc)})
                    continue
                if event.id is None:
                    event = event.__class__(
                        type=event.type, customer_id=event.customer_id, at=event.at, data=event.data,
                        id=synthetic_id(event, 0),
                    )
                engine.ingest(event)
                result.applied += 1
                done.append(item["id"])
            store.remove_dead_letters(done)
            engine.flush()
        engine.backend.close()
    finally:
        store.close()
    return result


def remove_dead_letters(state_path, ids) -> None:
    store = Store.open(state_path)
    try:
        with store.transaction():
            store.remove_dead_letters(ids)
    finally:
        store.close()
