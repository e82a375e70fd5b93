"""A shop under test: a rules directory, an engine on a store, events in, actions out, time by hand."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..events import Event, synthetic_id
from ..replay import build_engine
from ..rulefile.loader import load_rules
from ..store import Store
from ..timeutil import parse_timestamp
from .recording import RecordingChannel


class Shop:
    """Drives the real engine in event time, the way `replay` and `run` do, one call at a time.

    Events must be given in event-time order across calls (within one `add` call they are sorted,
    ties keeping their order). `state` is ":memory:" (default) or a file path; `restart()` flushes
    and builds a new engine on the same store, as a restarted process would; `reload(rules)` does
    the same with other rules, keeping profiles and timers.
    """

    def __init__(self, rules, *, backend: str = "python", state: str = ":memory:", functions=None):
        self.backend_name = backend
        self.functions = functions
        self.state = str(state)
        self.recording = RecordingChannel()
        self.ruleset = load_rules(rules) if not _is_ruleset(rules) else rules
        self._store = Store.open(self.state)
        self._occurrences: dict[str, int] = {}
        self._engine = self._build()

    # -- building ------------------------------------------------------------------------
    def _build(self):
        return build_engine(
            self.ruleset, self._store, backend_name=self.backend_name,
            on_action=self.recording.record, functions=self.functions,
        )

    def restart(self) -> None:
        """Persist everything, drop the engine, and build a new one from the store."""
        self._checkpoint()
        self._engine.backend.close()
        if self.state != ":memory:":
            self._store.close()
            self._store = Store.open(self.state)
        self._engine = self._build()

    def reload(self, rules) -> None:
        """Swap the rules (a directory, a file or a RuleSet) the way a live reload does."""
        self.ruleset = load_rules(rules) if not _is_ruleset(rules) else rules
        self.restart()

    def close(self) -> None:
        self._checkpoint()
        self._engine.backend.close()
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- driving -------------------------------------------------------------------------
    @property
    def actions(self) -> list[dict]:
        return self.recording.actions

    @property
    def now(self) -> datetime | None:
        return self._engine.now

    def add(self, *events) -> list[dict]:
        """Apply events (dicts in the JSONL form, or Event objects); returns the actions reported."""
        parsed = [self._event(e) for e in events]
        order = sorted(range(len(parsed)), key=lambda n: (parsed[n].at.astimezone(timezone.utc), n))
        start = len(self.recording.actions)
        with self._store.transaction():
            for n in order:
                self._engine.ingest(parsed[n])
            self._engine.flush()
        return self.recording.actions[start:]

    def advance(self, to) -> list[dict]:
        """Fire every timer due at or before `to` (a datetime or ISO text)."""
        instant = to if isinstance(to, datetime) else parse_timestamp(to, self.ruleset.shop.timezone)
        start = len(self.recording.actions)
        with self._store.transaction():
            self._engine.advance(instant)
            self._engine.flush()
        return self.recording.actions[start:]

    def finish(self) -> list[dict]:
        """Report the messages still held by quiet hours or deferring caps (status `deferred`)."""
        start = len(self.recording.actions)
        with self._store.transaction():
            self._engine.report_pending()
            self._engine.flush()
        return self.recording.actions[start:]

    def profile(self, customer_id: str) -> dict:
        return dict(self._engine.profile(customer_id).mapping())

    def pending_timers(self) -> list:
        return sorted(self._engine.timers.values(), key=lambda t: t.order)

    def _checkpoint(self) -> None:
        with self._store.transaction():
            self._engine.flush()

    def _event(self, value) -> Event:
        if isinstance(value, Event):
            event = value
        else:
            event = Event.from_dict(value, default_tz=self.ruleset.shop.timezone)
        if event.id is None:
            digest = event.to_json()
            self._occurrences[digest] = self._occurrences.get(digest, 0) + 1
            event = Event(type=event.type, customer_id=event.customer_id, at=event.at, data=event.data,
                          id=synthetic_id(event, self._occurrences[digest]))
        return event


def _is_ruleset(value) -> bool:
    return not isinstance(value, (str, Path))
