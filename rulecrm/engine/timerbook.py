"""The engine's pending timers: scheduling, dropping, cancelling by a later event, and what is due next."""
from __future__ import annotations

from datetime import datetime, timezone

from rulecrm.engine.samekey import same_key
from rulecrm.engine.timers import Timer, TimerQueue


class TimerBook:
    """Timers in firing order, with an index of those a later event cancels (`unless`).

    Every put and delete is noted in `changes` for the next flush; `seq` numbers timers in
    creation order (ties at one instant) and is kept in the store with them.
    """

    def __init__(self, changes) -> None:
        self._queue = TimerQueue()
        self._changes = changes
        self.cancellable: dict[str, dict[str, tuple]] = {}  # customer -> timer key -> (type, same, value)
        self.seq = 0

    def load(self, store) -> None:
        """Restore the stored timers and their creation counter."""
        self.seq = store.get_meta("seq", 0)
        for row in store.iter_timers():
            timer = Timer.from_row(row)
            self._queue.push(timer)
            if timer.payload.get("unless"):
                self.cancellable.setdefault(timer.customer_id, {})[timer.key] = tuple(timer.payload["unless"])

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._queue)

    def __contains__(self, key: str) -> bool:
        return key in self._queue

    def get(self, key: str) -> Timer | None:
        return self._queue.get(key)

    def values(self):
        return self._queue.values()

    def next_due(self) -> float | None:
        """Epoch seconds of the next timer to fire, or None."""
        top = self._queue.peek_order()
        return None if top is None else top[0]

    # -- changing ------------------------------------------------------------------------
    def schedule(self, key, due: datetime, rule_index: int, customer_id: str, payload: dict, unless=None) -> None:
        """Add a timer, replacing any pending one with the same key; `unless`: (event type, same field, value)."""
        self.drop(key)
        self.seq += 1
        if unless is not None:
            payload["unless"] = list(unless)
            self.cancellable.setdefault(customer_id, {})[key] = unless
        timer = Timer(key, due.astimezone(timezone.utc), rule_index, self.seq, customer_id, payload)
        self._queue.push(timer)
        self._changes.timer_put(timer)

    def drop(self, key: str) -> None:
        timer = self._queue.remove(key)
        if timer is not None:
            self._forget(timer)

    def pop_due(self, limit: float, *, inclusive: bool) -> Timer | None:
        """Take the next timer if it is due before `limit` (epoch seconds), or at it when `inclusive`."""
        top = self._queue.peek_order()
        if top is None or top[0] > limit or (top[0] == limit and not inclusive):
            return None
        timer = self._queue.pop()
        self._forget(timer)
        return timer

    def cancel_matching(self, customer_id: str, event) -> int:
        """Drop the customer's timers this event cancels; returns how many."""
        entries = self.cancellable.get(customer_id)
        if not entries:
            return 0
        cancelled = 0
        keys: dict[str, str | None] = {}  # the event's same_key per field, computed once
        for key, (event_type, same, value) in list(entries.items()):
            if event_type != event.type:
                continue
            if same is not None:
                if same not in keys:
                    keys[same] = same_key(event.data.get(same))
                if keys[same] is None or keys[same] != same_key(value):
                    continue
            self.drop(key)
            cancelled += 1
        return cancelled

    def _forget(self, timer: Timer) -> None:
        entries = self.cancellable.get(timer.customer_id)
        if entries:
            entries.pop(timer.key, None)
            if not entries:
                del self.cancellable[timer.customer_id]
        self._changes.timer_deleted(timer.key)
