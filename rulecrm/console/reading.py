"""Read-only queries of a state for the console: one short-lived SQLite connection per query.

A running `rulecrm run` writes the state in WAL mode, so a reader never blocks it and sees only
committed steps. Each connection is opened with `mode=ro` (it cannot write, and takes no runner
lock), used for one query and closed, so no read transaction stays open to hold back checkpoints.
A partitioned state is read shard by shard and the results are added up.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import attrs
import orjson

from rulecrm.errors import StateError
from rulecrm.state.partitioned import PartitionedState, is_partitioned
from rulecrm.state.store import FORMAT, LAST_RELOAD, Store, storage_errors

BUSY_TIMEOUT_MS = 2000  # a reader waits this long at most for a checkpoint of the runner
PAGE_SIZE = 100  # rows per page of the outbox and the dead letters
SEARCH_LIMIT = 50
MESSAGE_STATUSES = ("queued", "sent", "failed", "dead", "suppressed", "deferred")


@attrs.frozen
class StateFile:
    """One SQLite file of the state: the state itself, or a shard of a partitioned state."""

    path: str
    shard: int | None = None  # None: a state of one file


@attrs.frozen
class StateFiles:
    """The files a `--state` stands for."""

    path: str
    partitioned: PartitionedState | None

    @classmethod
    def open(cls, path, *, thorough: bool = False) -> StateFiles:
        """The state at `path`; StateError (one clear line) when it is missing or not a rulecrm state.

        `thorough` (once, at start): the checks of every command that opens a state, structure
        included (`Store.open`, read-only). Otherwise (each request) only that the file is still
        there and marked as a rulecrm state: a full check reads every page of the file.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise StateError(f"state {path} does not exist; pass the --state of a replay or run")
        if os.path.isdir(path):
            if not is_partitioned(path):
                raise StateError(f"state {path} is a directory but not a partitioned state (no manifest.json)")
            return cls(path, PartitionedState.open(path))
        if thorough:
            with storage_errors(path):
                Store.open(path, readonly=True).close()  # a damaged, foreign or newer state: one clear line
        elif not state_format_ok(StateFile(path)):
            raise StateError(f"{path} is not a rulecrm state; pass the --state of a replay or run")
        return cls(path, None)

    def files(self) -> list[StateFile]:
        """The files that exist (a shard nothing was written to yet has no file, and holds nothing)."""
        if self.partitioned is None:
            return [StateFile(self.path)]
        return [StateFile(path, shard) for shard, path in enumerate(self.partitioned.shard_paths())
                if os.path.exists(path)]

    def file_of(self, customer_id: str) -> StateFile:
        """The file that holds a customer's events, profile, timers and actions."""
        if self.partitioned is None:
            return StateFile(self.path)
        shard = self.partitioned.shard_for(customer_id)
        return StateFile(self.partitioned.shard_path(shard), shard)


@contextlib.contextmanager
def reading(file: StateFile) -> Iterator[sqlite3.Connection]:
    """A read-only connection to one file, closed at the end of the block; faults become StorageError."""
    uri = f"{Path(file.path).resolve().as_uri()}?mode=ro"
    with storage_errors(file.path):
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            yield db
        finally:
            db.close()


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _files_with(files: Iterable[StateFile], table: str) -> Iterator[tuple[StateFile, sqlite3.Connection]]:
    """Each file that has `table`, with a read-only connection open while the caller reads it. A shard
    being created has no tables yet: nothing is committed in it."""
    for file in files:
        with reading(file) as db:
            if _has_table(db, table):
                yield file, db


