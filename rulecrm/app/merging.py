"""The last phase of a partitioned replay: merge what the partitions reported into one output.

Each partition task writes a part file (an SQLite database of its own): its actions as the JSON
lines a replay writes, numbered in the order they were decided, and the lines it rejected. The
merged output lists the actions grouped by customer id in code-point order, each customer's in
the order they were decided. Customers are disjoint across partitions, so once each part is read
in (customer id, decision number) order, `heapq.merge` on the customer id gives that order with
one row per partition in memory; SQLite sorts a part through an index, on disk when it is large.
The order depends on neither the number of partitions nor the workers: it is a single replay's
output stably sorted by customer id.
"""
from __future__ import annotations

import contextlib
import heapq
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from operator import itemgetter

import orjson

from rulecrm.app.replay import ReplaySummary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (customer_id TEXT NOT NULL, seq INTEGER NOT NULL, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (n INTEGER PRIMARY KEY, line_no INTEGER NOT NULL, error TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rejections_line ON rejections (line_no);
"""
_ORDER_INDEX = "CREATE INDEX IF NOT EXISTS actions_order ON actions (customer_id, seq)"


class PartFile:
    """A partition's part file, written by its tasks (one after the other) and read by the merge."""

    def __init__(self, path: str):
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        # a scratch file: if a task dies the run fails and the file is removed, so no journal
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)
        self._seq = self._db.execute("SELECT coalesce(max(seq), 0) FROM actions").fetchone()[0]
        self._rows: list[tuple[str, int, str]] | None = None  # a batch's actions, inserted at its end

    # -- written by a partition task -----------------------------------------------------

    def add(self, record: dict) -> None:
        """One action's public dict, kept as the JSON line a replay writes (this is `ActionWriter`'s sink)."""
        self._seq += 1
        row = (record.get("customer_id") or "", self._seq, orjson.dumps(record).decode())
        if self._rows is not None:
            self._rows.append(row)
        else:
            self._insert([row])

    def _insert(self, rows) -> None:
        self._db.executemany("INSERT INTO actions (customer_id, seq, line) VALUES (?, ?, ?)", rows)

    def reject(self, line_no: int, error: str) -> None:
        """A line the partition did not apply, once per line (0: a timer, each time)."""
        self._db.execute("INSERT INTO rejections (line_no, error) SELECT ?, ? WHERE ? = 0 OR NOT EXISTS "
                         "(SELECT 1 FROM rejections WHERE line_no = ?)", (line_no, error, line_no, line_no))

    @contextlib.contextmanager
    def batch(self):
        """One transaction for the rows written inside (a row per transaction would sync the file each
        time); the actions are inserted together at the end."""
        self._db.execute("BEGIN")
        self._rows = []
        try:
            yield self
            self._insert(self._rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._rows = None
        self._db.execute("COMMIT")

    def finish(self) -> None:
        """Index the actions in merge order (once every action is in: a bulk index is the cheap way)."""
        self._db.execute(_ORDER_INDEX)

    # -- read by the merge ---------------------------------------------------------------

    def ordered_actions(self) -> Iterator[tuple[str, str]]:
        """(customer id, JSON line) in (customer id, decision number) order, streamed by the cursor."""
        yield from self._db.execute("SELECT customer_id, line FROM actions ORDER BY customer_id, seq")

    def rejections(self) -> Iterator[tuple[int, str]]:
        """(line number, error) in line order (timers, numbered 0, first)."""
        yield from self._db.execute("SELECT line_no, error FROM rejections ORDER BY line_no, n")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PartFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def merge_actions(part_paths: Iterable[str], out) -> int:
    """Write every part's actions to the text stream `out` in the merged order; how many."""
    with contextlib.ExitStack() as parts:
        opened = [parts.enter_context(PartFile(path)) for path in part_paths]
        written = 0
        for _customer_id, line in heapq.merge(*(part.ordered_actions() for part in opened), key=itemgetter(0)):
            if out is not None:
                out.write(line + "\n")
            written += 1
        return written


def merge_rejections(part_paths: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Every part's rejected lines, (line number, error) in line order."""
    with contextlib.ExitStack() as parts:
        opened = [parts.enter_context(PartFile(path)) for path in part_paths]
        yield from heapq.merge(*(part.rejections() for part in opened), key=itemgetter(0))


def add_counts(summary: ReplaySummary, counts: dict, actions: Counter) -> None:
    """Add one partition task's counts (ReplaySummary field -> number) and action statuses."""
    for name, value in counts.items():
        setattr(summary, name, getattr(summary, name) + value)
    summary.actions.update(actions)
