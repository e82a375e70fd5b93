"""Pending timers in event time, ordered by (due, rule order, creation order), replaceable by key."""
from __future__ import annotations

import heapq
from datetime import datetime, timezone
from typing import Any

import attrs
import orjson

from rulecrm.engine.enums import TimerKind
from rulecrm.events import Event
from rulecrm.timeutil import parse_timestamp


@attrs.frozen
class Timer:
    key: str  # replacing or cancelling a timer goes by its key
    due: datetime
    rule_index: int  # ties at one instant: rule order in the files, then creation order
    seq: int
    customer_id: str
    payload: dict[str, Any]  # "type" (a TimerKind) and what that kind needs; see Engine's _fire_* methods
    # (due epoch, rule order, creation order): the firing order, computed once because the window's
    # heap and the store's reads compare it many times per timer
    order: tuple[float, int, int] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "order", (self.due.timestamp(), self.rule_index, self.seq))

    def to_row(self) -> tuple:
        """The store's row: (key, due epoch, rule_index, seq, customer_id, JSON-ready payload).

        The payload keeps the exact due time (the epoch is for ordering) and the trigger event's JSON.
        """
        payload = {**self.payload, "type": str(self.payload["type"]), "due": self.due.isoformat()}
        if "event" in payload:
            payload["event"] = orjson.dumps(payload["event"].to_dict()).decode()
        return (self.key, self.due.timestamp(), self.rule_index, self.seq, self.customer_id, payload)

    @classmethod
    def from_row(cls, row) -> "Timer":
        key, _due, rule_index, seq, customer_id, payload = row
        due = parse_timestamp(payload["due"], timezone.utc).astimezone(timezone.utc)
        payload = {**payload, "type": TimerKind(payload["type"])}
        if "event" in payload:
            payload["event"] = Event.from_stored(orjson.loads(payload["event"]))
        return cls(key, due, rule_index, seq, customer_id, payload)


class TimerQueue:
    """A heap with lazy deletion: a popped entry whose timer was replaced or removed is skipped."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, str]] = []
        self._live: dict[str, Timer] = {}

    @classmethod
    def of_sorted(cls, timers: list[Timer]) -> "TimerQueue":
        """A queue of these timers, given in firing order (a sorted list is already a heap)."""
        queue = cls()
        queue._heap = [(*timer.order, timer.key) for timer in timers]
        queue._live = {timer.key: timer for timer in timers}
        return queue

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

    def push_many(self, timers) -> None:
        """Add timers in any order at once (a refill of the window): one heapify rather than a push each."""
        live, heap = self._live, self._heap
        for timer in timers:
            live[timer.key] = timer
            heap.append((*timer.order, timer.key))
        if len(heap) > 2 * len(live) + 1024:
            heap[:] = [(*t.order, t.key) for t in live.values()]
        heapq.heapify(heap)

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

    def first(self, count: int) -> list[Timer]:
        """The `count` timers that fire first, in order."""
        # the heap's entries sort as plain tuples, without a key function per timer; stale entries
        # (a replaced or removed timer) are passed over as `pop` does
        live, taken = self._live, {}
        for _due, _rule_index, seq, key in sorted(self._heap):
            timer = live.get(key)
            if timer is not None and timer.seq == seq and key not in taken:
                taken[key] = timer
                if len(taken) == count:
                    break
        return list(taken.values())

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            due, rule_index, seq, key = heap[0]
            timer = self._live.get(key)
            if timer is not None and timer.seq == seq:
                return
            heapq.heappop(heap)
