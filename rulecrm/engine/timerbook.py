"""The engine's pending timers: scheduling, dropping, cancelling by a later event, and what is due next.

Timers live in the store; memory holds two bounded views of them (docs/running.md, "Memory"):

* a *window* of the next due timers, in firing order, refilled from the store's index when it runs
  dry. Every pending timer whose order is at or before `_horizon` is in the window; later ones are
  only in the store (or in `changes`, not yet written), so firing order is exactly the store's order
  (due, rule order, creation order).
* each recently used customer's timers, by key, with their due time and what cancels them: an
  event cancels its customer's timers, and the lifecycle compares the stage timer's due time. A
  customer's entry is always loaded before their timers change, and entries leave memory only right
  after a flush, so an entry is never older than the store plus `changes`.
"""
from __future__ import annotations

from datetime import datetime, timezone
from operator import attrgetter

from rulecrm.engine.cache import RecentCache
from rulecrm.engine.samekey import same_key
from rulecrm.engine.timers import Timer, TimerQueue

WINDOW = 5_000  # timers read from the store per refill (each holds its trigger event in memory)
_EVERYTHING = (float("inf"), 0, 0)  # a horizon past every timer: the window holds all of them

Order = tuple[float, int, int]  # (due epoch, rule index, creation number): unique per timer
_firing_order = attrgetter("order")


