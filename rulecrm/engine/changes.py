"""What the engine changed since its last flush (profiles, actions, timers), written to the store in one go."""
from __future__ import annotations

from datetime import datetime


class Changes:
    """Dirty sets the engine's parts add to as they work; `flush` writes them and starts over.

    The sets are public so that the hot path adds to them without a call per change.
    """

    def __init__(self) -> None:
        self.profiles: set[str] = set()  # customer ids
        self.actions: dict = {}  # key -> the action's latest value
        self.timers_put: dict = {}  # key -> Timer
        self.timers_deleted: set[str] = set()
        self.actions_written = 0  # actions flushed so far: from then on the store may know a key

    def timer_put(self, timer) -> None:
        self.timers_put[timer.key] = timer
        self.timers_deleted.discard(timer.key)

    def timer_deleted(self, key: str) -> None:
        self.timers_put.pop(key, None)
        self.timers_deleted.add(key)

    def flush_timers(self, store) -> None:
        """Write the timer changes alone (before reading timers back from the store, in the same transaction)."""
        if self.timers_deleted:
            store.delete_timers(self.timers_deleted)
            self.timers_deleted.clear()
        if self.timers_put:
            store.put_timers(timer.to_row() for timer in self.timers_put.values())
            self.timers_put.clear()

    def flush(self, store, profile_of, *, seq: int, now: datetime | None) -> None:
        """Write every change, the timer counter `seq` and the engine's time; call inside a store transaction.

        `profile_of(customer_id)` gives the changed profiles (they are in the engine's cache).
        """
        if self.profiles:
            store.put_profiles((cid, profile_of(cid).to_dict()) for cid in self.profiles)
        self.flush_timers(store)
        if self.actions:
            store.put_outbox(self.actions.values())
            self.actions_written += len(self.actions)
        store.set_meta("seq", seq)
        store.set_meta("now", now.isoformat() if now else None)
        self.profiles.clear()
        self.actions.clear()
