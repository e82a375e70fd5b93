"""Pending timers in event time, ordered by (due, rule order, creation order), replaceable by key."""
from __future__ import annotations

import heapq
from datetime import datetime
from typing import Any

import attrs


@attrs.frozen
class Timer:
    key: str  # replacing or cancelling a timer goes by its key
    due: datetime
    rule_index: int  # ties at one instant: rule order in the files, then creation order
    seq: int
    customer_id: str
    payload: dict[str, Any]

    @property
    def order(self) -> tuple[float, int, int]:
        return (self.due.timestamp(), self.rule_index, self.seq)


class TimerQueue:
    """A heap with lazy deletion: a popped entry whose timer was replaced or removed is skipped."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, str]] = []
        self._live: dict[str, Timer] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: str) -> bool:
        return key in self._live

    def get(self, key: str) -> Timer | None:
        return self._live.get(key)

    def push(self, timer: Timer) -> None:
        self._live[timer.key] = timer
        heapq.heappush(self._heap, (*timer.order, timer.key))
        if len(self._heap) > 2 * len(self._live) + 1024:
            # Replaced timers leave stale entries; rebuild so the heap stays proportional to live timers.
            self._heap = [(*t.order, t.key) for t in self._live.values()]
            heapq.heapify(self._heap)

    def remove(self, key: str) -> Timer | None:
        return self._live.pop(key, None)

    def peek_order(self) -> tuple[float, int, int] | None:
        self._drop_stale()
        return self._heap[0][:3] if self._heap else None

    def pop(self) -> Timer:
        self._drop_stale()
        *_, key = heapq.heappop(self._heap)
        return self._live.pop(key)

    def values(self):
        return self._live.values()

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            due, rule_index, seq, key = heap[0]
            timer = self._live.get(key)
            if timer is not None and timer.seq == seq:
                return
            heapq.heappop(heap)
