"""When CPython's cyclic garbage collector runs while sessions are open.

The engine's caches keep tens of thousands of customers' profiles and timers in memory
(`rulecrm.engine.cache`). CPython's automatic *full* collections walk all of them again each time
enough objects have survived into the oldest generation, and the caches' churn makes that happen
constantly: it was 21% of the CPU time of a replay of a million customers, and it found almost
nothing, since nothing the engine keeps forms reference cycles. Each full collection also stops the
process for as long as it takes (40 to 130 ms in a live runner), which was most of its
99th-percentile latency.

Young collections are another matter: they walk only objects made since the last one, and that is
where cyclic garbage is. Some libraries make a great deal of it (durable-rules leaves hundreds of
objects in cycles per fact asserted: about 4 million per replay step of the CDNOW file), so young
collections must keep running *during* a step, not only between steps: gathered up at a step's
end, that garbage took 22% of a replay's time and hundreds of megabytes.

So while any session is open, CPython's automatic collection stays on for the young generations
(their thresholds are left as they are) and never starts a full one (the oldest generation's
threshold is raised out of reach). `after_step()` (shared by every session of the process) runs a
full collection once the process has used both FULL_EVERY seconds of CPU time and COST_RATIO times
as much CPU time as the last full one took, since that one: at most about 1/COST_RATIO of the run,
and rarely enough that a live runner's latency does not see it.

The collector's previous setting comes back when the last session closes. A program that turned
the collector off itself keeps it off.
"""
from __future__ import annotations

import gc
import threading
import time

COST_RATIO = 20  # CPU time between full collections, as a multiple of the last one's cost
MIN_COST = 0.05  # seconds: assumed cost before the first full collection
FULL_EVERY = 120.0  # seconds of CPU time at least between full collections
NO_AUTOMATIC_FULL = 1 << 30  # the oldest generation's threshold while sessions are open: never reached

_lock = threading.Lock()
_open_sessions = 0
_was_enabled = False
_previous_thresholds: tuple[int, ...] = ()
_shared: BudgetedCollector | None = None


def pause_automatic() -> BudgetedCollector:
    """A session opens: automatic full collections are off until every open session has closed (young
    ones go on). Returns the process's collector, whose `after_step()` the session calls after each step."""
    global _open_sessions, _was_enabled, _previous_thresholds, _shared
    with _lock:
        if _open_sessions == 0:
            _was_enabled = gc.isenabled()
            _previous_thresholds = gc.get_threshold()
            young, middle = _previous_thresholds[:2]
            gc.set_threshold(young, middle, NO_AUTOMATIC_FULL)
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
            gc.set_threshold(*_previous_thresholds)


class BudgetedCollector:
    """Full collections paced by CPU time and their cost (see the module's text)."""

    def __init__(self, *, ratio: float | None = None, every: float | None = None, clock=time.process_time) -> None:
        self._ratio = COST_RATIO if ratio is None else ratio
        self._every = FULL_EVERY if every is None else every
        self._clock = clock
        self._last_cost = MIN_COST
        self._last_end = clock()
        self.collections = 0

    def after_step(self) -> bool:
        """Run a full collection if the budget allows one now; True when it ran."""
        if not _was_enabled:
            return False  # the program had turned the collector off itself: leave it off
        now = self._clock()
        if now - self._last_end < max(self._ratio * self._last_cost, self._every):
            return False
        gc.collect()
        self._last_end = self._clock()
        self._last_cost = max(self._last_end - now, MIN_COST)
        self.collections += 1
        return True
