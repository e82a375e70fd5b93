"""Concurrent delivery: each channel's sends run on worker threads of its own, one lane per customer.

A lane is the due actions of one customer on one channel, in decision order. A lane runs on one
worker at a time, so a customer's messages on a channel start in the order they were decided; lanes
of one channel run on up to its `concurrency` workers at once; channels never share workers, so
a slow or failing channel cannot hold the others back. A channel also has `concurrency` send slots,
each held from before a send until its answer is recorded. A lane goes to an awake worker of its
channel when there is one; lanes that wait WAKE_AFTER get workers of their own (`wake_for_waiting`).

Workers only call the channel. Everything the store sees is written by the thread that owns the
store (the dispatcher's), which takes the answers from `finished()`: SQLite connections are not
shared between threads, and an answer not taken yet leaves its action as it was, so a crash at any
point repeats at most the sends made and not recorded, each with its key: never more than the
channel's `concurrency`, thanks to the slots.
"""
from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from rulecrm.app.stopping import Interrupted

NOT_STARTED = object()  # the answer of a send that a stop kept from starting: record nothing
SLOT_POLL = 0.1  # seconds: a worker waiting for a send slot looks at the stop flag this often
WAKE_AFTER = 0.02  # seconds a lane may wait for the awake workers before another worker is woken for it


