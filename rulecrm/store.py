"""The SQLite state store: meta, seen events, profiles, timers, the action outbox and dead letters."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timezone
from typing import Any

from rulecrm.errors import StateError
from rulecrm.masking import mask_personal

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

SCHEMA_VERSION = 1
DELIVERS = "delivers"  # meta key: this state's actions go to channels (`run`, `replay --dispatch`)
FORMAT = "rulecrm-state"
_PAGE = 1000  # rows fetched per query by the iterators (keyset pagination)

Timer = tuple[str, float, int, int, str, dict]
_TABLES = {"meta", "events", "profiles", "timers", "actions", "dead_letters", "dead_letters_resolved",
           "sqlite_sequence"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_customer ON events (customer_id, at);
CREATE TABLE IF NOT EXISTS profiles (
    customer_id TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS timers (
    key TEXT PRIMARY KEY,
    due REAL NOT NULL,
    rule_index INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    customer_id TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due, rule_index, seq, key);
CREATE INDEX IF NOT EXISTS timers_customer ON timers (customer_id);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY,
    customer_id TEXT,
    rule TEXT,
    status TEXT,
    due_at TEXT,
    sent_at TEXT,
    reported INTEGER NOT NULL DEFAULT 0,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_customer ON actions (customer_id);
CREATE INDEX IF NOT EXISTS actions_status ON actions (status);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    raw TEXT NOT NULL,
    error TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_line ON dead_letters (source, line_no);
CREATE TABLE IF NOT EXISTS dead_letters_resolved (
    source TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    raw_sha256 TEXT NOT NULL,
    how TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (source, line_no, raw_sha256)
);
"""


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=_json_default)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any) -> str | None:
    """A column value for an ISO timestamp field: datetimes are written as ISO 8601 strings."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class Store:
    """The state of one rulecrm deployment in one SQLite file; every write runs in a transaction."""

    keeps_state = True  # profiles, timers and actions written here can be read back

    def __init__(self, connection: sqlite3.Connection, path: str, *, temporary: bool = False):
        self._db = connection
        self.path = path
        self._temporary = temporary
        self._depth = 0
        self._lock_fd: int | None = None

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike | None) -> Store:
        """Open (creating if needed) a state file; ':memory:' for tests; None: a temporary file."""
        temporary = path is None
        if temporary:
            fd, path = tempfile.mkstemp(prefix="rulecrm-state-", suffix=".db")
            os.close(fd)
        path = os.fspath(path)
        try:
            connection = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state {path}: {exc}") from None
        store = cls(connection, path, temporary=temporary)
        try:
            store._prepare()
        except sqlite3.Error as exc:
            store.close()
            raise StateError(f"cannot use state {path}: {exc}") from None
        except BaseException:
            store.close()
            raise
        return store

    def _prepare(self) -> None:
        try:
            self._db.execute("PRAGMA busy_timeout = 5000")
            tables = self._table_names()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path} is not a rulecrm state file ({exc}); use another --state") from None
        if tables:
            self._check_version(unmarked_ok=tables <= _TABLES)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if self.get_meta("format") is None:
                self.set_meta("format", FORMAT)
                self.set_meta("schema_version", SCHEMA_VERSION)
        self._check_version()

    def _check_version(self, *, unmarked_ok: bool = False) -> None:
        rows = {}
        if "meta" in self._table_names():
            rows = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('format', 'schema_version')"))
        if not rows and unmarked_ok:
            return  # only our tables, being created by another process: _prepare writes the markers
        if json.loads(rows.get("format", "null")) != FORMAT:
            raise StateError(f"{self.path} is an SQLite database but not a rulecrm state; use another --state")
        version = json.loads(rows.get("schema_version", "0"))
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StateError(
                f"state {self.path} has schema version {version}, newer than this rulecrm understands "
                f"({SCHEMA_VERSION}); upgrade rulecrm or use another --state"
            )

    def _table_names(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def close(self) -> None:
        """Close the database, release the runner lock and remove a temporary state."""
        if self._db is not None:
            if self._db.in_transaction:
                self._db.rollback()
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._temporary:
            for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def lock(self) -> None:
        """Take the exclusive runner lock ("<path>.lock"); raises StateError when another process holds it."""
        if self._lock_fd is not None or self.path == ":memory:" or fcntl is None:
            return
        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"state {self.path} is in use by another rulecrm process (pid {holder}); "
                "stop it or use another --state"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._lock_fd = fd

    @contextlib.contextmanager
    def transaction(self):
        """All or nothing: commits on success, rolls back on any exception; nested use joins the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    # -- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, _dumps(value)))

    # -- events --------------------------------------------------------------------------

    def record_event(self, event_id: str, customer_id: str, at_epoch: float, type: str, json_text: str) -> bool:
        """Remember an applied event; False when this id was recorded before (apply it once)."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (id, customer_id, at, type, json) VALUES (?, ?, ?, ?, ?)",
                (event_id, customer_id, at_epoch, type, json_text),
            )
            return cursor.rowcount == 1

    def event_text(self, event_id: str) -> str | None:
        """What `record_event` stored for this id (the event's JSON; a fingerprint in a scratch store)."""
        row = self._db.execute("SELECT json FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else row[0]

    def has_event(self, event_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None

    def count_events(self) -> int:
        return self._db.execute("SELECT count(*) FROM events").fetchone()[0]

    # -- profiles ------------------------------------------------------------------------

    def get_profile(self, customer_id: str) -> dict | None:
        row = self._db.execute("SELECT json FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_profiles(self, items: Iterable[tuple[str, dict]]) -> None:
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO profiles (customer_id, json) VALUES (?, ?)",
                ((customer_id, _dumps(profile)) for customer_id, profile in items),
            )

    def iter_profiles(self) -> Iterator[tuple[str, dict]]:
        """Every profile in customer id order, fetched in pages."""
        for customer_id, text in self._pages("SELECT customer_id, json FROM profiles", ("customer_id",)):
            yield customer_id, json.loads(text)

    # -- timers --------------------------------------------------------------------------

    def put_timers(self, rows: Iterable[Timer]) -> None:
        """Insert or replace timers by key: (key, due_epoch, rule_index, seq, customer_id, payload)."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO timers (key, due, rule_index, seq, customer_id, payload) VALUES (?, ?, ?, ?, ?, ?)",
                ((key, due, rule_index, seq, customer_id, _dumps(payload)) for key, due, rule_index, seq, customer_id, payload in rows),
            )

    def delete_timers(self, keys: Iterable[str]) -> None:
        with self.transaction():
            self._db.executemany("DELETE FROM timers WHERE key = ?", ((key,) for key in keys))

    def iter_timers(self, *, until: float | None = None) -> Iterator[Timer]:
        """Timers ordered by (due, rule_index, seq); with `until`, only those due at or before it."""
        where = ("due <= ?", (until,)) if until is not None else None
        sql = "SELECT key, due, rule_index, seq, customer_id, payload FROM timers"
        for key, due, rule_index, seq, customer_id, payload in self._pages(sql, ("due", "rule_index", "seq", "key"), where=where):
            yield key, due, rule_index, seq, customer_id, json.loads(payload)

    def timers_for(self, customer_id: str) -> list[Timer]:
        rows = self._db.execute(
            "SELECT key, due, rule_index, seq, customer_id, payload FROM timers WHERE customer_id = ? "
            "ORDER BY due, rule_index, seq, key",
            (customer_id,),
        )
        return [(key, due, rule_index, seq, cid, json.loads(payload)) for key, due, rule_index, seq, cid, payload in rows]

    def next_timer_due(self) -> float | None:
        """The earliest due time of any timer, or None."""
        return self._db.execute("SELECT min(due) FROM timers").fetchone()[0]

    # -- outbox --------------------------------------------------------------------------

    def put_actions(self, actions: Iterable[dict]) -> None:
        """Insert or update actions by their "key"; the whole dict is kept as JSON (datetimes as ISO text)."""

        def rows():
            for action in actions:
                if not action.get("key"):
                    raise ValueError(f"an action needs a non-empty 'key': {action!r}")
                reported = bool(action.get("reported", False))
                yield (
                    action["key"],
                    action.get("customer_id"),
                    action.get("rule"),
                    action.get("status"),
                    _text(action.get("due_at")),
                    _text(action.get("sent_at")),
                    int(reported),
                    _dumps({**action, "reported": reported}),
                )

        with self.transaction():
            self._db.executemany(
                "INSERT INTO actions (key, customer_id, rule, status, due_at, sent_at, reported, json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "customer_id = excluded.customer_id, rule = excluded.rule, status = excluded.status, "
                "due_at = excluded.due_at, sent_at = excluded.sent_at, reported = excluded.reported, "
                "json = excluded.json",
                rows(),
            )

    def get_action(self, key: str) -> dict | None:
        row = self._db.execute("SELECT json FROM actions WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def iter_actions(
        self, *, customer_id: str | None = None, status: str | None = None, reported: bool | None = None
    ) -> Iterator[dict]:
        """Actions in the order they were first written, optionally filtered."""
        clauses, params = [], []
        for column, value in (("customer_id", customer_id), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if reported is not None:
            clauses.append("reported = ?")
            params.append(int(reported))
        where = (" AND ".join(clauses), tuple(params)) if clauses else None
        for (text,) in self._pages("SELECT json FROM actions", ("rowid",), where=where):
            yield json.loads(text)

    def mark_reported(self, keys: Iterable[str]) -> None:
        """Flag actions as written to the output, so a later replay does not output them again."""
        with self.transaction():
            self._db.executemany(
                "UPDATE actions SET reported = 1, json = json_set(json, '$.reported', json('true')) WHERE key = ?",
                ((key,) for key in keys),
            )

    # -- dead letters --------------------------------------------------------------------

    def add_dead_letter(self, *, source: str, line_no: int, raw: str, error: str) -> int | None:
        """Keep a rejected input line; the same line of the same source is kept once (its error refreshed).

        None: this very line was fixed and re-ingested, or removed on purpose, before (a second
        replay of the same file must not bring it back).
        """
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        error = mask_personal(error)  # `raw` stays as it came, so it can be fixed; the error is for people
        with self.transaction():
            if self._db.execute(
                "SELECT 1 FROM dead_letters_resolved WHERE source = ? AND line_no = ? AND raw_sha256 = ?",
                (source, line_no, _sha256(raw)),
            ).fetchone() is not None:
                return None
            row = self._db.execute(
                "SELECT id FROM dead_letters WHERE source = ? AND line_no = ? AND raw = ?", (source, line_no, raw)
            ).fetchone()
            if row is not None:
                self._db.execute("UPDATE dead_letters SET error = ?, at = ? WHERE id = ?", (error, now, row[0]))
                return row[0]
            cursor = self._db.execute(
                "INSERT INTO dead_letters (source, line_no, raw, error, at) VALUES (?, ?, ?, ?, ?)",
                (source, line_no, raw, error, now),
            )
            return cursor.lastrowid

    def iter_dead_letters(self) -> Iterator[dict]:
        """Every dead letter in the order it was added: {id, source, line_no, raw, error, at}."""
        sql = "SELECT id, source, line_no, raw, error, at FROM dead_letters"
        for id_, source, line_no, raw, error, at in self._pages(sql, ("id",)):
            yield {"id": id_, "source": source, "line_no": line_no, "raw": raw, "error": error, "at": at}

    def remove_dead_letters(self, ids: Iterable[int]) -> None:
        with self.transaction():
            self._db.executemany("DELETE FROM dead_letters WHERE id = ?", ((id_,) for id_ in ids))

    def resolve_dead_letter(self, id_: int, *, how: str) -> bool:
        """Take a dead letter out of the store for good ("retried" or "removed"), remembering its line
        so that reading the same source again does not add it back. False: no such dead letter."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.transaction():
            row = self._db.execute("SELECT source, line_no, raw FROM dead_letters WHERE id = ?", (id_,)).fetchone()
            if row is None:
                return False
            source, line_no, raw = row
            self._db.execute(
                "INSERT OR REPLACE INTO dead_letters_resolved (source, line_no, raw_sha256, how, at) "
                "VALUES (?, ?, ?, ?, ?)", (source, line_no, _sha256(raw), how, now),
            )
            self._db.execute("DELETE FROM dead_letters WHERE id = ?", (id_,))
            return True

    # -- helpers -------------------------------------------------------------------------

    def _pages(self, select: str, order: tuple[str, ...], *, where=None) -> Iterator[tuple]:
        """Rows of `select` ordered by the unique `order` columns, fetched one page per query.

        Keyset pagination keeps memory bounded and stays correct when rows are written between pages.
        """
        columns = ", ".join(order)
        select = select.replace("SELECT ", f"SELECT {columns}, ", 1)
        base_clause, base_params = where if where else ("", ())
        width = len(order)
        after: tuple | None = None
        while True:
            clauses = [base_clause] if base_clause else []
            params = list(base_params)
            if after is not None:
                clauses.append(f"({columns}) > ({', '.join('?' * width)})")
                params.extend(after)
            sql = select + (" WHERE " + " AND ".join(clauses) if clauses else "")
            rows = self._db.execute(f"{sql} ORDER BY {columns} LIMIT {_PAGE}", params).fetchall()
            for row in rows:
                yield row[width:]
            if len(rows) < _PAGE:
                return
            after = rows[-1][:width]
