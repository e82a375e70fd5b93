"""Rows a store keeps in memory until there are many, then writes in one go, following its transactions."""
from __future__ import annotations

from typing import Any


class Unwritten:
    """Rows by key, kept in memory while fewer than `limit`; a transaction's rows count once it commits.

    The store adds rows as its transaction goes (`add`); they are `pending` until the transaction
    commits (`committed`), and dropped if it rolls back, as SQLite drops what it had written. Once
    `full()`, the store writes every row (`rows()`) inside the transaction about to commit, and memory
    starts over. `in_table` tells whether the table may hold rows too (some were written, or the file
    was opened again), that is, whether a key memory does not know must still be looked up there.
    """

    def __init__(self, limit: int, *, in_table: bool) -> None:
        self.limit = limit
        self.in_table = in_table
        self.committed: dict[str, Any] = {}
        self.pending: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        """The row under `key` in memory (the transaction in progress first), or None."""
        row = self.pending.get(key)
        return self.committed.get(key) if row is None else row

    def add(self, key: str, row: Any) -> None:
        self.pending[key] = row

    def full(self) -> bool:
        return len(self.committed) + len(self.pending) >= self.limit

    def rows(self) -> list[tuple[str, Any]]:
        """Every row in memory, the transaction in progress included (a later row replaces an earlier one)."""
        return list({**self.committed, **self.pending}.items())

    def after_commit(self, *, written: bool) -> None:
        """The transaction committed; `written`: with every row in memory written to the table."""
        if written:
            self.committed.clear()
            self.in_table = True
        else:
            self.committed.update(self.pending)
        self.pending.clear()

    def after_rollback(self) -> None:
        self.pending.clear()
