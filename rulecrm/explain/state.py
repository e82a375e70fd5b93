"""Reads one customer's state from a state file, read-only: profile, events, outbox and timers."""
from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import attrs

from ..errors import RulecrmError
from ..events import Event
from ..profile import Profile
from ..store import FORMAT, Store
from ..suggest import closest
from ..timeutil import parse_timestamp


class ExplainError(RulecrmError):
    """explain cannot answer: an unknown customer or rule, or a state it cannot read."""


@attrs.frozen
class CustomerState:
    """Everything the state holds about one customer, as the engine left it."""

    customer_id: str
    profile: Profile
    events: tuple[Event, ...]  # in the order the engine applied them
    actions: tuple[dict, ...]  # outbox records, in the order they were first written
    timers: tuple[tuple, ...]  # (key, due, rule_index, seq, customer_id, payload), by due time
    now: datetime | None  # the engine's event time when the state was last written
    rules_path: str | None  # the rules of the last replay into this state


class StateReader:
    """A read-only view of a state file: explain never takes the runner lock and never writes."""

    def __init__(self, path):
        path = os.fspath(path)
        if not Path(path).is_file():
            raise ExplainError(f"state {path} does not exist; pass the --state of a replay or run")
        try:
            self._db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise ExplainError(f"cannot read state {path}: {exc}") from None
        self.path = path
        self.store = Store(self._db, path)  # the store's readers, over this read-only connection
        try:
            marked = self.store.get_meta("format") == FORMAT
        except sqlite3.Error:
            marked = False
        if not marked:
            self.close()
            raise ExplainError(f"{path} is not a rulecrm state; pass the --state of a replay or run")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "StateReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def customer(self, customer_id: str) -> CustomerState:
        """The customer's state; ExplainError with a did-you-mean when the state never saw them."""
        store = self.store
        stored = store.get_profile(customer_id)
        if stored is None:
            known = [row[0] for row in self._db.execute("SELECT customer_id FROM profiles")]
            guess = closest(customer_id, known)
            hint = f"; did you mean {guess!r}?" if guess else f" ({len(known)} customers are known)"
            raise ExplainError(f"customer {customer_id!r} is not in state {self.path}{hint}")
        now = store.get_meta("now")
        return CustomerState(
            customer_id=customer_id,
            profile=Profile.from_dict(stored),
            events=tuple(self._events(customer_id)),
            actions=tuple(store.iter_actions(customer_id=customer_id)),
            timers=tuple(store.timers_for(customer_id)),
            now=parse_timestamp(now, timezone.utc) if now else None,
            rules_path=store.get_meta("rules_path"),
        )

    def _events(self, customer_id: str):
        rows = self._db.execute("SELECT json FROM events WHERE customer_id = ? ORDER BY at, rowid", (customer_id,))
        for (text,) in rows:
            if text:  # a state written without event bodies keeps only the ids
                yield Event.from_dict(json.loads(text), default_tz=timezone.utc)
