"""The store of a replay without --state: a temporary file that keeps only what the run reads back."""
from __future__ import annotations

import functools
import json

from rulecrm.engine.enums import Status
from rulecrm.state.store import Store

_HELD = Status.DEFERRED.value


class ScratchStore(Store):
    """The store of a run that can never be resumed or repeated.

    Memory stays bounded because profiles and timers live here, as in a kept state. What nobody
    reads back is not written in full: an action keeps its key and status only, unless it is held
    (`deferred`, read back when released), and an event is recorded by its fingerprint only (enough
    to recognise it again). Nothing needs to survive a crash, so SQLite does not wait for the disk.
    """

    keeps_state = False
    # indexes nothing reads in a run that never delivers (explain's events and actions by customer, the
    # dispatcher's waiting actions by channel; actions by status, which such a run reads once, for the
    # actions still held at its end): each costs a B-tree update per row, which at a million customers
    # is a random page write
    unindexed = ("events_customer", "actions_customer", "actions_waiting", "actions_status")

    @classmethod
    def open_scratch(cls, path: str | None = None) -> "ScratchStore":
        """A temporary file removed when closed; or, with `path`, a file whose owner removes it (the
        temporary shards of a partitioned replay, opened again by the task that fires their timers)."""
        store = cls.open(path)
        store._db.execute("PRAGMA synchronous = OFF")
        return store

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
        if decided:
            self.put_decided_keys((action.key, str(action.status)) for action in decided)

    def put_decided_keys(self, keys_and_statuses) -> None:
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
