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

    def timer_put(self, timer) -> None:
        self.timers_put[timer.key] = timer
        self.timers_deleted.discard(timer.key)

    def timer_deleted(self, key: str) -> None:
        self.timers_put.pop(key, None)
        self.timers_deleted.add(key)

    def flush(self, store, profiles, *, seq: int, now: datetime | None) -> None:
        """Write every change, the timer counter `seq` and the engine's time; call inside a store transaction."""
        if self.profiles:
            store.put_profiles((cid, profiles[cid].to_dict()) for cid in self.profiles)
        if self.timers_deleted:
            store.delete_timers(self.timers_deleted)
        if self.timers_put:
            store.put_timers(timer.to_row() for timer in self.timers_put.values())
        if self.actions:
            store.put_actions(action.to_dict() for action in self.actions.values())
        store.set_meta("seq", seq)
        store.set_meta("now", now.isoformat() if now else None)
        self.profiles.clear()
        self.actions.clear()
        self.timers_put.clear()
        self.timers_deleted.clear()