class _Turns:
    """Tickets served in the order they were taken: who waits for a send token first, gets it first.

    A turn that ends wakes only the holder of the next ticket (each waiter has its own event): a
    condition shared by every worker would wake them all at each send, for one of them to go on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued = 0
        self._serving = 0
        self._waiters: dict[int, threading.Event] = {}

    def take(self) -> int:
        with self._lock:
            ticket = self._issued
            self._issued += 1
            return ticket

    @contextlib.contextmanager
    def turn(self, ticket: int):
        with self._lock:
            waiter = None if self._serving == ticket else self._waiters.setdefault(ticket, threading.Event())
        if waiter is not None:
            waiter.wait()
        try:
            yield
        finally:
            with self._lock:
                self._serving += 1
                following = self._waiters.pop(self._serving, None)
            if following is not None:
                following.set()


class _Pool:
    """The workers of one channel: they take lanes from the channel's queue until closed.

    Sends are admitted (given their rate-limit tokens) one at a time, in the order they became ready:
    a lane's first send when the lane was queued, each later one when the one before it was answered.
    """

    def __init__(self, name: str, size: int, admit: Callable, send: Callable, stop: Callable[[], bool],
                 answers: queue.SimpleQueue) -> None:
        self.size = size
        self._name = name
        self._admit = admit
        self._send = send
        self._stop = stop
        self._answers = answers
        self._turns = _Turns()
        # A slot is taken before each send and given back only once the owner has recorded its answer:
        # sends made and not recorded, the ones a crash repeats, never exceed the channel's concurrency.
        self._slots = threading.Semaphore(size)
        self._waiting: collections.deque = collections.deque()  # (lane, rows) not picked by a worker yet
        self._ready = threading.Condition()
        self._closed = False
        self._workers: list[threading.Thread] = []
        self._awake = 0  # workers not waiting for a lane (a woken one counts from its wake-up call)
        self._slots_held = 0  # sends started and not yet recorded (under `_ready`)
        self._sends_in_call = 0  # workers inside a channel call right now

    def submit(self, lane: Hashable, rows: list[dict]) -> None:
        with self._ready:
            self._waiting.append((lane, rows, time.monotonic()))
            if self._awake:
                return  # an awake worker takes it next; `wake_for_waiting` adds more if it waits long
            self._wake(1)

    @property
    def has_waiting(self) -> bool:
        return bool(self._waiting)

    def wake_for_waiting(self, now: float) -> None:
        """Wake (or start) a worker for each lane that has waited WAKE_AFTER seconds or more.

        A lane goes to an awake worker when there is one, so a fast channel (a local file: its sends
        take microseconds) runs on one worker without a thread switch per send. Lanes that waited
        WAKE_AFTER while a worker is in a channel call mean the channel's calls take time (10 ms
        ones as much as 100 ms ones): it gets a worker per waiting lane, as many as it has free send
        slots. Lanes that wait for another reason (every slot awaits its answer's recording, or the
        machine is busy) wake no one: a woken worker could only wait too, and would take the
        processor from those that can go on."""
        with self._ready:
            if not self._sends_in_call:
                return
            waited = sum(1 for _lane, _rows, since in self._waiting if now - since >= WAKE_AFTER)
            if waited:
                self._wake(min(waited, self.size - self._slots_held))

    def _wake(self, count: int) -> None:
        """(Holding `_ready`.) Wake up to `count` sleeping workers; start new ones for the rest, up to size."""
        sleeping = len(self._workers) - self._awake
        woken = min(count, sleeping)
        if woken:
            self._ready.notify(woken)
            self._awake += woken  # counted now: a submit before they run must not wake them again
        for _ in range(min(count - woken, self.size - len(self._workers))):
            # daemon: a channel call that hangs past a stop's grace must not keep the process alive
            worker = threading.Thread(target=self._work, name=f"rulecrm-send-{self._name}-{len(self._workers)}",
                                      daemon=True)
            self._workers.append(worker)
            self._awake += 1
            worker.start()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _next(self):
        """The next lane, with the ticket of its first send. Taking both under one lock keeps first sends
        in submission order; a ticket is never held by a lane no worker has (that could wait forever)."""
        with self._ready:
            while not self._waiting and not self._closed:
                self._awake -= 1
                self._ready.wait()  # a wake counts it awake again before it runs
            if not self._waiting:
                return None
            lane, rows, _since = self._waiting.popleft()
            return lane, rows, self._turns.take()

    def _work(self) -> None:
        while True:
            task = self._next()
            if task is None:
                return
            lane, rows, ticket = task
            for index, row in enumerate(rows):
                ticket = ticket if index == 0 else self._turns.take()
                holds_slot = self._take_slot()
                answer = self._attempt(row, ticket) if holds_slot else NOT_STARTED
                if not holds_slot:
                    with self._turns.turn(ticket):
                        pass  # a ticket is always served, so those after it are not held up
                self._answers.put((lane, row, answer, self if holds_slot else None))

    def _take_slot(self) -> bool:
        while not self._slots.acquire(timeout=SLOT_POLL):
            if self._stop():
                return False
        with self._ready:
            self._slots_held += 1
        return True

    def give_back_slot(self) -> None:
        """The owner recorded an answer (or will record none): one more send may start."""
        with self._ready:
            self._slots_held -= 1
        self._slots.release()

    def _attempt(self, row: dict, ticket: int):
        admitted = NOT_STARTED
        with self._turns.turn(ticket):
            if not self._stop():
                try:
                    admitted = self._admit(row)
                except Interrupted:  # a stop cut the wait for a rate-limit token short
                    admitted = NOT_STARTED
                except BaseException as exc:  # noqa: BLE001 - handed to the owner, which decides
                    return exc
        if admitted is NOT_STARTED:
            return NOT_STARTED
        with self._ready:
            self._sends_in_call += 1
        try:
            return self._send(row, admitted)
        except BaseException as exc:  # noqa: BLE001 - see above
            return exc
        finally:
            with self._ready:
                self._sends_in_call -= 1


class Lanes:
    """Lanes of due actions, run on per-channel workers; the owner takes the answers with `finished()`.

    `admit(row)` waits for the send's rate-limit token and returns what `send(row, admitted)` needs;
    both run on a worker. `stop()`: once true, no further send starts (its answer is NOT_STARTED).
    """

    def __init__(self, *, admit: Callable, send: Callable, stop: Callable[[], bool] = lambda: False) -> None:
        self._admit = admit
        self._send = send
        self._stop = stop
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._pools: dict[str, _Pool] = {}
        self._open: dict[Hashable, int] = {}  # lane -> answers still to come
        self.keys_in_flight: set[str] = set()
        self.handed: collections.Counter = collections.Counter()  # channel -> rows handed, not answered
        self._channel_of: dict[Hashable, str] = {}  # open lane -> its channel

    def busy(self, lane: Hashable) -> bool:
        return lane in self._open

    @property
    def in_flight(self) -> int:
        return len(self.keys_in_flight)

    def submit(self, channel: str, concurrency: int, lane: Hashable, rows: list[dict]) -> None:
        """Run `rows` (one lane, in order) on `channel`'s workers; the lane must not be busy."""
        if lane in self._open:
            raise ValueError(f"lane {lane!r} is still running")
        pool = self._pools.get(channel)
        if pool is None:
            pool = self._pools[channel] = _Pool(channel, max(1, concurrency), self._admit, self._send, self._stop,
                                               self._answers)
        self._open[lane] = len(rows)
        self.keys_in_flight.update(row["key"] for row in rows)
        self.handed[channel] += len(rows)
        self._channel_of[lane] = channel
        pool.submit(lane, rows)

    def finished(self, timeout: float | None = 0.0) -> list[tuple[dict, Any, Callable[[], None]]]:
        """The answers that came in: (row, answer, recorded); waits up to `timeout` for the first (None:
        forever). Call `recorded()` once the answer is in the store: it gives the send's slot back."""
        self._wake_for_waiting()
        answers = []
        try:
            if timeout is None or timeout > 0:
                answers.append(self._first_answer(timeout))
            while True:
                answers.append(self._answers.get_nowait())
        except queue.Empty:
            pass
        done = []
        for lane, row, answer, pool in answers:
            self.keys_in_flight.discard(row["key"])
            self.handed[self._channel_of[lane]] -= 1
            left = self._open[lane] - 1
            if left:
                self._open[lane] = left
            else:
                del self._open[lane]
                del self._channel_of[lane]
            done.append((row, answer, pool.give_back_slot if pool is not None else _nothing))
        return done

    def _first_answer(self, timeout: float | None):
        """The next answer, waited for up to `timeout` (None: forever); lanes left waiting meanwhile
        are looked at every WAKE_AFTER, not only at the owner's next call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(pool.has_waiting for pool in self._pools.values()):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise queue.Empty
            wait = max(WAKE_AFTER, 0.001) if left is None else min(left, max(WAKE_AFTER, 0.001))
            try:
                return self._answers.get(timeout=wait)
            except queue.Empty:
                self._wake_for_waiting()
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self._answers.get(timeout=left)

    def _wake_for_waiting(self) -> None:
        now = time.monotonic()
        for pool in self._pools.values():
            if pool.has_waiting:
                pool.wake_for_waiting(now)

    def close(self) -> None:
        """Let the workers end once their lanes are done (a worker in a hung call ends with the process)."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _nothing() -> None:
    pass