def _like(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def iso_of_epoch(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


# -- the overview ----------------------------------------------------------------------------


@attrs.frozen
class Period:
    """Days from `start` to `end` (ISO dates, both included); None: open on that side."""

    start: str | None = None
    end: str | None = None

    def clause(self, column: str) -> tuple[str, list]:
        clauses, params = [], []
        if self.start:
            clauses.append(f"substr({column}, 1, 10) >= ?")
            params.append(self.start)
        if self.end:
            clauses.append(f"substr({column}, 1, 10) <= ?")
            params.append(self.end)
        return (" AND ".join(clauses) or "1"), params


@attrs.frozen
class Overview:
    events_per_day: dict  # day -> {event type: count}
    actions_per_day_status: dict  # day -> {status: count}
    actions_per_day_rule: dict  # day -> {rule: count}
    actions_by_rule_status: dict  # rule -> {status: count}
    caps: list  # (cap reason, rule, count), most frequent first
    outbox: dict  # status -> count (queued, failed, dead)
    outbox_failures: list  # the latest failed or dead actions (dicts)
    dead_letters: int
    events: int
    customers: int


def overview(state: StateFiles, period: Period) -> Overview:
    events_per_day: dict = defaultdict(Counter)
    per_status: dict = defaultdict(Counter)
    per_rule: dict = defaultdict(Counter)
    by_rule_status: dict = defaultdict(Counter)
    caps: Counter = Counter()
    outbox: Counter = Counter()
    failures: list = []
    dead = events = customers = 0
    event_where, event_params = period.clause("datetime(at, 'unixepoch')")
    action_where, action_params = period.clause("due_at")
    for _file, db in _files_with(state.files(), "actions"):
        for day, type_, count in db.execute(
                f"SELECT date(at, 'unixepoch'), type, count(*) FROM events WHERE {event_where} GROUP BY 1, 2",
                event_params):
            events_per_day[day][type_] += count
            events += count
        for day, rule, status, count in db.execute(
                f"SELECT substr(due_at, 1, 10), rule, status, count(*) FROM actions WHERE {action_where} "
                "GROUP BY 1, 2, 3", action_params):
            per_status[day][status] += count
            per_rule[day][rule] += count
            by_rule_status[rule][status] += count
        for reason, rule, count in db.execute(
                f"SELECT json_extract(json, '$.reason'), rule, count(*) FROM actions WHERE status = 'suppressed' "
                f"AND json_extract(json, '$.reason') LIKE 'cap:%' AND {action_where} GROUP BY 1, 2",
                action_params):
            caps[(reason, rule)] += count
        for status, count in db.execute(
                "SELECT status, count(*) FROM actions WHERE status IN ('queued', 'failed', 'dead') GROUP BY 1"):
            outbox[status] += count
        for (text,) in db.execute("SELECT json FROM actions WHERE status IN ('failed', 'dead') "
                                  "ORDER BY rowid DESC LIMIT 10"):
            failures.append(orjson.loads(text))
        dead += db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        customers += db.execute("SELECT count(*) FROM profiles").fetchone()[0]
    failures.sort(key=lambda action: action.get("last_attempt_at") or "", reverse=True)
    return Overview(
        events_per_day=_sorted_days(events_per_day), actions_per_day_status=_sorted_days(per_status),
        actions_per_day_rule=_sorted_days(per_rule),
        actions_by_rule_status={rule: dict(counts) for rule, counts in sorted(by_rule_status.items(), key=str)},
        caps=[(reason, rule, count) for (reason, rule), count in caps.most_common()],
        outbox={status: outbox[status] for status in ("queued", "failed", "dead")},
        outbox_failures=failures[:10], dead_letters=dead, events=events, customers=customers,
    )


def _sorted_days(per_day: dict) -> dict:
    return {day: dict(counts) for day, counts in sorted(per_day.items()) if day is not None}


# -- customers -------------------------------------------------------------------------------


@attrs.frozen
class Found:
    customer_id: str
    name: str | None


def search_customers(state: StateFiles, text: str) -> list[Found]:
    """Customers whose id or name contains `text` (ids that are exactly `text` first), at most SEARCH_LIMIT."""
    found: dict[str, str | None] = {}
    pattern = _like(text)
    for _file, db in _files_with(state.files(), "profiles"):
        rows = db.execute(
            "SELECT customer_id, json_extract(json, '$.fields.name') FROM profiles WHERE customer_id LIKE ? "
            "ESCAPE '\\' OR json_extract(json, '$.fields.name') LIKE ? ESCAPE '\\' ORDER BY customer_id LIMIT ?",
            (pattern, pattern, SEARCH_LIMIT))
        for customer_id, name in rows:
            found[customer_id] = name
        # a customer whose events changed no profile field has events but no stored profile
        for (customer_id,) in db.execute(
                "SELECT DISTINCT customer_id FROM events WHERE customer_id LIKE ? ESCAPE '\\' "
                "ORDER BY customer_id LIMIT ?", (pattern, SEARCH_LIMIT)):
            found.setdefault(customer_id, None)
    ordered = sorted(found.items(), key=lambda item: (item[0] != text, item[0]))
    return [Found(customer_id, name) for customer_id, name in ordered[:SEARCH_LIMIT]]


@attrs.frozen
class Timeline:
    customer_id: str
    shard: int | None
    profile: dict | None
    events: list  # {id, type, at, data}
    actions: list  # outbox records
    stage_changes: list  # the stage actions
    timers: list  # {key, due, rule, kind}


def customer_timeline(state: StateFiles, customer_id: str) -> Timeline | None:
    """Everything the state holds about one customer, or None when it holds nothing."""
    file = state.file_of(customer_id)
    if not os.path.exists(file.path):
        return None
    with reading(file) as db:
        if not _has_table(db, "profiles"):
            return None
        row = db.execute("SELECT json FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        profile = orjson.loads(row[0]) if row else None
        events = []
        for event_id, at, type_, text in db.execute(
                "SELECT id, at, type, json FROM events WHERE customer_id = ? ORDER BY at, rowid", (customer_id,)):
            data = (orjson.loads(text).get("data") if text and text.startswith("{") else None) or {}
            events.append({"id": event_id, "type": type_, "at": iso_of_epoch(at), "data": data})
        actions = [orjson.loads(text) for (text,) in db.execute(
            "SELECT json FROM actions WHERE customer_id = ? ORDER BY rowid", (customer_id,))]
        timers = []
        for key, due, text in db.execute(
                "SELECT key, due, payload FROM timers WHERE customer_id = ? ORDER BY due, rule_index, seq",
                (customer_id,)):
            payload = orjson.loads(text)
            timers.append({"key": key, "due": iso_of_epoch(due), "rule": payload.get("rule"),
                           "kind": payload.get("kind")})
    if profile is None and not events and not actions:
        return None
    return Timeline(customer_id, file.shard, profile, events, [a for a in actions if a.get("kind") != "stage"],
                    [a for a in actions if a.get("kind") == "stage"], timers)


# -- rules -----------------------------------------------------------------------------------

HELD = "deferred"
SUPPRESSED = "suppressed"


def rule_counts(state: StateFiles, period: Period) -> dict[str, dict[str, int]]:
    """rule -> {fired, suppressed, held}: actions decided for the rule with due time in `period`.

    Fired: every action that went on (sent, or queued, failed or dead at its channel); suppressed by
    a gate; held: deferred by quiet hours or a deferring cap, waiting for its release.
    """
    counts: dict = defaultdict(Counter)
    where, params = period.clause("due_at")
    for _file, db in _files_with(state.files(), "actions"):
        for rule, status, count in db.execute(
                f"SELECT rule, status, count(*) FROM actions WHERE {where} GROUP BY 1, 2", params):
            what = "suppressed" if status == SUPPRESSED else "held" if status == HELD else "fired"
            counts[rule][what] += count
    return {rule: {what: found[what] for what in ("fired", "suppressed", "held")} for rule, found in counts.items()}


# -- the outbox ------------------------------------------------------------------------------


@attrs.frozen
class OutboxFilter:
    status: str | None = None
    rule: str | None = None
    channel: str | None = None
    customer: str | None = None

    def clause(self) -> tuple[str, list]:
        clauses, params = [], []
        for column, value in (("status", self.status), ("rule", self.rule), ("customer_id", self.customer),
                              ("json_extract(json, '$.channel')", self.channel)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (" AND ".join(clauses) or "1"), params


@attrs.frozen
class OutboxPage:
    rows: list  # (shard, action dict)
    total: int
    page: int
    pages: int
    rules: list  # every rule that has actions, for the filter
    channels: list


def outbox_page(state: StateFiles, wanted: OutboxFilter, page: int) -> OutboxPage:
    """The actions matching `wanted`, newest first, PAGE_SIZE per page (page 1 first)."""
    where, params = wanted.clause()
    files = state.files() if not (wanted.customer and state.partitioned) else [state.file_of(wanted.customer)]
    total = 0
    rows: list = []
    rules: set = set()
    channels: set = set()
    needed = page * PAGE_SIZE
    for file, db in _files_with((file for file in files if os.path.exists(file.path)), "actions"):
        total += db.execute(f"SELECT count(*) FROM actions WHERE {where}", params).fetchone()[0]
        for (text,) in db.execute(f"SELECT json FROM actions WHERE {where} ORDER BY due_at DESC, rowid DESC "
                                  "LIMIT ?", (*params, needed)):
            rows.append((file.shard, orjson.loads(text)))
        rules.update(r for (r,) in db.execute("SELECT DISTINCT rule FROM actions") if r)
        channels.update(c for (c,) in db.execute(
            "SELECT DISTINCT json_extract(json, '$.channel') FROM actions") if c)
    rows.sort(key=lambda item: item[1].get("due_at") or "", reverse=True)
    pages = max(1, -(-total // PAGE_SIZE))
    return OutboxPage(rows[(page - 1) * PAGE_SIZE:needed], total, page, pages, sorted(rules), sorted(channels))


def find_action(state: StateFiles, key: str) -> tuple[StateFile, dict] | None:
    """The file holding the action `key`, and the action."""
    for file, db in _files_with(state.files(), "actions"):
        row = db.execute("SELECT json FROM actions WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return file, orjson.loads(row[0])
    return None


# -- dead letters ----------------------------------------------------------------------------


def dead_letters(state: StateFiles, page: int) -> tuple[list[dict], int]:
    """One page of dead letters (with `id` as the command line names it: N, or SHARD:N) and the total."""
    letters: list = []
    total = 0
    for file, db in _files_with(state.files(), "dead_letters"):
        total += db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        for id_, source, line_no, raw, error, at in db.execute(
                "SELECT id, source, line_no, raw, error, at FROM dead_letters ORDER BY source, line_no, id LIMIT ?",
                (page * PAGE_SIZE,)):
            name = str(id_) if file.shard is None else f"{file.shard}:{id_}"
            letters.append({"id": name, "shard": file.shard, "source": source, "line_no": line_no, "raw": raw,
                            "error": error, "at": at})
    letters.sort(key=lambda item: (item["source"], item["line_no"], item["id"]))
    return letters[(page - 1) * PAGE_SIZE:page * PAGE_SIZE], total


def last_reload(state: StateFiles) -> dict | None:
    """The rules a runner of this state last loaded or refused (the latest of the shards'), or None
    when no runner has run on it (a replay's state)."""
    records = []
    for _file, db in _files_with(state.files(), "meta"):
        row = db.execute("SELECT value FROM meta WHERE key = ?", (LAST_RELOAD,)).fetchone()
        if row is not None:
            records.append(orjson.loads(row[0]))
    return max(records, key=lambda record: record.get("at") or "", default=None)


def state_format_ok(file: StateFile) -> bool:
    """Whether the file is marked as a rulecrm state (explain's reader refuses anything else)."""
    with reading(file) as db:
        if not _has_table(db, "meta"):
            return False
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        return row is not None and orjson.loads(row[0]) == FORMAT
