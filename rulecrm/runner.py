"""The live runner behind `rulecrm run`: sources in, timers on the wall clock, the outbox out.

One thread does everything that touches the state, in small steps. A step takes what the sources
have, applies it, fires the timers due by the wall clock, writes all of that together with the
sources' positions in one transaction, and only then hands the newly queued actions to channels
(each answer committed on its own). So a `kill -9` at any instant loses nothing that was committed,
and re-does at most the delivery that was in flight (see docs/running.md).
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timezone

from . import plugins
from .dispatch import Dispatcher
from .errors import RuleFileError, RulecrmError, UsageError
from .eventsource import Rejected
from .reload import RuleWatcher
from .replay import ActionWriter, build_engine
from .sources import SourceContext
from .store import Store


class Runner:
    """Runs rules live against a state file until `stop()` (or, with `once`, until the sources are dry).

    `clock` (epoch seconds) is the wall clock: the only place "now" comes from. Messages for people
    (rejected lines, reloads, plugin problems) go to `on_message`.
    """

    def __init__(self, rules_path, state, *, sources=(), out=None, backend_name=None, manager=None, env=None,
                 clock=time.time, allow_remote=False, poll_interval=0.02, batch_size=500, reload_interval=1.0,
                 on_message=None, dispatch_options=None):
        self.rules_path = rules_path
        self.state = state
        self.source_specs = tuple(sources)
        self.out = out
        self.backend_name = backend_name
        self.manager = manager or plugins.build_plugin_manager()
        self.env = env
        self.clock = clock
        self.allow_remote = allow_remote
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.reload_interval = reload_interval
        self.on_message = on_message or (lambda text: None)
        self.dispatch_options = dict(dispatch_options or {})
        self.stats = Counter()
        self._stopping = threading.Event()
        self._decided: list = []  # actions the engine reported during the open transaction
        self.store = self.engine = self.dispatcher = self.watcher = None
        self.sources: list = []

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Lock the state, load the rules, build channels and sources; nothing runs if any of it fails."""
        self.store = Store.open(self.state)
        try:
            self.store.lock()
            ruleset = plugins.load_rules_with(self.manager, self.rules_path)
            self.writer = ActionWriter(self.out)
            self.dispatcher = Dispatcher(
                ruleset, self.manager, self.store, env=self.env, clock=self.clock, on_report=self.writer,
                on_warning=self.on_message, **self.dispatch_options,
            )
            self.engine = self._build_engine(ruleset)
            self.sources = [self._make_source(spec, ruleset) for spec in self.source_specs]
            with self.store.transaction():
                self.store.set_meta("rules_path", str(self.rules_path))
            for source in self.sources:
                source.open(self.store)
            self.watcher = RuleWatcher(self.rules_path, interval=self.reload_interval)
        except BaseException:
            self.close()
            raise

    def _build_engine(self, ruleset):
        return build_engine(
            ruleset, self.store, backend_name=self.backend_name, on_action=self._decided.append,
            functions=plugins.functions(self.manager), address_fields=plugins.address_fields(self.manager),
            dispatcher=self.dispatcher,
        )

    def _make_source(self, spec: str, ruleset):
        name, _, arg = spec.partition(":")
        types = plugins.event_sources(self.manager)
        if name not in types:
            raise UsageError(f"unknown source {name!r} in --source {spec}; installed: {', '.join(sorted(types))}")
        context = SourceContext(ruleset.shop.timezone, allow_remote=self.allow_remote, on_message=self.on_message)
        return types[name].factory(arg, context)

    def stop(self) -> None:
        """Ask the loop to stop after the current step (safe from signal handlers and other threads)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, *, once: bool = False) -> None:
        """Step until stopped; with `once`, until a step finds no input, then deliver what is due and return."""
        self.dispatcher.dispatch_ready(stop=lambda: self.stopping)  # left queued by a previous run
        while not self.stopping:
            taken = self.step()
            if once and not taken:
                break
            if not taken:
                self._stopping.wait(self.poll_interval)

    def close(self) -> None:
        """Stop the sources, close channels and the state (every step already committed its work)."""
        for source in self.sources:
            source.close()
        self.sources = []
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.engine is not None:
            self.engine.backend.close()
        if self.store is not None:
            self.store.close()
        self.dispatcher = self.engine = self.store = None

    # -- one step -----------------------------------------------------------------------
    def step(self) -> int:
        """Apply what the sources have, fire timers due by now, commit, then deliver. Returns items taken."""
        polled = [(source, source.poll(self.batch_size)) for source in self.sources]
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        taken = sum(len(items) for _source, items in polled)
        if taken or self._timer_due(now):
            self._commit_step(polled, now)
        else:
            for source, _items in polled:
                source.committed()  # nothing to write (e.g. a POST of blank lines): answer it
        self.dispatcher.dispatch_ready(stop=lambda: self.stopping)
        if self.watcher.changed():
            self.reload()
        return taken

    def _timer_due(self, now) -> bool:
        top = self.engine.timers.peek_order()
        return top is not None and top[0] <= now.timestamp()

    def _commit_step(self, polled, now) -> None:
        with self.store.transaction():
            for source, items in polled:
                for line_no, item in items:
                    self._apply(source, line_no, item)
            self.engine.advance(now)  # events older than the engine's time were applied late, at their own `at`
            self.engine.flush()
            for source, _items in polled:
                source.commit(self.store)
        for source, _items in polled:
            source.committed()
        decided, self._decided[:] = list(self._decided), []
        for action in decided:  # written only once committed: a crash cannot put an undone action in --out
            self.writer(action)

    def _apply(self, source, line_no, item) -> None:
        if isinstance(item, Rejected):
            self.stats["rejected"] += 1
            self.store.add_dead_letter(source=source.name, line_no=line_no, raw=item.raw, error=item.error)
            self.on_message(f"{source.name}:{line_no}: rejected: {item.error}")
        elif self.engine.ingest(item):
            self.stats["applied"] += 1
        else:
            self.stats["duplicates"] += 1

    def reload(self) -> bool:
        """Load the edited rules; a broken edit is reported and the rules in force stay. Timers live in the store."""
        try:
            ruleset = plugins.load_rules_with(self.manager, self.rules_path)
            self.dispatcher.use_rules(ruleset)
        except RuleFileError as exc:
            for diagnostic in exc.diagnostics:
                self.on_message(diagnostic.format())
            self.on_message("rules not reloaded: fix the errors above; the previous rules stay in force")
            return False
        except RulecrmError as exc:
            self.on_message(f"rules not reloaded: {exc}; the previous rules stay in force")
            return False
        self.engine.backend.close()
        self.engine = self._build_engine(ruleset)
        self.stats["reloads"] += 1
        self.on_message(f"reloaded rules from {self.rules_path}: {len(ruleset.active_rules)} active rule(s)")
        return True
