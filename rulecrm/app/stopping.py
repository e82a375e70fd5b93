"""Stopping the live runner promptly: signal handlers, waits a stop ends, channel calls with a bounded wait.

docs/running.md (Stopping): SIGTERM stops a runner within 2 s whatever it is waiting for, and sends not yet started
stay `queued`. Three pieces make that hold:

* `catch_stop_signals()` installs SIGTERM/SIGINT handlers. `python -m rulecrm run` (and the
  `rulecrm` script) install them before importing anything else, so a signal during start-up is
  a clean stop too, not a kill.
* `Interrupted` is raised out of a wait (a rate-limit token) or a channel call that a stop cut
  short. It is a BaseException so that no `except Exception` on the way (the one turning a
  channel's exception into a failed delivery, for instance) records anything for it.
* `BoundedCalls` runs channel calls on a worker thread: once stopping, a call in flight gets
  `SEND_GRACE` seconds to finish (its answer is then recorded as usual); after that it is given
  up and its row stays as it was, to be sent again after a restart (at least once, with its key).
"""
from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # SIGTERM last: once it is caught, both are
SEND_GRACE = 0.5  # seconds a channel call in flight may still take once a stop is asked for
POLL = 0.05  # seconds between looks at the stop flag while waiting for a channel call


class Interrupted(BaseException):
    """A wait or a channel call given up because the runner is stopping; nothing was recorded for it."""


class StopSignals:
    """SIGTERM and SIGINT ask for a stop: `requested` turns true and the `on_stop` callbacks run.

    The handler only sets a flag and writes a byte to a pipe. A handler runs between two bytecodes
    of the main thread, which may be inside `threading.Event.wait` holding the very lock that
    `Event.set` takes; so the callbacks run on a small relay thread instead of in the handler.
    """

    def __init__(self, *, keep: bool = False):
        self.requested = False
        self.keep = keep  # the process is the command line itself: leave the handlers until it exits
        self._callbacks: list[Callable[[], None]] = []
        self._previous: dict = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._relay = threading.Thread(target=self._relay_stops, name="rulecrm-stop-signals", daemon=True)
        self._relay.start()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers: the embedding application owns the signals
        for sig in STOP_SIGNALS:
            self._previous.setdefault(sig, signal.signal(sig, self._handle))

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a stop signal arrives (at once if one already did)."""
        self._callbacks.append(callback)
        if self.requested:
            callback()

    def release(self) -> None:
        """Give the signals back to the handlers found at install (unless `keep`)."""
        global _current
        if self.keep:
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        self._callbacks.clear()
        os.close(self._write)  # ends the relay thread
        if _current is self:
            _current = None

    def _handle(self, signum, frame) -> None:
        self.requested = True
        try:
            os.write(self._write, b"!")
        except OSError:  # the pipe is full (a wake-up is pending anyway) or already closed
            pass

    def _relay_stops(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                data = b""
            if not data:
                os.close(self._read)
                return
            for callback in list(self._callbacks):
                callback()


_current: StopSignals | None = None


def catch_stop_signals(*, keep: bool = False) -> StopSignals:
    """Install the SIGTERM/SIGINT handlers (once per process) and return them.

    `keep`: the caller is the command line's entry point; the handlers stay until the process
    exits, so a signal during shutdown cannot kill it half way.
    """
    global _current
    if _current is None:
        _current = StopSignals(keep=keep)
        _current.install()
    elif keep:
        _current.keep = True
    return _current


class _Call:
    def __init__(self, function, args):
        self.function, self.args = function, args
        self.done = threading.Event()
        self.result = self.error = None

    def run(self) -> None:
        try:
            self.result = self.function(*self.args)
        except BaseException as exc:  # handed to the caller, which decides what it means
            self.error = exc
        finally:
            self.done.set()


class BoundedCalls:
    """Runs calls that may block for long (a channel's send) on one worker thread.

    The caller waits for the answer; once `stop()` is true it waits at most `grace` seconds more,
    then raises Interrupted and leaves the call to finish, or not, on its own: its answer is never
    used. All calls run on the same thread, one at a time, in order.
    """

    def __init__(self, stop: Callable[[], bool], *, grace: float = SEND_GRACE):
        self._stop = stop
        self.grace = grace
        self.abandoned = False
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    def __call__(self, function, *args):
        if self.abandoned or self._stop():
            raise Interrupted("stopping: the call was not started")
        call = _Call(function, args)
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="rulecrm-channel-calls", daemon=True)
            self._worker.start()
        self._calls.put(call)
        deadline = None
        while not call.done.wait(POLL):
            if deadline is None and self._stop():
                deadline = time.monotonic() + self.grace
            if deadline is not None and time.monotonic() >= deadline:
                self.abandoned = True
                raise Interrupted(f"stopping: a call still running after {self.grace:g}s was given up")
        if call.error is not None:
            raise call.error
        return call.result

    def finish(self, function: Callable[[], list]) -> list:
        """Run `function` (closing the channels) and end the worker. After a call was given up, the
        channel may still be busy in it: `function` then runs on a thread of its own and is waited for
        at most `grace` seconds."""
        if self._worker is not None and not self.abandoned:
            self._calls.put(None)
        if not self.abandoned:
            return function()
        call = _Call(function, ())
        threading.Thread(target=call.run, name="rulecrm-channel-close", daemon=True).start()
        if call.done.wait(self.grace) and call.error is None:
            return call.result
        return []

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            call.run()
