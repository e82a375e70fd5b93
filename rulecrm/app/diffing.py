"""`rulecrm diff`: replay one history under two rule sets and compare the actions they decide, key by key.

Each replay is the real one (`rulecrm.app.replay.replay`, or `replay_partitioned` with partitions) on
a scratch state; its actions stream into a table of a temporary SQLite database instead of being
kept as Python objects. A history of millions of events gives millions of actions per side, so both
outputs live on disk, keyed by action key (SQLite keeps only a bounded page cache in memory), and
the comparison is three indexed joins. Only the per-rule counts and a few examples per rule come
back to Python.

An action appears (its key only in the new output), disappears (only in the old) or changes (same
key, another status or reason). An action whose message or timing changed but not its status is
not a difference: the diff answers "what would the shop have sent, and what not".
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime

import attrs
import orjson

from rulecrm.app.replay import ReplaySummary, replay

APPEAR, DISAPPEAR, CHANGE = "appear", "disappear", "change"
CHANGES = (APPEAR, DISAPPEAR, CHANGE)
EXAMPLES = 3  # examples per rule and kind of difference
ROWS_PER_INSERT = 5_000  # actions buffered before one executemany: bounded memory, few statements
STAGE = "stage"  # lifecycle stage actions, reported after every rule's

_SIDES = ("old", "new")
_SCHEMA = """
CREATE TABLE {side} (
    key TEXT PRIMARY KEY, rule TEXT NOT NULL, customer_id TEXT NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT
) WITHOUT ROWID
"""
_DIFFERENCES = """
CREATE TABLE differences AS
SELECT 'appear' AS change, n.rule, n.customer_id, n.key, n.kind,
       NULL AS old_status, NULL AS old_reason, n.status AS new_status, n.reason AS new_reason
  FROM new n WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.key = n.key)
UNION ALL
SELECT 'disappear', o.rule, o.customer_id, o.key, o.kind, o.status, o.reason, NULL, NULL
  FROM old o WHERE NOT EXISTS (SELECT 1 FROM new n WHERE n.key = o.key)
UNION ALL
SELECT 'change', n.rule, n.customer_id, n.key, n.kind, o.status, o.reason, n.status, n.reason
  FROM old o JOIN new n ON n.key = o.key
 WHERE o.status IS NOT n.status OR o.reason IS NOT n.reason
"""
_COUNTS = "SELECT rule, change, count(*), max(kind = 'stage') FROM differences GROUP BY rule, change"
_EXAMPLES = """
SELECT change, rule, customer_id, key, kind, old_status, old_reason, new_status, new_reason FROM (
    SELECT *, row_number() OVER (PARTITION BY rule, change ORDER BY customer_id, key) AS n FROM differences
) WHERE n <= ? ORDER BY rule, CASE change WHEN 'appear' THEN 0 WHEN 'disappear' THEN 1 ELSE 2 END, customer_id, key
"""


@attrs.frozen
class RuleSetRun:
    """One side of a diff: the rules' path, the rule set loaded from it, and its `--until` (None: the last event)."""

    path: str
    ruleset: object
    until: datetime | None = None

    @property
    def rule_ids(self) -> list[str]:
        return [rule.id for rule in self.ruleset.active_rules]


@attrs.frozen
class Difference:
    """One action that appears, disappears or changes; the side it is missing from has None status and reason."""

    change: str
    rule: str
    customer_id: str
    key: str
    kind: str
    old_status: str | None
    old_reason: str | None
    new_status: str | None
    new_reason: str | None


@attrs.define
class RuleDiff:
    """The differences of one rule (or of the lifecycle's `stage` actions): counts and the first examples."""

    rule: str
    stage: bool = False
    counts: dict = attrs.field(factory=lambda: dict.fromkeys(CHANGES, 0))
    examples: list = attrs.field(factory=list)  # Difference, by change then customer id and key


@attrs.define
class RuleSetDiff:
    old: RuleSetRun
    new: RuleSetRun
    events: str
    old_actions: int = 0
    new_actions: int = 0
    rules_added: list = attrs.field(factory=list)  # rule ids only in the new set
    rules_removed: list = attrs.field(factory=list)  # rule ids only in the old set
    rules: list = attrs.field(factory=list)  # RuleDiff of each rule with differences, in report order
    summaries: tuple = ()  # the two replays' ReplaySummary (old, new)

    @property
    def totals(self) -> dict:
        return {change: sum(rule.counts[change] for rule in self.rules) for change in CHANGES}

    @property
    def differs(self) -> bool:
        return bool(self.rules)


