"""A shop under test: a rules directory, an engine on a store, events in, actions out, time by hand."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs

from rulecrm.app.session import Input, Session
from rulecrm.engine.caps import horizon as caps_horizon
from rulecrm.events import Event, synthetic_id
from rulecrm.expr.ast import Literal, Name
from rulecrm.plugins import build_plugin_manager
from rulecrm.rulefile.loader import load_rules
from rulecrm.testing.recording import RecordingChannel
from rulecrm.timeutil import MAX_DURATION, parse_timestamp


class Shop:
    """Drives the real engine in event time, the way `replay` and `run` do, one call at a time.

    Events must be given in event-time order across calls (within one `add` call they are sorted,
    ties keeping their order). `state` is ":memory:" (default) or a file path; `restart()` flushes
    and builds a new engine on the same store, as a restarted process would; `reload(rules)` does
    the same with other rules, keeping profiles and timers.

    With `clock=` (a `rulecrm.testing.Clock`), events given without `at` happen at the clock's
    now, `add` moves the clock up to the latest event, and `tick(delta)` moves it and fires the
    timers that became due. `recording=` shares a `RecordingChannel` (default: a new one).
    """

    def __init__(self, rules, *, backend: str = "python", state: str = ":memory:", functions=None,
                 clock=None, recording=None):
        self.backend_name = backend
        self.functions = functions
        self.state = str(state)
        self.clock = clock
        self.recording = recording if recording is not None else RecordingChannel()
        self.ruleset = load_rules(rules) if not _is_ruleset(rules) else rules
        self._occurrences: dict[str, int] = {}
        # The session `replay` and `run` use, unguarded: a failure of the engine is the test's to see,
        # not a line to set aside. No installed plugins: the shop's own `functions` only.
        self._session = Session.open(
            None, self.state, ruleset=self.ruleset, record_rules=False, backend_name=self.backend_name,
            manager=build_plugin_manager(load_entry_points=False), functions=dict(functions or {}),
            address_fields={}, on_decided=self._record, guarded=False,
        )

    def _record(self, actions) -> None:
        for action in actions:
            self.recording.record(action)

    @property
    def _engine(self):
        return self._session.engine

    def restart(self) -> None:
        """Drop the engine and build a new one from the store, as a restarted process does
        (every step was committed)."""
        self._session.reload(self.ruleset)

    def reload(self, rules) -> None:
        """Swap the rules (a directory, a file or a RuleSet) the way a live reload does."""
        self.ruleset = load_rules(rules) if not _is_ruleset(rules) else rules
        self.restart()

    def close(self) -> None:
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- driving -------------------------------------------------------------------------
    @property
    def actions(self) -> list[dict]:
        return self.recording.actions

    @property
    def now(self) -> datetime | None:
        return self._engine.now

    def add(self, *events) -> list[dict]:
        """Apply events (dicts in the JSONL form, or Event objects); returns the actions reported."""
        parsed = [self._event(e) for e in events]
        order = sorted(range(len(parsed)), key=lambda n: (parsed[n].at.astimezone(timezone.utc), n))
        start = len(self.recording.actions)
        self._session.apply(Input("shop", n + 1, parsed[n]) for n in order)
        if self.clock is not None and parsed:
            latest = max(event.at for event in parsed)
            if latest > self.clock.now():
                self.clock.set(latest)
        return self.recording.actions[start:]

    def tick(self, delta: timedelta = timedelta(0)) -> list[dict]:
        """Move the clock forward by `delta` and fire every timer due by then."""
        if self.clock is None:
            raise RuntimeError("Shop.tick() needs a clock: Shop(rules, clock=Clock(start))")
        return self.advance(self.clock.advance(delta))

    def run(self, events, *, until=None) -> list[dict]:
        """Apply `events`, fire every timer due by `until` (default: the last event plus
        `settling_time`), report what is still held; returns the actions of this call."""
        start = len(self.recording.actions)
        events = list(events)
        self.add(*events)
        end = until if until is not None else self.settle_until(events)
        if end is not None:
            self.advance(end)
        self.finish()
        return self.recording.actions[start:]

    def settle_until(self, events) -> datetime | None:
        """The last event's instant plus `settling_time(ruleset, events)` (None without events)."""
        instants = [self._event(e).at for e in events] if events else []
        if not instants:
            return self.now
        return max(instants) + settling_time(self.ruleset, instants)

    def advance(self, to) -> list[dict]:
        """Fire every timer due at or before `to` (a datetime or ISO text)."""
        instant = to if isinstance(to, datetime) else parse_timestamp(to, self.ruleset.shop.timezone)
        start = len(self.recording.actions)
        self._session.advance(instant)
        return self.recording.actions[start:]

    def finish(self) -> list[dict]:
        """Report the messages still held by quiet hours or deferring caps (status `deferred`)."""
        start = len(self.recording.actions)
        self._session.advance(None, report_pending=True)
        return self.recording.actions[start:]

    def profile(self, customer_id: str) -> dict:
        return dict(self._engine.profile(customer_id).mapping())

    def pending_timers(self) -> list:
        return self._engine.pending_timers()

    def _event(self, value) -> Event:
        if isinstance(value, Event):
            event = value
        else:
            if self.clock is not None and isinstance(value, dict) and "at" not in value:
                value = {**value, "at": self.clock.now().isoformat()}
            event = Event.from_dict(value, default_tz=self.ruleset.shop.timezone)
        if event.id is None:
            digest = event.to_json()
            self._occurrences[digest] = self._occurrences.get(digest, 0) + 1
            event = Event(type=event.type, customer_id=event.customer_id, at=event.at, data=event.data,
                          id=synthetic_id(event, self._occurrences[digest]))
        return event


