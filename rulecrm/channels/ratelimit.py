"""Per-channel send budgets: wait rather than exceed a provider's messages-per-minute limit."""
from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from rulecrm.app.stopping import Interrupted

WINDOW = 60.0  # seconds: limits are declared per minute
STOP_POLL = 0.1  # with a `stop`, waits are cut in slices this long to look at it
IN_PROGRESS_POLL = 0.05  # seconds between looks while only sends in progress hold the tokens needed
_IN_PROGRESS = "sending"  # the second item of a token whose send has not ended (see `settle`)


class RateLimiter:
    """At most `per_minute` sends per bucket in any 60 s; `acquire` sleeps until a send is allowed.

    A bucket is one shared budget, e.g. (channel type, robot key). This is the token bucket whose
    tokens come back exactly 60 s after they were spent: bursts up to the limit go out at once,
    and no 60 s window ever holds more than `per_minute` sends (a bucket refilled continuously
    would let a burst plus the refill exceed what the provider counts in its own minute).
    `clock` and `sleep` are injectable so tests run without waiting. With `stop`, a wait looks at it
    every STOP_POLL seconds and raises Interrupted once it is true, with no token spent: a runner
    asked to stop does not sit out the rest of a minute (the send stays `queued`).

    Senders of one bucket may run on several threads (concurrent delivery): each bucket has a lock
    under which a sender looks for a token and spends it in one step, so the count stays exact. The
    lock is not held while waiting; who waits first is served first is the lanes' business
    (`rulecrm.channels.lanes`).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 stop: Callable[[], bool] | None = None):
        self._clock = clock
        self._sleep = sleep
        self._stop = stop
        # bucket -> tokens in time order: [time] once settled, [time taken, _IN_PROGRESS] while sending
        self._spent: dict[Hashable, deque] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.waited = 0.0  # total seconds spent waiting (for reports and tests)

    def _lock(self, bucket: Hashable) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(bucket)
            if lock is None:
                lock = self._locks[bucket] = threading.Lock()
            return lock

    def delay(self, bucket: Hashable, per_minute: int | None, units: int = 1) -> float:
        """Seconds to wait before `units` more sends in `bucket` are allowed (0: now)."""
        if not per_minute:
            return 0.0
        with self._lock(bucket):
            return self._delay(bucket, per_minute, units)

    def _delay(self, bucket: Hashable, per_minute: int, units: int) -> float:
        spent = self._spent.get(bucket)
        if spent is None:
            return 0.0
        now = self._clock()
        # A token of a send still in progress (taken, not settled) has not started its minute: it
        # counts from the send's end, whenever that is, so it never expires before it is settled.
        while spent and spent[0][0] <= now - WINDOW and len(spent[0]) == 1:
            spent.popleft()
        counted = spent  # in time order
        if spent and spent[0][0] <= now - WINDOW:  # a send older than a minute is still in progress
            counted = [token for token in spent if len(token) > 1 or token[0] > now - WINDOW]
        units = min(units, per_minute)
        excess = len(counted) + units - per_minute
        if excess <= 0:
            return 0.0
        for token in counted:  # the settled tokens, oldest first: the excess-th to expire frees enough
            if len(token) == 1:
                excess -= 1
                if excess == 0:
                    return token[0] + WINDOW - now
        return IN_PROGRESS_POLL  # only sends still in progress hold the tokens needed: look again

    def acquire(self, bucket: Hashable, per_minute: int | None, units: int = 1) -> float:
        """Wait until `units` sends are allowed, then spend the tokens, counted from now; returns the
        seconds waited."""
        waited, tokens = self.take(bucket, per_minute, units)
        self.settle(bucket, tokens)
        return waited

    def take(self, bucket: Hashable, per_minute: int | None, units: int) -> tuple[float, list]:
        """Wait and spend like `acquire`, for a send that starts now: its tokens count as in use until
        `settle(bucket, tokens)` says when it ended. Returns the seconds waited and the tokens."""
        if not per_minute or per_minute < 1:
            return 0.0, []
        waited = 0.0
        while True:
            with self._lock(bucket):  # the check and the spending are one step; the sleep is outside
                wait = self._delay(bucket, per_minute, units)
                if wait <= 0:
                    now = self._clock()
                    tokens = [[now, _IN_PROGRESS] for _ in range(min(units, per_minute))]
                    self._spent.setdefault(bucket, deque()).extend(tokens)
                    self.waited += waited
                    return waited, tokens
            if self._stop is not None:
                if self._stop():
                    self.waited += waited
                    raise Interrupted(f"stopping: {wait:.1f}s were left to wait for a send token")
                wait = min(wait, STOP_POLL)
            self._sleep(wait)
            waited += wait

    def settle(self, bucket: Hashable, tokens: list) -> None:
        """Count these tokens from now, when the send that spent them finished.

        A provider counts messages when they arrive, which is after the send started: a token whose
        minute began at the start could come back a little before the provider's minute is over.
        Concurrent sends finish in any order, so the bucket is put back in time order.
        """
        if not tokens:
            return
        with self._lock(bucket):
            now = self._clock()
            for token in tokens:
                token[0] = now
                del token[1:]  # settled: its minute runs from now
            spent = self._spent.get(bucket)
            if spent:
                self._spent[bucket] = deque(sorted(spent, key=lambda token: token[0]))

    @contextlib.contextmanager
    def slot(self, bucket: Hashable, per_minute: int | None, units: int = 1):
        """Hold `units` sends of `bucket` for the duration of a send (waiting first if needed)."""
        _waited, tokens = self.take(bucket, per_minute, units)
        try:
            yield
        finally:
            self.settle(bucket, tokens)
