"""A session: one run of the engine on one state, owning the chain from the rule set to the dispatcher.

plugin manager → rule set → store → backend → engine → dispatcher. `replay`, `run` and
`dead-letters --retry` each open one and hand it input lines; a partition task or a shard runner
will be one session too. A session applies each batch in one store transaction (an item the engine
fails on is set aside alone, see `rulecrm.app.applying`), keeps every line it could not apply in the
dead-letter store, and hands the decided actions on only once they are committed.
"""
from __future__ import annotations

import functools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from os import PathLike

import attrs

from rulecrm import plugins
from rulecrm.app import collector
from rulecrm.app.applying import GuardedApplier
from rulecrm.app.observing import StepObserver
from rulecrm.app.stopping import Interrupted
from rulecrm.backends import default_backend_name, get_backend
from rulecrm.engine.core import APPLIED, CONFLICT, DUPLICATE, Engine
from rulecrm.events import Event, id_conflict
from rulecrm.sources.reader import Rejected
from rulecrm.state.scratch import ScratchStore
from rulecrm.state.store import DELIVERS, Store

REJECTED = "rejected"  # not a valid event: kept in the dead-letter store
FIXED_BEFORE = "fixed_before"  # a rejected line that was fixed (or removed) after an earlier read
SET_ASIDE = "set_aside"  # the engine failed on it: rolled back alone and kept in the dead-letter store
NOT_APPLIED = (REJECTED, CONFLICT, SET_ASIDE)
TIMERS_PER_STEP = 20_000  # timers fired per transaction when only time moves on


@attrs.frozen
class Input:
    """One input line: where it came from, its number there, and its event (or why it was rejected).

    `raw` is the text to keep if the line cannot be applied (default: the event's JSON);
    `dead_letter` the id of the dead letter this line re-ingests, resolved once it is applied;
    `shard` the shard the line must be kept in, from a source with a position per shard
    (`rulecrm.sources.contract`).
    """

    source: str
    line_no: int
    item: Event | Rejected
    raw: str | None = None
    dead_letter: int | None = None
    shard: int | None = None


@attrs.define
class Applied:
    """What one batch did: every input with its outcome, and why each line not applied was not."""

    outcomes: list = attrs.field(factory=list)  # (Input, outcome)
    problems: list = attrs.field(factory=list)  # (Input, reason) for REJECTED, CONFLICT and SET_ASIDE

    @property
    def counts(self) -> Counter:
        return Counter(outcome for _input, outcome in self.outcomes)

    def events(self) -> list[Event]:
        """The events now in the state (applied, or applied before)."""
        return [i.item for i, outcome in self.outcomes if outcome in (APPLIED, DUPLICATE)]


def build_engine(ruleset, store, *, backend_name=None, on_action=None, functions=None, address_fields=None,
                 dispatcher=None, observer=None) -> Engine:
    """An engine on `store`, loaded with what the store holds (timers, held actions, counters).

    `observer` (`rulecrm.app.observing.StepObserver`) sees every status given and every timer fired."""
    backend_cls = get_backend(backend_name or default_backend_name())
    engine = Engine(
        ruleset, backend=backend_cls(ruleset.active_rules, functions=functions), store=store, functions=functions,
        on_action=on_action, address_fields=address_fields,
        waits_for_channel=dispatcher.waits_for_channel if dispatcher is not None else None,
        on_status=observer.action_decided if observer is not None else None,
        on_timer_fired=observer.timer_fired if observer is not None else None,
    )
    engine.load()
    return engine


