"""Per-channel send budgets: wait rather than exceed a provider's messages-per-minute limit."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable

WINDOW = 60.0  # seconds: limits are declared per minute


class RateLimiter:
    """At most `per_minute` sends per bucket in any 60 s; `acquire` sleeps until a send is allowed.

    A bucket is one shared budget, e.g. (channel type, robot key). This is the token bucket whose
    tokens come back exactly 60 s after they were spent: bursts up to the limit go out at once,
    and no 60 s window ever holds more than `per_minute` sends (a bucket refilled continuously
    would let a burst plus the refill exceed what the provider counts in its own minute).
    `clock` and `sleep` are injectable so tests run without waiting.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self._spent: dict[Hashable, deque] = {}
        self.waited = 0.0  # total seconds spent waiting (for reports and tests)

    def delay(self, bucket: Hashable, per_minute: int | None) -> float:
        """Seconds to wait before the next send in `bucket` is allowed (0: now)."""
        if not per_minute:
            return 0.0
        spent = self._spent.get(bucket)
        if spent is None:
            return 0.0
        now = self._clock()
        while spent and spent[0] <= now - WINDOW:
            spent.popleft()
        if len(spent) < per_minute:
            return 0.0
        return spent[0] + WINDOW - now

    def acquire(self, bucket: Hashable, per_minute: int | None) -> float:
        """Wait until a send is allowed, then spend one token; returns the seconds waited."""
        if not per_minute or per_minute < 1:
            return 0.0
        waited = 0.0
        while True:
            wait = self.delay(bucket, per_minute)
            if wait <= 0:
                break
            self._sleep(wait)
            waited += wait
        self._spent.setdefault(bucket, deque()).append(self._clock())
        self.waited += waited
        return waited
