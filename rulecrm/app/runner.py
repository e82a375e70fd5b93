"""The live runner behind `rulecrm run`: sources in, timers on the wall clock, the outbox out.

One thread does everything that touches the state, in small steps. A step takes what the sources
have, applies it, fires the timers due by the wall clock, writes all of that together with the
sources' positions in one transaction, and only then hands the newly queued actions to channels
(each answer committed on its own). So a `kill -9` at any instant loses nothing that was committed,
and re-does at most the delivery that was in flight (see docs/running.md).
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections import Counter
from datetime import datetime, timezone

from rulecrm import plugins
from rulecrm.app.observing import RUNNING, STOPPED, STOPPING, RunObserver
from rulecrm.app.reload import RuleWatcher
from rulecrm.app.replay import ActionWriter
from rulecrm.app.session import FIXED_BEFORE, REJECTED, SET_ASIDE, Input, Session
from rulecrm.app.shards import ShardSessions
from rulecrm.engine.core import APPLIED, CONFLICT, DUPLICATE
from rulecrm.errors import RulecrmError, RuleFileError, UsageError
from rulecrm.logline import LogLine, diagnostic_line
from rulecrm.masking import mask_personal
from rulecrm.sources import SourceContext
from rulecrm.state.partitioned import is_partitioned
from rulecrm.state.store import LAST_RELOAD

# runner.stats keys of ingest outcomes (the names the runner has always counted under)
_STAT_OF = {APPLIED: "applied", DUPLICATE: "duplicates", CONFLICT: "rejected", REJECTED: "rejected",
            SET_ASIDE: "rejected", FIXED_BEFORE: "fixed_before"}


class Runner:
    """Runs rules live against a state until `stop()` (or, with `once`, until the sources are dry).

    `state` is a state file, or a partitioned state directory: then every shard has its session
    (`rulecrm.app.shards`) and each line is applied in its customer's shard.

    `clock` (epoch seconds) is the wall clock: the only place "now" comes from. Messages for people
    (rejected lines, reloads, plugin problems) go to `on_message`, as text (`rulecrm.logline.LogLine`s
    where they have a level or fields). `observer` (`rulecrm.app.observing.RunObserver`) hears of
    the runner's life and work: `run --metrics` gives one.
    """

    def __init__(self, rules_path, state, *, sources=(), out=None, backend_name=None, manager=None, env=None,
                 clock=time.time, allow_remote=False, poll_interval=0.02, batch_size=500, reload_interval=1.0,
                 on_message=None, dispatch_options=None, observer: RunObserver | None = None, shards=None):
        self.rules_path = rules_path
        self.state = state
        self.shards = None if shards is None else tuple(shards)  # of a partitioned state; None: every shard
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
        self.observer = observer or RunObserver()
        self.dispatch_options.setdefault("on_send_timed", self.observer.send_timed)
        self.stats = Counter()
        self._stopping = threading.Event()
        self.session = self.watcher = None
        self.sources: list = []

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Lock the state, load the rules, build channels and sources; nothing runs if any of it fails."""
        self.writer = ActionWriter(self.out)
        if is_partitioned(self.state):
            open_session = functools.partial(ShardSessions.open, shards=self.shards)
        elif self.shards is not None:
            raise UsageError(f"--shards needs a partitioned state; {self.state} is a state file")
        else:
            open_session = Session.open
        self.session = open_session(
            self.rules_path, self.state, manager=self.manager, backend_name=self.backend_name, deliver=True,
            on_decided=self.writer.write_all, on_report=self.writer, on_warning=self._warn, env=self.env,
            clock=self.clock, stop=self._stopping.is_set, dispatch_options=self.dispatch_options,
            on_timer_set_aside=self._timer_set_aside, observer=self.observer,
        )
        try:
            self.sources = [self._make_source(spec, self.session.ruleset) for spec in self.source_specs]
            for source in self.sources:
                source.open(self.session.store)
                if hasattr(source, "open_shard"):  # a position per shard, in each shard's own state
                    for shard, store in self.session.stores_by_shard.items():
                        source.open_shard(shard, store)
            self.watcher = RuleWatcher(self.rules_path, interval=self.reload_interval)
            self._record_rules("start", self.session.ruleset)
            self.observer.opened(self.session, [source.name for source in self.sources])
        except BaseException:
            self.close()
            raise

    @property
    def store(self):
        return self.session.store if self.session is not None else None

    @property
    def engine(self):
        return self.session.engine if self.session is not None else None

    def _make_source(self, spec: str, ruleset):
        name, _, arg = spec.partition(":")
        types = plugins.event_sources(self.manager)
        if name not in types:
            raise UsageError(f"unknown source {name!r} in --source {spec}; installed: {', '.join(sorted(types))}")
        partitions = getattr(self.session, "partitioned", None)
        context = SourceContext(ruleset.shop.timezone, allow_remote=self.allow_remote, on_message=self.on_message,
                                partitions=partitions.partitions if partitions is not None else 1,
                                shards=tuple(self.session.stores_by_shard))
        return types[name].factory(arg, context)

    def stop(self) -> None:
        """Ask the loop to stop after the current step (safe from signal handlers and other threads)."""
        self._stopping.set()
        self.observer.state_changed(STOPPING)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, *, once: bool = False) -> None:
        """Step until stopped; with `once`, until a step finds no input, then deliver what is due and return."""
        self.observer.state_changed(RUNNING)  # never after a stop: an observer's state only moves on
        try:
            self.session.deliver(stop=lambda: self.stopping, wait=False)  # left queued by a previous run
            while not self.stopping:
                taken = self.step()
                if once and not taken:
                    self.session.deliver(stop=lambda: self.stopping)  # and wait for the answers
                    break
                if not taken:
                    self._stopping.wait(self.poll_interval)
        finally:
            self.observer.state_changed(STOPPING)

    def close(self) -> None:
        """Stop the sources, close channels and the state (every step already committed its work)."""
        for source in self.sources:
            source.close()
        self.sources = []
        if self.session is not None:
            self.session.close()
        self.session = None
        self.observer.state_changed(STOPPED)

    # -- one step -----------------------------------------------------------------------
    def step(self) -> int:
        """Apply what the sources have, fire timers due by now, commit, then deliver. Returns items taken."""
        # answers that came in since the last step, recorded now: a send's slot is free only once its
        # answer is in the store, so recording twice a step lets each slot send twice a step
        self.session.deliver(stop=lambda: self.stopping, wait=False)
        polled = []
        handed_over = {}  # source name -> when it handed its batch over (event-to-decision latency)
        for source in self.sources:
            items = source.poll(self.batch_size)
            polled.append((source, items))
            handed_over[source.name] = time.monotonic()
            if hasattr(source, "origin"):  # its lines go under one name per shard
                for shard in {item[2] for item in items}:
                    handed_over[source.origin(shard)] = handed_over[source.name]
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        taken = sum(len(items) for _source, items in polled)
        if taken or self._timer_due(now):
            self._commit_step(polled, now, handed_over)
        else:
            for source, _items in polled:
                source.committed()  # nothing to write (e.g. a POST of blank lines): answer it
        self.session.deliver(stop=lambda: self.stopping, wait=False)  # sends go on while the next step runs
        if self.watcher.changed():
            self.reload()
        return taken

    def _timer_due(self, now) -> bool:
        due = self.session.next_due()
        return due is not None and due <= now.timestamp()

    def _commit_step(self, polled, now, handed_over) -> None:
        inputs = [_input(source, item) for source, items in polled for item in items]

        def commit_positions():
            for source, _items in polled:
                source.commit(self.store)

        def commit_shard_positions(shard, store):
            for source, _items in polled:
                if hasattr(source, "commit_shard"):
                    source.commit_shard(shard, store)

        applied = self.session.apply(inputs, until=now, also=commit_positions, also_in_shard=commit_shard_positions)
        self.observer.lines_committed(applied.outcomes, handed_over, time.monotonic())
        for source, _items in polled:
            source.committed()
        for _line, outcome in applied.outcomes:
            self.stats[_STAT_OF[outcome]] += 1
        for line, reason in applied.problems:
            self.on_message(LogLine(f"{line.source}:{line.line_no}: rejected: {mask_personal(reason)}",
                                    level="warning", source=line.source, line=line.line_no))

    def _record_rules(self, what: str, ruleset, *, diagnostics=(), problem=None) -> None:
        """Keep in the state what was loaded or refused: the console shows the last reload from there."""
        record = _reload_record(what, ruleset, self.rules_path, self.clock(), diagnostics, problem)
        try:
            self.store.set_meta(LAST_RELOAD, record)
        except RulecrmError as exc:  # the state cannot be written: the next step says so too
            self._warn(f"could not record the reload in the state: {exc}")

    def _warn(self, text: str) -> None:
        self.on_message(LogLine(text, level="warning"))

    def _timer_set_aside(self, key: str, error: str) -> None:
        self.observer.timer_set_aside()
        self.on_message(LogLine(f"timer {key} set aside: {error}", level="warning"))

    def reload(self) -> bool:
        """Load the edited rules; a broken edit is reported and the rules in force stay. Timers live in the store."""
        try:
            ruleset = plugins.load_rules_with(self.manager, self.rules_path)
            self.session.reload(ruleset)
        except RuleFileError as exc:
            for diagnostic in exc.diagnostics:
                self.on_message(diagnostic_line(diagnostic))
            self._warn("rules not reloaded: fix the errors above; the previous rules stay in force")
            self.observer.reloaded(False)
            self._record_rules("reload", None, diagnostics=exc.diagnostics)
            return False
        except RulecrmError as exc:
            self._warn(f"rules not reloaded: {exc}; the previous rules stay in force")
            self.observer.reloaded(False)
            self._record_rules("reload", None, problem=str(exc))
            return False
        self.stats["reloads"] += 1
        self.observer.reloaded(True)
        self._record_rules("reload", ruleset)
        self.on_message(f"reloaded rules from {self.rules_path}: {len(ruleset.active_rules)} active rule(s)")
        return True


def _reload_record(what, ruleset, rules_path, now, diagnostics=(), problem=None) -> dict:
    """What the state keeps of the rules a runner loaded (`ruleset`) or refused (None), for the console."""
    diagnostics = tuple(diagnostics) or (ruleset.warnings if ruleset is not None else ())
    return {
        "what": what, "at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "ok": ruleset is not None, "rules": str(rules_path), "pid": os.getpid(),
        "active_rules": len(ruleset.active_rules) if ruleset is not None else None,
        "diagnostics": [diagnostic.format() for diagnostic in diagnostics], "problem": problem,
    }


def _input(source, item) -> Input:
    """A polled item as an Input: a source with positions per shard adds the shard it came from."""
    if len(item) == 3:
        line_no, event, shard = item
        return Input(source.origin(shard), line_no, event, shard=shard)
    line_no, event = item
    return Input(source.name, line_no, event)