# replays the events file under one side's rules, writing its action JSON lines to a text stream
ReplayInto = Callable[[RuleSetRun, str, object], ReplaySummary]


def diff_replays(old: RuleSetRun, new: RuleSetRun, events_path, replay_into: ReplayInto, *,
                 examples: int = EXAMPLES) -> RuleSetDiff:
    """Replay `events_path` under both rule sets with `replay_into` and compare their actions."""
    report = RuleSetDiff(old=old, new=new, events=str(events_path))
    report.rules_added = [rule for rule in new.rule_ids if rule not in set(old.rule_ids)]
    report.rules_removed = [rule for rule in old.rule_ids if rule not in set(new.rule_ids)]
    with _scratch_database() as db:
        summaries = []
        for side, run in zip(_SIDES, (old, new), strict=True):
            with _ActionsTable(db, side) as table:
                summaries.append(replay_into(run, str(events_path), table))
        report.summaries = tuple(summaries)
        report.old_actions, report.new_actions = (db.execute(f"SELECT count(*) FROM {side}").fetchone()[0]
                                                  for side in _SIDES)
        report.rules = _rule_diffs(db, examples, order=[*new.rule_ids, *report.rules_removed])
    return report


def single_replay(**options) -> ReplayInto:
    """`replay_into` with the single replay on a scratch state; `options`: the rest of `replay`'s."""

    def replay_into(run: RuleSetRun, events_path: str, out) -> ReplaySummary:
        return replay(run.path, events_path, until=run.until, out=out, ruleset=run.ruleset, **options)

    return replay_into


def partitioned_replay(**options) -> ReplayInto:
    """`replay_into` with the partitioned replay on a temporary partitioned state; `options`: the rest of
    `replay_partitioned`'s (`partitions`, `tasks`, ...)."""
    from rulecrm.app.partitioned_replay import replay_partitioned

    def replay_into(run: RuleSetRun, events_path: str, out) -> ReplaySummary:
        return replay_partitioned(run.path, events_path, until=run.until, out=out, ruleset=run.ruleset, **options)

    return replay_into


@contextlib.contextmanager
def _scratch_database() -> Iterator[sqlite3.Connection]:
    # "": SQLite's private temporary database on disk, removed when closed; it spills to disk past its cache
    db = sqlite3.connect("", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")  # nothing to recover: the diff is recomputed after a failure
        db.execute("PRAGMA synchronous = OFF")
        for side in _SIDES:
            db.execute(_SCHEMA.format(side=side))
        yield db
    finally:
        db.close()


class _ActionsTable:
    """The text stream a replay writes its action JSON lines to, which stores them keyed by action key.

    A key is reported once per replay; were one reported again, its last report (its final status) wins.
    """

    def __init__(self, db: sqlite3.Connection, side: str):
        self._db = db
        self._insert = (f"INSERT OR REPLACE INTO {side} (key, rule, customer_id, kind, status, reason) "
                        "VALUES (?, ?, ?, ?, ?, ?)")
        self._rows: list[tuple] = []

    def __enter__(self) -> _ActionsTable:
        self._db.execute("BEGIN")
        return self

    def __exit__(self, kind, _value, _traceback) -> None:
        if kind is not None:
            self._db.execute("ROLLBACK")
            return
        self._flush()
        self._db.execute("COMMIT")

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line:
                action = orjson.loads(line)
                self._rows.append((action["key"], action["rule"], action.get("customer_id") or "", action["kind"],
                                   action["status"], action.get("reason")))
        if len(self._rows) >= ROWS_PER_INSERT:
            self._flush()

    def flush(self) -> None:  # a text stream's; the rows are flushed in batches and at the end
        pass

    def _flush(self) -> None:
        self._db.executemany(self._insert, self._rows)
        self._rows.clear()


def _rule_diffs(db: sqlite3.Connection, examples: int, order: list[str]) -> list[RuleDiff]:
    db.execute(_DIFFERENCES)
    rules: dict[str, RuleDiff] = {}
    for rule, change, count, stage in db.execute(_COUNTS):
        entry = rules.setdefault(rule, RuleDiff(rule))
        entry.counts[change] = count
        entry.stage = entry.stage or bool(stage)
    for row in db.execute(_EXAMPLES, (examples,)):
        rules[row[1]].examples.append(Difference(*row))
    position = {rule: n for n, rule in enumerate(order)}

    def report_order(entry: RuleDiff):
        # the rule files' order; actions of no rule of either set (the lifecycle's) after; stage actions last
        return entry.stage, position.get(entry.rule, len(order)), entry.rule

    return sorted(rules.values(), key=report_order)
