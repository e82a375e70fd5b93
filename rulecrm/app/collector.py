"""When CPython's cyclic garbage collector runs while sessions are open.

The engine's caches keep tens of thousands of customers' profiles and timers in memory
(`rulecrm.engine.cache`). CPython's automatic collector walks all of them again each time enough
new objects have survived, and the caches' churn makes that happen constantly: it was 21% of the CPU
time of a replay of a million customers, and it found almost nothing, since nothing the engine keeps
forms reference cycles (those come from rare paths, such as an exception kept with its traceback).

So while any session is open, automatic collection is off, and `after_step()` runs a full collection
once the process has used COST_RATIO times as much CPU time since the last one as that one took:
collecting costs at most about 1/COST_RATIO of the run, and cyclic garbage still goes within
seconds. The collector's previous setting comes back when the last session closes.
"""
from __future__ import annotations

import gc
import threading
import time

COST_RATIO = 20  # CPU time between full collections, as a multiple of the last one's cost
MIN_COST = 0.05  # seconds: assumed cost before the first collection (collect after 1 s of CPU at least)

_lock = threading.Lock()
_open_sessions = 0
_was_enabled = False


def pause_automatic() -> None:
    """A session opens: automatic collection is off until every open session has closed."""
    global _open_sessions, _was_enabled
    with _lock:
        if _open_sessions == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _open_sessions += 1


def resume_automatic() -> None:
    """A session closes: the last one to close restores the collector as it was before the first opened."""
    global _open_sessions
    with _lock:
        if _open_sessions == 0:
            return
        _open_sessions -= 1
        if _open_sessions == 0 and _was_enabled:
            gc.enable()


class BudgetedCollector:
    """Full collections paced by their own cost, for a session's steps (see the module's text)."""

    def __init__(self, *, ratio: float | None = None, clock=time.process_time) -> None:
        self._ratio = COST_RATIO if ratio is None else ratio
        self._clock = clock
        self._last_cost = MIN_COST
        self._last_end = clock()
        self.collections = 0

    def after_step(self) -> bool:
        """Collect if the budget allows it now; True when it did."""
        if not _was_enabled:
            return False  # the program had turned the collector off itself: leave it off
        now = self._clock()
        if now - self._last_end < self._ratio * self._last_cost:
            return False
        gc.collect()
        self._last_end = self._clock()
        self._last_cost = max(self._last_end - now, MIN_COST)
        self.collections += 1
        return True