def run_events(rules, events, *, backend: str = "python", until=None, functions=None) -> list[dict]:
    """One-shot replay for tests: a fresh in-memory `Shop` on `rules` runs `events` to the end
    (`until`, default the last event plus `settling_time`) and returns every action reported."""
    with Shop(rules, backend=backend, functions=functions) as shop:
        shop.run(events, until=until)
        return list(shop.actions)


def settling_time(ruleset, instants=()) -> timedelta:
    """How long after the last event every consequence of the rules has happened.

    A generous bound: the longest rule or step delay (durations added up, plus the longest
    product cycle where `cycle` is used, plus the events' own span when cycles are learned),
    three deferrals of the longest cap, a day for quiet hours, and the lifecycle thresholds
    when a rule listens to `stage.changed`.
    """
    longest_cycle = max((p.cycle for p in ruleset.products if p.cycle is not None), default=timedelta(0))
    if any(p.learn_cycle for p in ruleset.products) and instants:
        longest_cycle = max(longest_cycle, max(instants) - min(instants))
    delays = [timedelta(0)]
    for rule in ruleset.active_rules:
        trees = [rule.after] + [step.after for step in (rule.escalate.steps if rule.escalate else ())]
        for tree in trees:
            if tree is not None:
                durations, uses_cycle = _durations(tree)
                delay = sum(durations, timedelta(0)) + (longest_cycle if uses_cycle else timedelta(0))
                delays.append(min(delay, MAX_DURATION))  # the engine skips longer delays
    total = max(delays) + 3 * caps_horizon(ruleset.caps) + timedelta(days=1, minutes=1)
    if any(rule.on == "stage.changed" for rule in ruleset.active_rules):
        total += max(ruleset.lifecycle.dormant_after, ruleset.lifecycle.churned_after)
    return total


def _durations(tree) -> tuple[list[timedelta], bool]:
    """The absolute duration literals in an expression tree, and whether it reads `cycle`."""
    found: list[timedelta] = []
    uses_cycle = False
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Literal):
            if isinstance(node.value, timedelta):
                found.append(abs(node.value))
        elif isinstance(node, Name):
            uses_cycle |= node.root == "cycle"
        elif attrs.has(type(node)):
            stack.extend(getattr(node, f.name) for f in attrs.fields(type(node)))
        elif isinstance(node, (tuple, list)):
            stack.extend(node)
    return found, uses_cycle


def _is_ruleset(value) -> bool:
    return not isinstance(value, (str, Path))
