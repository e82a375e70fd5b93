"""Applying input in all-or-nothing steps, so that one item that makes the engine raise is set aside alone.

Validation rejects every value the engine cannot process, but a bug (in rulecrm or a plugin
function) must still not stop a run for good: if a step raises, it is rolled back and redone one
item per transaction. The item that raises again is kept in the dead-letter store with the error,
and the run goes on with the next one. A timer whose firing raises is set aside the same way (its
trigger event is kept with it), so it cannot block every later step either.

The engine's memory follows the store only through committed steps, so after a rollback the
engine is rebuilt from the store (a replay without --state has a temporary store, rolled back the same way).
Actions decided during a step are handed on only once the step has committed: a rolled-back
attempt can never leak an action into --out or to a channel.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from rulecrm.errors import StateError
from rulecrm.timeutil import isoformat

# Faults of the machine, not of the input: redoing the step item by item would only dead-letter
# good input. They end the command (the CLI reports them in one line).
STORAGE_FAULTS = (StateError, sqlite3.OperationalError, OSError, MemoryError)
TIMER_SOURCE = "timer"  # the dead-letter `source` of a timer set aside
MAX_TIMERS_SET_ASIDE_PER_ITEM = 100  # bounds the redo loop if many timers fail before one event


def is_storage_fault(exc: BaseException) -> bool:
    # "file is not a database" and other corruption are plain DatabaseError
    return isinstance(exc, STORAGE_FAULTS) or type(exc) is sqlite3.DatabaseError


def describe_failure(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"the engine failed on this input: {type(exc).__name__}" + (f": {text[:300]}" if text else "")


@attrs.define
class StepResult:
    """What a committed step did: each applied item with its outcome, and the items set aside."""

    outcomes: list = attrs.field(factory=list)  # (item, outcome returned by `apply`)
    set_aside: list = attrs.field(factory=list)  # (item, error text) of the items the engine failed on


class GuardedApplier:
    """Owns the engine of a run and applies steps of input to it, each in one store transaction.

    `make_engine(on_action)` builds a loaded engine on the store. `set_aside(item, error)` records an
    input item that made the engine raise (in the dead-letter store, inside the open transaction)
    and tells the user. `on_committed(actions)` receives the actions decided by a committed step.
    `observer` (`rulecrm.app.observing.StepObserver`) hears of every transaction's end: what it saw
    the engine do since the last one counts once it is committed, and not at all when rolled back.
    """

    def __init__(self, store, make_engine: Callable, *, set_aside: Callable[[Any, str], None],
                 on_committed: Callable[[list], None] | None = None, on_timer_set_aside=None, guarded: bool = True,
                 observer=None):
        self.store = store
        self.guarded = guarded  # False (the testing kit): a failure rolls the step back and is raised
        self._make_engine = make_engine
        self._set_aside = set_aside
        self._on_committed = on_committed or (lambda actions: None)
        self._on_timer_set_aside = on_timer_set_aside or (lambda key, error: None)
        self._observer = observer
        self._decided: list = []
        self.engine = None
        self.rebuild()

    def rebuild(self, make_engine: Callable | None = None) -> None:
        """A fresh engine from the store (after a rollback, or with new rules when `make_engine` is given)."""
        if make_engine is not None:
            self._make_engine = make_engine
        if self.engine is not None:
            self.engine.close()
        self.engine = None
        self._decided.clear()
        if self._observer is not None:
            self._observer.step_discarded()  # the engine's memory goes back to the last commit: so does what it saw
        self.engine = self._make_engine(self._decided.append)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def step(self, items: Iterable, apply: Callable[[Any, Any], Any],
             finish: Callable[[Any], None] | None = None) -> StepResult:
        """Apply `items` with `apply(engine, item)`, then `finish(engine)`, flush and commit.

        On a failure the step is redone item by item; `finish` runs once, after the items.
        """
        items = list(items)
        result = StepResult()
        try:
            with self.store.transaction():
                for item in items:
                    result.outcomes.append((item, apply(self.engine, item)))
                if finish is not None:
                    finish(self.engine)
                self.engine.flush()
        except Exception as exc:  # noqa: BLE001 - any failure of the engine on input is set aside
            if is_storage_fault(exc):
                raise
            if not self.guarded:
                self.rebuild()  # the engine's memory goes back to the store's last commit
                raise
            self.rebuild()
            return self._redo_one_by_one(items, apply, finish)
        self._committed()
        return result

    def _committed(self) -> None:
        if self._observer is not None:
            self._observer.step_committed()
        decided, self._decided[:] = list(self._decided), []
        if decided:
            self._on_committed(decided)

    def _redo_one_by_one(self, items, apply, finish) -> StepResult:
        result = StepResult()
        for item in items:
            self._attempt(lambda engine, item=item: result.outcomes.append((item, apply(engine, item))),
                          on_failure=lambda error, item=item: self._record(item, error, result))
        if finish is not None:
            self._attempt(finish, on_failure=None)
        return result

    def _record(self, item, error: str, result: StepResult) -> None:
        with self.store.transaction():
            self._set_aside(item, error)
        result.set_aside.append((item, error))

    def _attempt(self, work: Callable[[Any], None], *, on_failure) -> None:
        """Run `work` in its own transaction; a timer that raises is set aside and the work retried.

        A failure of the work itself goes to `on_failure` (or is raised when there is none).
        """
        for _ in range(MAX_TIMERS_SET_ASIDE_PER_ITEM):
            try:
                with self.store.transaction():
                    work(self.engine)
                    self.engine.flush()
            except Exception as exc:  # noqa: BLE001 - see step()
                if is_storage_fault(exc):
                    raise
                timer = self.engine.firing
                self.rebuild()
                if timer is not None:
                    self._set_timer_aside(timer, describe_failure(exc))
                    continue
                if on_failure is None:
                    raise
                on_failure(describe_failure(exc))
                return
            self._committed()
            return
        raise StateError(f"more than {MAX_TIMERS_SET_ASIDE_PER_ITEM} timers failed in a row; see the dead letters")

    def _set_timer_aside(self, timer, error: str) -> None:
        event = timer.payload.get("event")
        raw = {
            "timer": timer.key, "customer_id": timer.customer_id, "due": isoformat(timer.due),
            "type": timer.payload.get("type"), "rule": timer.payload.get("rule"),
        }
        if event is not None:
            raw["event"] = event.to_dict()
        with self.store.transaction():
            self.store.add_dead_letter(source=TIMER_SOURCE, line_no=0, raw=json.dumps(raw, ensure_ascii=False),
                                       error=error)
            self.engine.discard_timer(timer)
            self.engine.flush()
        self._on_timer_set_aside(timer.key, error)
