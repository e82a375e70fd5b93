"""`rulecrm replay`: stream an event file through the engine in event time and report what it decided."""
from __future__ import annotations

import itertools
import json
import time as wallclock
from collections import Counter
from datetime import datetime

import attrs
import orjson

from .backends import default_backend_name, get_backend
from .engine.core import Engine
from .eventsource import Rejected, read_events
from . import plugins
from .scratchstore import ScratchStore
from .store import Store

BATCH = 20_000  # events per store transaction: bigger batches write each busy profile less often


@attrs.define
class ReplaySummary:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    after_until: int = 0
    actions: Counter = attrs.field(factory=Counter)
    backend: str = ""
    seconds: float = 0.0
    rejections: list = attrs.field(factory=list)  # (line_no, error), the first few for the report

    def lines(self) -> list[str]:
        rate = self.events / self.seconds if self.seconds else 0.0
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.actions.items())) or "none"
        text = [
            f"replayed {self.events} events in {self.seconds:.2f}s ({rate:,.0f}/s, backend {self.backend})",
            f"applied {self.applied}, duplicates {self.duplicates}, rejected {self.rejected}"
            + (f", after --until {self.after_until}" if self.after_until else ""),
            f"actions: {statuses}",
        ]
        if self.rejected:
            text.append("rejected lines are in the dead-letter store: rulecrm dead-letters --state DB")
        if self.undelivered:
            text.append(f"{self.undelivered} action(s) not delivered (failed or dead): see their `error` in --out")
        return text

    @property
    def undelivered(self) -> int:
        return self.actions.get("failed", 0) + self.actions.get("dead", 0)


class ActionWriter:
    """Writes each reported action as one JSON line (or nowhere) and counts statuses."""

    def __init__(self, stream=None):
        self.stream = stream
        self.counts: Counter = Counter()

    def __call__(self, action) -> None:
        """`action`: an engine Action, or a dispatched outbox record (already a public dict)."""
        record = action if isinstance(action, dict) else action.public_dict()
        self.counts[record["status"]] += 1
        if self.stream is not None:
            # orjson: actions are most of the output; the standard encoder was a tenth of replay time
            self.stream.write(orjson.dumps(record).decode() + "\n")


def build_engine(ruleset, store, *, backend_name=None, on_action=None, functions=None, address_fields=None,
                 dispatcher=None):
    backend_cls = get_backend(backend_name or default_backend_name())
    backend = backend_cls(ruleset.active_rules, functions=functions)
    engine = Engine(
        ruleset, backend=backend, store=store, functions=functions, on_action=on_action,
        address_fields=address_fields,
        waits_for_channel=dispatcher.waits_for_channel if dispatcher is not None else None,
    )
    engine.load()
    return engine


def replay(
    rules_path,
    events_path,
    *,
    until: datetime | None = None,
    state: str | None = None,
    out=None,
    backend_name: str | None = None,
    progress: bool = False,
    on_rejected=None,
    plugin_manager=None,
    dispatch: bool = False,
    dispatch_options: dict | None = None,
) -> ReplaySummary:
    """Apply the events in event-time order, then fire timers due at or before `until`.

    `out` is a text stream for the actions JSONL (or None). `on_rejected(line_no, error)` is
    called for each malformed line, which is also kept in the dead-letter store. With `dispatch`,
    actions go through their channels after each committed batch (`rulecrm.dispatch.Dispatcher`,
    built with `dispatch_options`) and retries are waited for before returning.
    """
    manager = plugin_manager or plugins.build_plugin_manager()
    ruleset = plugins.load_rules_with(manager, rules_path)
    started = wallclock.perf_counter()
    summary = ReplaySummary(backend=backend_name or default_backend_name())
    writer = ActionWriter(out)
    # Dispatch reads the outbox back, so it needs a store that keeps it (a temporary one at worst).
    store = Store.open(state) if state is not None or dispatch else ScratchStore.open_scratch()
    dispatcher = None
    try:
        if state not in (None, ":memory:"):
            store.lock()
        if dispatch:
            from .dispatch import Dispatcher

            dispatcher = Dispatcher(ruleset, manager, store, on_report=writer, **(dispatch_options or {}))
        engine = build_engine(
            ruleset, store, backend_name=summary.backend, on_action=writer,
            functions=plugins.functions(manager), address_fields=plugins.address_fields(manager),
            dispatcher=dispatcher,
        )
        with store.transaction():
            store.set_meta("rules_path", str(rules_path))
        after_batch = dispatcher.dispatch_ready if dispatcher is not None else None
        last_at = _run_events(engine, store, events_path, ruleset, until, summary, progress, on_rejected, after_batch)
        with store.transaction():
            horizon = until or last_at
            if horizon is not None:
                engine.advance(horizon)
            engine.report_pending()
            engine.flush()
        engine.backend.close()
        if dispatcher is not None:
            dispatcher.drain()
            dispatcher.report_unfinished()
    finally:
        if dispatcher is not None:
            dispatcher.close()
        store.close()
    summary.actions = writer.counts
    summary.seconds = wallclock.perf_counter() - started
    return summary


def _run_events(engine, store, events_path, ruleset, until, summary, progress, on_rejected, after_batch=None):
    items = read_events(events_path, default_tz=ruleset.shop.timezone)
    bar = _progress_bar(progress)
    last_at = None
    while True:
        batch = list(itertools.islice(items, BATCH))
        if not batch:
            break
        with store.transaction():
            for line_no, item in batch:
                summary.events += 1
                if isinstance(item, Rejected):
                    summary.rejected += 1
                    store.add_dead_letter(source=str(events_path), line_no=line_no, raw=item.raw, error=item.error)
                    if on_rejected is not None:
                        on_rejected(line_no, item.error)
                    continue
                if until is not None and item.at > until:
                    summary.after_until += 1
                    continue
                if engine.ingest(item):
                    summary.applied += 1
                else:
                    summary.duplicates += 1
                if last_at is None or item.at > last_at:
                    last_at = item.at
            engine.flush()
        if after_batch is not None:  # only committed actions reach channels
            after_batch()
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return last_at


def _progress_bar(enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" events", desc="replay", leave=False)
