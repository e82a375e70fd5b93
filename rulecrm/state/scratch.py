"""The store of a replay without --state: a temporary file that keeps only what the run reads back."""
from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator

from rulecrm.engine.enums import Status
from rulecrm.state.store import Store, _guard_storage_faults
from rulecrm.state.unwritten import Unwritten

_HELD = Status.DEFERRED.value
# Recorded event ids and decided action keys stay in memory up to these counts (about 25 MB each),
# then are written in one go: a replay of a shop this size writes none of them one by one.
EVENTS_IN_MEMORY = 100_000
KEYS_IN_MEMORY = 250_000
_KEYS_PER_QUERY = 500  # keys looked up in the table per statement (SQLite allows 32,766 parameters)


@_guard_storage_faults
class ScratchStore(Store):
    """The store of a run that can never be resumed or repeated.

    Memory stays bounded because profiles and timers live here, as in a kept state. What nobody
    reads back is not written in full: an action keeps its key and status only, unless it is held
    (`deferred`, read back when released), and an event is recorded by its fingerprint only (enough
    to recognise it again). Nothing needs to survive a crash, so SQLite does not wait for the disk.

    Recorded event ids and decided keys are kept in memory until there are many (`Unwritten`), and
    follow the transactions as the table would: a rolled-back step forgets those it added. Held
    actions are written at once, as are decided keys that the table holds already (a held action
    released, or a key written before).
    """

    keeps_state = False
    # indexes nothing reads in a run that never delivers (explain's events and actions by customer, the
    # dispatcher's waiting actions by channel; actions by status, which such a run reads once, for the
    # actions still held at its end): each costs a B-tree update per row, which at a million customers
    # is a random page write
    unindexed = ("events_customer", "actions_customer", "actions_waiting", "actions_status")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._keep_file = False
        # until `open_scratch` looks, the tables may hold anything
        self._events = Unwritten(EVENTS_IN_MEMORY, in_table=True)
        self._decided = Unwritten(KEYS_IN_MEMORY, in_table=True)

    @classmethod
    def open_scratch(cls, path: str | None = None) -> "ScratchStore":
        """A temporary file removed when closed; or, with `path`, a file whose owner removes it (the
        temporary shards of a partitioned replay, opened again by the task that fires their timers)."""
        store = cls.open(path)
        store._db.execute("PRAGMA synchronous = OFF")
        store._keep_file = path is not None  # read again by its owner: what memory holds is written at close
        store._events.in_table = store._has_rows("events")
        store._decided.in_table = store._has_rows("actions")
        return store

    def _has_rows(self, table: str) -> bool:
        return self._db.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0] == 1

    @contextlib.contextmanager
    def transaction(self):
        if self._depth:  # joins the transaction in progress, which does the bookkeeping
            with super().transaction():
                yield self
            return
        written = False
        try:
            with super().transaction():
                yield self
                if self._events.full() or self._decided.full():
                    self._write_memory()
                    written = True
        except BaseException:
            self._events.after_rollback()
            self._decided.after_rollback()
            raise
        self._events.after_commit(written=written)
        self._decided.after_commit(written=written)

    def close(self) -> None:
        if self._db is not None and self._keep_file and (self._events.committed or self._decided.committed):
            with super().transaction():  # the owner opens the file again: nothing may stay in memory
                self._write_memory()
        super().close()

    def _write_memory(self) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO events (id, customer_id, at, type, json) VALUES (?, ?, ?, ?, ?)",
            ((event_id, *row) for event_id, row in self._events.rows()),
        )
        self._upsert_decided(self._decided.rows())

    # -- events ------------------------------------------------------------------------------
    def record_event(self, event_id: str, customer_id: str, at_epoch: float, type: str, json_text: str) -> bool:
        if not self._depth:
            with self.transaction():
                return self.record_event(event_id, customer_id, at_epoch, type, json_text)
        events = self._events
        if events.get(event_id) is not None or (events.in_table and super().has_event(event_id)):
            return False
        events.add(event_id, (customer_id, at_epoch, type, json_text))
        return True

    def event_text(self, event_id: str) -> str | None:
        row = self._events.get(event_id)
        if row is not None:
            return row[3]
        return super().event_text(event_id) if self._events.in_table else None

    def has_event(self, event_id: str) -> bool:
        return self.event_text(event_id) is not None

    def count_events(self) -> int:
        events = self._events
        return len(events.committed) + len(events.pending) + (super().count_events() if events.in_table else 0)

    def _check_pages(self) -> None:
        """Nothing to check: a scratch file is this run's own, written moments before it is opened again
        (reading every page of a partition's shard would cost a second or more per partition)."""

    def put_outbox(self, actions) -> None:
        # a decision is taken once, ever: every key is kept, the whole action only while it is held
        held, decided = [], []
        for action in actions:
            (held if action.status == _HELD else decided).append(action)
        if held:
            self.put_actions(action.to_dict() for action in held)
            self._decided.in_table = True  # a later look-up must see these keys
        if decided:
            self.put_decided_keys((action.key, str(action.status)) for action in decided)

    def put_decided_keys(self, keys_and_statuses) -> None:
        """Record decided actions by key with their status alone: in memory, unless the table holds the
        key already (a held action now decided), where its row is replaced."""
        if not self._depth:
            with self.transaction():
                return self.put_decided_keys(keys_and_statuses)
        decided = self._decided
        rows = list(keys_and_statuses)
        stored = self._keys_in_table([key for key, _status in rows]) if decided.in_table else set()
        if stored:
            self._upsert_decided([(key, status) for key, status in rows if key in stored])
        for key, status in rows:
            if key not in stored:
                decided.add(key, status)
        return None

    def has_action(self, key: str) -> bool:
        return self._decided.get(key) is not None or (self._decided.in_table and super().has_action(key))

    def get_action(self, key: str) -> dict | None:
        status = self._decided.get(key)
        if status is not None:
            return json.loads(_status_text(status))  # what the key's row would hold
        return super().get_action(key) if self._decided.in_table else None

    def iter_actions(self, *, customer_id: str | None = None, status: str | None = None,
                     reported: bool | None = None) -> Iterator[dict]:
        """The table's actions, after the decided keys in memory (which have no customer and are not reported)."""
        if customer_id is None and not reported:
            for _key, decided_status in self._decided.rows():
                if status is None or decided_status == status:
                    yield json.loads(_status_text(decided_status))
        if self._decided.in_table:
            yield from super().iter_actions(customer_id=customer_id, status=status, reported=reported)

    def _keys_in_table(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start:start + _KEYS_PER_QUERY]
            found.update(row[0] for row in self._db.execute(
                f"SELECT key FROM actions WHERE key IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def _upsert_decided(self, keys_and_statuses) -> None:
        """Insert or replace actions by key with their status alone: no JSON encoded per action (its text
        is the status, the same for every action of that status)."""
        with self.transaction():
            self._db.executemany(
                "INSERT INTO actions (key, status, json) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "customer_id = NULL, rule = NULL, status = excluded.status, due_at = NULL, sent_at = NULL, "
                "reported = 0, json = excluded.json",
                ((key, status, _status_text(status)) for key, status in keys_and_statuses),
            )


@functools.cache
def _status_text(status: str) -> str:
    return json.dumps({"status": status, "reported": False})
