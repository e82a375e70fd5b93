"""The actions a command writes, kept for its report: a text stream in front of `--out`.

A replay writes its action JSON lines to a text stream (the `--out` file, the table, the diff's
table of actions); `ActionLog` is such a stream that passes every write on and keeps the fields a
report reads. A history of millions of events gives millions of actions, so they are kept in a
temporary SQLite database on disk (as `rulecrm diff` keeps its own), not as Python objects, and the
figures are a few GROUP BY queries (`rulecrm.reports.data`).
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import datetime

import orjson

ROWS_PER_INSERT = 5_000  # lines buffered before one executemany: bounded memory, few statements

_SCHEMA = """
CREATE TABLE actions (
    key TEXT PRIMARY KEY, seq INTEGER NOT NULL, rule TEXT NOT NULL, customer_id TEXT NOT NULL, kind TEXT NOT NULL,
    recipient TEXT, channel TEXT, address TEXT, status TEXT NOT NULL, reason TEXT, day TEXT NOT NULL,
    at TEXT NOT NULL, lateness INTEGER
) WITHOUT ROWID
"""
_INSERT = ("INSERT OR REPLACE INTO actions (key, seq, rule, customer_id, kind, recipient, channel, address, status, "
           "reason, day, at, lateness) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class ActionLog:
    """A text stream that keeps each action line written to it and passes the write on to `forward`.

    One row per action key: an action reported twice (decided `queued`, then delivered `sent`) counts
    once, with its last status, as the diff counts it.
    """

    def __init__(self, forward=None) -> None:
        self.forward = forward
        self.db = sqlite3.connect("", isolation_level=None)  # "": a private temporary database on disk
        self.db.execute("PRAGMA journal_mode = OFF")  # nothing to recover: a failed command writes no report
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute(_SCHEMA)
        self._rows: list[tuple] = []
        self._seq = 0

    def write(self, text: str) -> None:
        if self.forward is not None:
            self.forward.write(text)
        for line in text.splitlines():
            if line:
                self._rows.append(self._row(orjson.loads(line)))
        if len(self._rows) >= ROWS_PER_INSERT:
            self._insert()

    def flush(self) -> None:
        if self.forward is not None:
            self.forward.flush()

    def finish(self) -> None:
        """Store the lines still buffered; call once the command has written every action."""
        self._insert()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ActionLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _insert(self) -> None:
        if self._rows:
            self.db.execute("BEGIN")
            self.db.executemany(_INSERT, self._rows)
            self.db.execute("COMMIT")
            self._rows.clear()

    def _row(self, action: dict) -> tuple:
        self._seq += 1
        at = action.get("sent_at") or action.get("due_at") or ""
        return (action["key"], self._seq, action["rule"], action.get("customer_id") or "", action["kind"],
                action.get("to"), action.get("channel"), action.get("address"), action["status"],
                action.get("reason"), at[:10], at, escalation_lateness(action))


def escalation_lateness(action: dict) -> int | None:
    """Seconds from an escalation's triggering event to the time it went out; None for other actions.

    `late_seconds` is the time from the trigger (the review, say) to the step's due time; an action sent
    after it was due (`sent_at` later than `due_at`) adds that delay.
    """
    if action.get("kind") != "escalate" or action.get("late_seconds") is None:
        return None
    lateness = int(action["late_seconds"])
    if action.get("sent_at") and action.get("due_at"):
        delay = datetime.fromisoformat(action["sent_at"]) - datetime.fromisoformat(action["due_at"])
        lateness += max(0, int(delay.total_seconds()))
    return lateness


ReplayInto = Callable[..., object]


def logging_replays(replay_into: ReplayInto, resources: contextlib.ExitStack, logs: list) -> ReplayInto:
    """`replay_into` of `rulecrm.app.diffing` whose every replay also writes into a new ActionLog, appended
    to `logs` (old side first: the diff replays the old rules first); `resources` closes them."""

    def logged(run, events_path, out):
        log = resources.enter_context(ActionLog(out))
        logs.append(log)
        summary = replay_into(run, events_path, log)
        log.finish()
        return summary

    return logged
