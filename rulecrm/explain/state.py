"""Reads one customer's state from a state file, read-only: profile, events, outbox and timers."""
from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import attrs

from rulecrm.engine.profile import Profile
from rulecrm.errors import ExplainError, RulecrmError  # noqa: F401 (re-exported: defined here before errors.py held them)
from rulecrm.events import Event
from rulecrm.state.store import FORMAT, Store
from rulecrm.suggest import closest
from rulecrm.timeutil import parse_timestamp

# Up to this many known customers the did-you-mean compares similarity with each; beyond, only ids one
# typo away are looked for, which stays fast for a shop with millions of customers.
FULL_SUGGEST_LIMIT = 20_000


def one_typo_away(word: str, candidates) -> str | None:
    """The first candidate (in sorted order) one substitution, insertion, deletion or swap from `word`."""
    size = len(word)
    found = None
    for candidate in candidates:
        if abs(len(candidate) - size) <= 1 and (found is None or candidate < found) and _one_edit(word, candidate):
            found = candidate
    return found


def _one_edit(a: str, b: str) -> bool:
    if a == b:
        return False
    if len(a) > len(b):
        a, b = b, a
    start = 0
    while start < len(a) and a[start] == b[start]:
        start += 1
    if len(a) < len(b):  # one insertion
        return a[start:] == b[start + 1:]
    if a[start + 1:] == b[start + 1:]:  # one substitution
        return True
    return a[start:start + 2] == b[start:start + 2][::-1] and a[start + 2:] == b[start + 2:]  # a swap


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
        """The customer's state; ExplainError with a did-you-mean when the state has no event of theirs.

        A customer whose events changed no profile field has no stored profile (the engine writes
        only changed ones): that is the profile of a customer the engine never changed.
        """
        try:
            return self._customer(customer_id)
        except sqlite3.DatabaseError as exc:
            raise ExplainError(f"cannot read state {self.path}: {exc}") from None

    def _customer(self, customer_id: str) -> CustomerState:
        store = self.store
        known = self._db.execute("SELECT 1 FROM events WHERE customer_id = ? LIMIT 1", (customer_id,)).fetchone()
        stored = store.get_profile(customer_id)
        if known is None and stored is None:
            raise ExplainError(self._unknown(customer_id))
        now = store.get_meta("now")
        return CustomerState(
            customer_id=customer_id,
            profile=Profile.from_dict(stored) if stored is not None else Profile(customer_id),
            events=tuple(self._events(customer_id)),
            actions=tuple(store.iter_actions(customer_id=customer_id)),
            timers=tuple(store.timers_for(customer_id)),
            now=parse_timestamp(now, timezone.utc) if now else None,
            rules_path=store.get_meta("rules_path"),
        )

    def _unknown(self, customer_id: str) -> str:
        known = [row[0] for row in self._db.execute(
            "SELECT DISTINCT customer_id FROM events UNION SELECT customer_id FROM profiles")]
        message = f"customer {customer_id!r} has no events in state {self.path}"
        if not known:
            return message + "; the state holds no events yet"
        guess = closest(customer_id, known) if len(known) <= FULL_SUGGEST_LIMIT else one_typo_away(customer_id, known)
        if guess:
            return message + f"; did you mean {guess!r}?"
        some = ", ".join(repr(c) for c in sorted(known)[:5]) + (", ..." if len(known) > 5 else "")
        return message + f"; {len(known)} customers are known, e.g. {some}"

    def _events(self, customer_id: str):
        # Rows are added as events are applied: rowid order is the engine's order, late events too.
        rows = self._db.execute("SELECT json FROM events WHERE customer_id = ? ORDER BY rowid", (customer_id,))
        for (text,) in rows:
            if text:  # a state written without event bodies keeps only the ids
                yield Event.from_dict(json.loads(text), default_tz=timezone.utc)
