"""The outbox's depth for `run --metrics`: actions waiting for their channel (`queued`, `failed`), and since when
the oldest `queued` one waits.

The state has no "queued at" time, and its SQLite connection belongs to the runner's thread, so the
runner's thread keeps these figures itself from what it sees: the store's rows when it starts, each
action a committed step queued, and each delivery answer. After every change it publishes plain
numbers (`queued_count`, `failed_count`, `oldest_queued_at`) that a scrape on another thread reads as they are.
It holds one entry (key, time) per queued action: the backlog, not the outbox's history.
"""
from __future__ import annotations

from collections import OrderedDict

QUEUED, FAILED = "queued", "failed"


class OutboxDepth:
    def __init__(self) -> None:
        self._queued_at: OrderedDict[str, float] = OrderedDict()  # in the order queued: the first is the oldest
        self._failed = 0
        # published for other threads: each assignment is atomic, and each figure is whole
        self.queued_count = 0
        self.failed_count = 0
        self.oldest_queued_at: float | None = None

    def load(self, stores, now: float) -> None:
        """Count what the stores hold already; an action queued by an earlier run counts as queued from `now`."""
        for store in stores:
            for row in store.iter_actions(status=QUEUED):
                self._queued_at.setdefault(row["key"], now)
            self._failed += sum(1 for _row in store.iter_actions(status=FAILED))
        self._publish()

    def add_queued(self, keys, now: float) -> None:
        """Actions a step queued, once it committed."""
        for key in keys:
            self._queued_at.setdefault(key, now)
        self._publish()

    def answered(self, key: str, status: str) -> None:
        """A channel's answer was recorded: the action left `queued` (its first attempt) or `failed`, for `status`."""
        if self._queued_at.pop(key, None) is None:
            self._failed = max(0, self._failed - 1)
        if status == FAILED:
            self._failed += 1
        self._publish()

    def _publish(self) -> None:
        self.queued_count = len(self._queued_at)
        self.failed_count = self._failed
        self.oldest_queued_at = next(iter(self._queued_at.values()), None)