class Session:
    """The engine of one run on one state, with everything around it. Open with `Session.open`."""

    def __init__(self, *, manager, ruleset, store, backend_name, dispatcher, on_decided, on_timer_set_aside,
                 functions=None, address_fields=None, guarded=True, on_action=None, observer=None):
        self.manager = manager
        self.ruleset = ruleset
        self.store = store
        self.backend_name = backend_name
        self.dispatcher = dispatcher
        self.functions = plugins.functions(manager) if functions is None else functions
        self.address_fields = plugins.address_fields(manager) if address_fields is None else address_fields
        self._on_action = on_action
        self._observer = observer
        self._applier = GuardedApplier(
            store, self._engine_maker(ruleset), set_aside=self._set_aside,
            on_committed=on_decided or (lambda actions: None), on_timer_set_aside=on_timer_set_aside,
            guarded=guarded, observer=observer,
        )
        # automatic collection off until close(); steps collect through the process's shared budget
        self._collector: collector.BudgetedCollector | None = collector.pause_automatic()

    @classmethod
    def open(cls, rules, state: str | PathLike | None = None, *, ruleset=None, manager=None,
             backend_name: str | None = None,
             deliver: bool = False, record_rules: bool = True, on_decided: Callable[[list], None] | None = None,
             on_report=None, on_warning=None, on_timer_set_aside=None, env=None,
             clock=time.time, stop=None, dispatch_options: dict | None = None, functions: dict | None = None,
             address_fields: dict | None = None, guarded: bool = True,
             on_action: Callable | None = None, observer: StepObserver | None = None,
             scratch: bool = False) -> Session:
        """Load the rules at path `rules` (unless `ruleset` is what was loaded from there), open and lock
        the state, and build the rest. `record_rules`: remember the rules' path in the state.

        Without `state` the store is a scratch one (nothing to resume), unless `deliver`, which
        needs an outbox to read back; `scratch` makes the file at `state` a scratch store too (the
        temporary shard of a partitioned replay, which its replay removes). `deliver`: actions wait
        for their channels (`queued`) and `deliver()` hands them over; the state is marked as one
        whose actions are delivered.
        `on_decided(actions)` gets each committed batch's decided actions; `on_report(record)` each
        delivered one. `functions` and `address_fields` replace what the plugins provide; `guarded`
        False (the testing kit) raises an engine failure instead of setting the item aside.
        `on_action(action)` is called as the engine decides, before the commit (explain's re-run reads
        the customer's profile at that instant); most callers want `on_decided`. `observer` hears of
        every status given, timer fired and step committed or rolled back (the live runner's metrics).
        """
        manager = manager or plugins.build_plugin_manager()
        ruleset = ruleset or plugins.load_rules_with(manager, rules)
        store: Store
        if (state is None or scratch) and not deliver:
            store = ScratchStore.open_scratch(None if state is None else os.fspath(state))
        else:
            store = Store.open(state, lock=state is not None)
        dispatcher = session = None
        try:
            if deliver:
                from rulecrm.channels.dispatch import Dispatcher

                options = {"env": env, "clock": clock, "on_report": on_report, "on_warning": on_warning, "stop": stop}
                options.update(dispatch_options or {})
                dispatcher = Dispatcher(ruleset, manager, store, **{k: v for k, v in options.items() if v is not None})
            session = cls(manager=manager, ruleset=ruleset, store=store,
                          backend_name=backend_name or default_backend_name(), dispatcher=dispatcher,
                          on_decided=on_decided, on_timer_set_aside=on_timer_set_aside,
                          functions=functions, address_fields=address_fields, guarded=guarded,
                          on_action=on_action, observer=observer)
            with store.transaction():
                if record_rules:
                    store.set_meta("rules_path", str(rules))
                if deliver:
                    store.set_meta(DELIVERS, True)
        except BaseException:
            if session is not None:
                session.close()  # the applier, the dispatcher and the store
            else:
                if dispatcher is not None:
                    dispatcher.close()
                store.close()
            raise
        return session

    # -- the engine ----------------------------------------------------------------------
    def _engine_maker(self, ruleset):
        def make_engine(collect):
            if self._on_action is None:
                on_action = collect
            else:
                def on_action(action, _also=self._on_action):
                    collect(action)
                    _also(action)
            engine = build_engine(
                ruleset, self.store, backend_name=self.backend_name, on_action=on_action,
                functions=self.functions, address_fields=self.address_fields, dispatcher=self.dispatcher,
                observer=self._observer,
            )
            return engine
        return make_engine

    @property
    def engine(self) -> Engine:
        return self._applier.engine

    @property
    def stores(self) -> tuple[Store, ...]:
        """Every store this session writes (one; a runner on a partitioned state has one per shard)."""
        return (self.store,)

    @property
    def stores_by_shard(self) -> dict[int, Store]:
        """The store of each shard this session writes: a state file is shard 0 of 1."""
        return {0: self.store}

    def reload(self, ruleset) -> None:
        """Go on with new rules: timers, held actions and profiles live in the store and stay."""
        if self.dispatcher is not None:
            self.dispatcher.use_rules(ruleset)
        self.ruleset = ruleset
        self._applier.rebuild(self._engine_maker(ruleset))

    def next_due(self) -> float | None:
        """Epoch seconds of the next pending timer, or None."""
        return self.engine.next_due()

    # -- input ---------------------------------------------------------------------------
    def apply(self, inputs: Iterable[Input], *, until: datetime | None = None,
              also: Callable[[], None] | None = None, stop: Callable[[], bool] | None = None,
              also_in_shard: Callable[[int, Store], None] | None = None) -> Applied:
        """Apply a batch in one transaction, then fire the timers due by `until` and run `also`
        (e.g. a source recording its position) in the same transaction.

        `stop()` is asked before each line: true raises `Interrupted`, which rolls the batch back.
        `also_in_shard(0, store)` runs after `also`: a state file is shard 0 of 1 to the sources
        that keep a position per shard.
        """
        if also_in_shard is not None:
            also = chain_calls(also, functools.partial(also_in_shard, 0, self.store))
        inputs = list(inputs)
        apply_one = self._apply_one
        if stop is not None:
            def apply_one(engine, line, _apply=self._apply_one):
                if stop():
                    raise Interrupted()
                return _apply(engine, line)
        finish = None
        if until is not None or also is not None:
            def finish(engine):
                if until is not None:
                    engine.advance(until)  # events older than the engine's time were applied at their own `at`
                if also is not None:
                    also()
        step = self._applier.step(inputs, apply_one, finish)
        if self._collector is not None:
            self._collector.after_step()
        applied = Applied()
        for line, outcome in step.outcomes:
            applied.outcomes.append((line, outcome))
            if outcome == REJECTED:
                applied.problems.append((line, line.item.error))
            elif outcome == CONFLICT:
                applied.problems.append((line, id_conflict(line.item.id)))
        for line, error in step.set_aside:
            applied.outcomes.append((line, SET_ASIDE))
            applied.problems.append((line, error))
        return applied

    def _apply_one(self, engine, line: Input) -> str:
        item = line.item
        if isinstance(item, Rejected):
            kept = self.store.add_dead_letter(source=line.source, line_no=line.line_no, raw=item.raw, error=item.error)
            return REJECTED if kept is not None else FIXED_BEFORE
        outcome = engine.ingest_outcome(item)
        if outcome == CONFLICT:
            self.store.add_dead_letter(source=line.source, line_no=line.line_no, raw=self._raw(line),
                                       error=id_conflict(item.id))
        elif line.dead_letter is not None:
            self.store.resolve_dead_letter(line.dead_letter, how="retried")
        return outcome

    def _set_aside(self, line: Input, error: str) -> None:
        self.store.add_dead_letter(source=line.source, line_no=line.line_no, raw=self._raw(line), error=error)

    @staticmethod
    def _raw(line: Input) -> str:
        if line.raw is not None:
            return line.raw
        return line.item.raw if isinstance(line.item, Rejected) else line.item.to_json()

    def advance(self, until: datetime | None, *, report_pending: bool = False) -> None:
        """Fire the timers due at or before `until`, at most TIMERS_PER_STEP per step (a long quiet
        period can make every customer's timers due, and a step's decisions wait in memory for its
        commit); `report_pending`: at the end of a run, report the actions still held (quiet hours,
        deferring caps)."""
        more = True

        def finish(engine):
            nonlocal more
            more = until is not None and engine.advance(until, max_timers=TIMERS_PER_STEP)
            if report_pending and not more:
                engine.report_pending()

        while more:
            self._applier.step((), _no_items, finish)
            if self._collector is not None:
                self._collector.after_step()

    # -- delivery ------------------------------------------------------------------------
    def deliver(self, *, stop=lambda: False, wait: bool = True) -> None:
        """Hand the committed `queued` actions to their channels (no-op without delivery).

        `wait`: until every due one was answered. Without it (the live runner), record the answers
        that came in and start what is due, then return: sends go on while the next input is applied,
        and a slow channel holds back neither the runner nor the other channels.
        """
        if self.dispatcher is None:
            return
        if wait:
            self.dispatcher.dispatch_ready(stop=stop)
        elif not stop():
            self.dispatcher.pump()

    def drain(self) -> None:
        """Deliver until nothing is queued or waiting for a retry, then report what still failed."""
        if self.dispatcher is not None:
            self.dispatcher.drain()
            self.dispatcher.report_unfinished()

    # -- the end -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the engine, the channels and the state (each batch already committed its work)."""
        try:
            self._applier.close()
        finally:
            try:
                if self.dispatcher is not None:
                    self.dispatcher.close()
            finally:
                self.store.close()
                if self._collector is not None:
                    self._collector = None
                    collector.resume_automatic()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def chain_calls(first: Callable[[], None] | None, second: Callable[[], None] | None) -> Callable[[], None] | None:
    """One callable that calls `first`, then `second` (either may be None)."""
    if first is None or second is None:
        return first or second

    def both():
        first()
        second()
    return both


def _no_items(engine, item):
    raise AssertionError("a step without items applies none")