class TimerBook:
    """Pending timers in firing order, with each customer's timers for cancelling and replacing.

    Every put and delete is noted in `changes` for the next flush; `seq` numbers timers in
    creation order (ties at one instant) and is kept in the store with them.
    """

    def __init__(self, changes, store, *, window: int | None = None, cache_capacity: int | None = None) -> None:
        self._changes = changes
        self._store = store
        self._window_size = window or WINDOW
        self._window = TimerQueue()
        self._horizon: Order | None = None  # None: nothing read from the store yet
        # customer -> {timer key: (order, cancelled by (type, same field, value) or None)}
        self._customers: RecentCache[dict] = RecentCache(self._load_customer, cache_capacity)
        self.seq = 0

    def load(self) -> None:
        """Start from the store: its creation counter; timers are read when first needed."""
        self.seq = self._store.get_meta("seq", 0)
        self.release()

    def release(self) -> None:
        """Forget what is held in memory (at load, and when the engine closes); the store keeps every timer."""
        self._window = TimerQueue()
        self._horizon = None
        self._customers.clear()

    def _load_customer(self, customer_id: str) -> dict:
        return {
            key: ((due, rule_index, seq), _unless(payload))
            for key, due, rule_index, seq, _cid, payload in self._store.timers_for(customer_id)
        }

    def full(self) -> bool:
        """Whether the customers' timer entries outgrew their cache (flush, then trim)."""
        return self._customers.full()

    def trim(self) -> None:
        """After a flush: let the least recently used customers' timer entries go."""
        self._customers.trim()

    # -- reading -------------------------------------------------------------------------
    def due_of(self, customer_id: str, key: str) -> float | None:
        """Epoch seconds at which the customer's timer `key` is due, or None when it is not pending."""
        entry = self._customers.get(customer_id).get(key)
        return None if entry is None else entry[0][0]

    def next_due(self) -> float | None:
        """Epoch seconds of the next timer to fire, or None."""
        top = self._peek()
        return None if top is None else top[0]

    def all_pending(self) -> list[Timer]:
        """Every pending timer in firing order, read from the store and the unwritten changes (for tools)."""
        changes = self._changes
        timers = {
            row[0]: Timer.from_row(row) for row in self._store.iter_timers() if row[0] not in changes.timers_deleted
        }
        timers.update(changes.timers_put)
        return sorted(timers.values(), key=lambda timer: timer.order)

    # -- changing ------------------------------------------------------------------------
    def schedule(self, key, due: datetime, rule_index: int, customer_id: str, payload: dict, unless=None) -> None:
        """Add a timer, replacing any pending one with the same key; `unless`: (event type, same field, value)."""
        entries = self._customers.get(customer_id)
        if key in entries:
            self._drop(entries, key)
        self.seq += 1
        if unless is not None:
            payload["unless"] = list(unless)
        timer = Timer(key, due.astimezone(timezone.utc), rule_index, self.seq, customer_id, payload)
        order = timer.order
        entries[key] = (order, unless)
        self._changes.timer_put(timer)
        if self._horizon is not None and order <= self._horizon:
            self._window.push(timer)
            if len(self._window) > 2 * self._window_size:
                self._shrink_window()

    def drop(self, customer_id: str, key: str) -> None:
        entries = self._customers.get(customer_id)
        if key in entries:
            self._drop(entries, key)

    def _drop(self, entries: dict, key: str) -> None:
        del entries[key]
        self._window.remove(key)
        self._changes.timer_deleted(key)

    def pop_due(self, limit: float, *, inclusive: bool) -> Timer | None:
        """Take the next timer if it is due before `limit` (epoch seconds), or at it when `inclusive`."""
        top = self._peek()
        if top is None or top[0] > limit or (top[0] == limit and not inclusive):
            return None
        timer = self._window.pop()
        self._customers.get(timer.customer_id).pop(timer.key, None)
        self._changes.timer_deleted(timer.key)
        return timer

    def cancel_matching(self, customer_id: str, event) -> int:
        """Drop the customer's timers this event cancels; returns how many."""
        entries = self._customers.get(customer_id)
        if not entries:
            return 0
        cancelled = 0
        keys: dict[str, str | None] = {}  # the event's same_key per field, computed once
        for key, (_order, unless) in list(entries.items()):
            if unless is None:
                continue
            event_type, same, value = unless
            if event_type != event.type:
                continue
            if same is not None:
                if same not in keys:
                    keys[same] = same_key(event.data.get(same))
                if keys[same] is None or keys[same] != same_key(value):
                    continue
            self._drop(entries, key)
            cancelled += 1
        return cancelled

    # -- the window ------------------------------------------------------------------------
    def _peek(self) -> Order | None:
        top = self._window.peek_order()
        while top is None and self._horizon != _EVERYTHING:  # a refill can find nothing still pending
            self._refill()
            top = self._window.peek_order()
        return top

    def _refill(self) -> None:
        """Take the next timers after the horizon: the store's, seen through the changes not written yet.

        The store is read as of the last flush. A timer put since replaces its row (it may now be due
        earlier or later), and a timer deleted since (fired, dropped or replaced) hides it. Reading
        through the changes rather than writing them first means a step writes each timer once,
        however often the window runs dry: a timer made and fired, or rescheduled, within one step is
        never written at all.
        """
        put, deleted = self._changes.timers_put, self._changes.timers_deleted
        after = self._horizon
        rows = self._store.timers_after(after, self._window_size)
        # the store's rows say nothing of what comes after the last of them: the horizon stops there
        horizon = (rows[-1][1], rows[-1][2], rows[-1][3]) if len(rows) == self._window_size else _EVERYTHING
        stretch = [Timer.from_row(row) for row in rows if row[0] not in put and row[0] not in deleted]
        for timer in put.values():  # unwritten timers in the new stretch (earlier ones are in the window)
            order = timer.order
            if (after is None or order > after) and order <= horizon:
                stretch.append(timer)
        if len(stretch) > self._window_size:
            # Many unwritten timers (a long step): the window takes the first of them only, and the
            # horizon stops at the last one taken. Taking all would hold them in memory, and the next
            # schedule would shrink the window back at once.
            stretch.sort(key=_firing_order)
            del stretch[self._window_size:]
            horizon = stretch[-1].order
        self._window.push_many(stretch)
        self._horizon = horizon

    def _shrink_window(self) -> None:
        """Keep the first WINDOW timers in memory; the later ones are in `changes` or the store already."""
        kept = self._window.first(self._window_size)
        self._window = TimerQueue.of_sorted(kept)
        self._horizon = kept[-1].order


def _unless(payload: dict) -> tuple | None:
    unless = payload.get("unless")
    return tuple(unless) if unless else None
