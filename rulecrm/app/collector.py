"""When CPython's cyclic garbage collector runs while sessions are open.

The engine's caches keep tens of thousands of customers' profiles and timers in memory
(`rulecrm.engine.cache`). CPython's automatic collector walks all of them again each time enough
new objects have survived, and the caches' churn makes that happen constantly: it was 21% of the CPU
time of a replay of a million customers, and it found almost nothing, since nothing the engine keeps
forms reference cycles (those come from rare paths, such as an exception kept with its traceback).
Each of those full collections also stops the process for as long as it takes (40 to 130 ms in a live
runner), which was most of its 99th-percentile latency.

So while any session is open, automatic collection is off, and `after_step()` (shared by every
session of the process) runs:

* a young collection (generations 0 and 1) once YOUNG_AFTER container objects more were made than
  freed: it walks only recent objects, which is where cycles left by a step are, so it takes a few
  milliseconds;
* a full collection once the process has used both FULL_EVERY seconds of CPU time and COST_RATIO
  times as much CPU time as the last full one took, since that one: at most about 1/COST_RATIO of
  the run, and rarely enough that a live runner's latency does not see it.

The collector's previous setting comes back when the last session closes.
"""
from __future__ import annotations

import gc
import threading
import time

COST_RATIO = 20  # CPU time between full collections, as a multiple of the last one's cost
MIN_COST = 0.05  # seconds: assumed cost before the first full collection
FULL_EVERY = 120.0  # seconds of CPU time at least between full collections
YOUNG_AFTER = 20_000  # container objects made (net) since the last collection that start a young one

_lock = threading.Lock()
_open_sessions = 0
_was_enabled = False
_shared: BudgetedCollector | None = None


def pause_automatic() -> BudgetedCollector:
    """A session opens: automatic collection is off until every open session has closed. Returns the
    process's collector, whose `after_step()` the session calls after each step."""
    global _open_sessions, _was_enabled, _shared
    with _lock:
        if _open_sessions == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
            _shared = BudgetedCollector()
        _open_sessions += 1
        assert _shared is not None
        return _shared


def resume_automatic() -> None:
    """A session closes: the last one to close restores the collector as it was before the first opened."""
    global _open_sessions, _shared
    with _lock:
        if _open_sessions == 0:
            return
        _open_sessions -= 1
        if _open_sessions == 0:
            _shared = None
            if _was_enabled:
                gc.enable()


class BudgetedCollector:
    """Young collections by allocations, full ones paced by CPU time and their cost (see the module's text)."""

    def __init__(self, *, ratio: float | None = None, every: float | None = None, young_after: int | None = None,
                 clock=time.process_time) -> None:
        self._ratio = COST_RATIO if ratio is None else ratio
        self._every = FULL_EVERY if every is None else every
        self._young_after = YOUNG_AFTER if young_after is None else young_after
        self._clock = clock
        self._last_cost = MIN_COST
        self._last_end = clock()
        self.collections = 0
        self.young_collections = 0

    def after_step(self) -> bool:
        """Collect what the budget allows now; True when a full collection ran."""
        if not _was_enabled:
            return False  # the program had turned the collector off itself: leave it off
        if gc.get_count()[0] >= self._young_after:
            gc.collect(1)
            self.young_collections += 1
        now = self._clock()
        if now - self._last_end < max(self._ratio * self._last_cost, self._every):
            return False
        gc.collect()
        self._last_end = self._clock()
        self._last_cost = max(self._last_end - now, MIN_COST)
        self.collections += 1
        return True
