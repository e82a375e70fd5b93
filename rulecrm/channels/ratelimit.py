"""Per-channel send budgets: wait rather than exceed a provider's messages-per-minute limit."""
from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable

from rulecrm.app.stopping import Interrupted

WINDOW = 60.0  # seconds: limits are declared per minute
STOP_POLL = 0.1  # with a `stop`, waits are cut in slices this long to look at it


class RateLimiter:
    """At most `per_minute` sends per bucket in any 60 s; `acquire` sleeps until a send is allowed.

    A bucket is one shared budget, e.g. (channel type, robot key). This is the token bucket whose
    tokens come back exactly 60 s after they were spent: bursts up to the limit go out at once,
    and no 60 s window ever holds more than `per_minute` sends (a bucket refilled continuously
    would let a burst plus the refill exceed what the provider counts in its own minute).
    `clock` and `sleep` are injectable so tests run without waiting. With `stop`, a wait looks at it
    every STOP_POLL seconds and raises Interrupted once it is true, with no token spent: a runner
    asked to stop does not sit out the rest of a minute (the send stays `queued`).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 stop: Callable[[], bool] | None = None):
        self._clock = clock
        self._sleep = sleep
        self._stop = stop
        self._spent: dict[Hashable, deque] = {}
        self.waited = 0.0  # total seconds spent waiting (for reports and tests)

    def delay(self, bucket: Hashable, per_minute: int | None, units: int = 1) -> float:
        """Seconds to wait before `units` more sends in `bucket` are allowed (0: now)."""
        if not per_minute:
            return 0.0
        spent = self._spent.get(bucket)
        if spent is None:
            return 0.0
        now = self._clock()
        while spent and spent[0] <= now - WINDOW:
            spent.popleft()
        units = min(units, per_minute)
        if len(spent) + units <= per_minute:
            return 0.0
        return spent[len(spent) + units - per_minute - 1] + WINDOW - now

    def acquire(self, bucket: Hashable, per_minute: int | None, units: int = 1) -> float:
        """Wait until `units` sends are allowed, then spend the tokens; returns the seconds waited."""
        if not per_minute or per_minute < 1:
            return 0.0
        waited = 0.0
        while True:
            wait = self.delay(bucket, per_minute, units)
            if wait <= 0:
                break
            if self._stop is not None:
                if self._stop():
                    self.waited += waited
                    raise Interrupted(f"stopping: {wait:.1f}s were left to wait for a send token")
                wait = min(wait, STOP_POLL)
            self._sleep(wait)
            waited += wait
        now = self._clock()
        self._spent.setdefault(bucket, deque()).extend([now] * units)
        self.waited += waited
        return waited

    def settle(self, bucket: Hashable, units: int = 1) -> None:
        """Count the last `units` tokens from now, when the send finished.

        A provider counts messages when they arrive, which is after the send started: a token whose
        minute began at the start could come back a little before the provider's minute is over.
        """
        spent = self._spent.get(bucket)
        if not spent:
            return
        now = self._clock()
        for index in range(max(0, len(spent) - units), len(spent)):
            spent[index] = now

    @contextlib.contextmanager
    def slot(self, bucket: Hashable, per_minute: int | None, units: int = 1):
        """Hold `units` sends of `bucket` for the duration of a send (waiting first if needed)."""
        self.acquire(bucket, per_minute, units)
        try:
            yield
        finally:
            if per_minute:
                self.settle(bucket, min(units, per_minute))
