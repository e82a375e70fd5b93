"""The live runner's Prometheus metrics (`rulecrm run --metrics HOST:PORT`); docs/running.md lists them.

`RunMetrics` is the runner's observer (`rulecrm.app.observing`) and a plugin of the
`rulecrm_action_dispatched` hook, registered on the runner's plugin manager like any other. Its metrics
live in a registry of its own, served by `rulecrm.app.metrics_server`. Only `run --metrics` imports this
module, and with it prometheus_client (a tenth of a second of start-up).

What the engine does in a step (statuses given, timers fired) is held until the step commits, and
dropped if it is rolled back: a step redone after a failure is counted once.
"""
from __future__ import annotations

import threading
import time
from array import array
from collections import Counter as Tally

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from rulecrm.app.observing import RUNNING, STARTING, STATES, RunObserver
from rulecrm.app.outbox_depth import OutboxDepth
from rulecrm.app.session import FIXED_BEFORE, REJECTED, SET_ASIDE
from rulecrm.engine.core import APPLIED, CONFLICT, DUPLICATE
from rulecrm.hookspecs import hookimpl

PLUGIN_NAME = "rulecrm-metrics"
# seconds; a timer fires within a step of its due time, or hours late after the runner was stopped
TIMER_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# which counter an input line's outcome goes to (a rejected line fixed and retried before goes to none)
EVENT_COUNTERS = {APPLIED: "applied", DUPLICATE: "duplicate", REJECTED: "rejected", CONFLICT: "rejected",
                  SET_ASIDE: "rejected", FIXED_BEFORE: None}
DEAD_LETTER_REASONS = {REJECTED: "invalid", CONFLICT: "id_conflict", SET_ASIDE: "engine_failure"}
TIMER_DEAD_LETTER = "timer"
DELIVERY_FAILURES = ("failed", "dead")


class RunMetrics(RunObserver):
    """The metrics of one runner, in `registry`; `health()` is what /healthz answers.

    `clock` (epoch seconds) is the runner's wall clock: timer lag and the oldest queued action's age.
    """

    def __init__(self, *, clock=time.time):
        self._clock = clock
        self._state = STARTING
        self._state_lock = threading.Lock()
        self._outbox = OutboxDepth()
        self._step_actions: list[tuple[str, str, str]] = []  # (rule, status, key) seen in the open step
        self._step_lags = array("d")  # timer lags seen in the open step, in seconds
        prometheus_client.disable_created_metrics()  # no `*_created` series beside every counter
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # memory, CPU, open files
        self.events = {
            "applied": Counter("rulecrm_events_applied", "Events applied, by source.", ["source"], registry=registry),
            "duplicate": Counter("rulecrm_events_duplicate", "Events whose id was applied before (not applied "
                                 "again), by source.", ["source"], registry=registry),
            "rejected": Counter("rulecrm_events_rejected", "Input lines not applied (invalid, an id used by "
                                "another event, or set aside when the engine failed on them), by source.",
                                ["source"], registry=registry),
        }
        self.actions = Counter("rulecrm_actions", "Actions reaching a status, by rule: decided (queued, sent, "
                               "suppressed, deferred) and answered by a channel (sent, failed, dead).",
                               ["rule", "status"], registry=registry)
        outbox = Gauge("rulecrm_outbox_depth", "Actions waiting for their channel: queued, or failed and waiting "
                       "for a retry.", ["status"], registry=registry)
        outbox.labels(status="queued").set_function(lambda: self._outbox.queued_count)
        outbox.labels(status="failed").set_function(lambda: self._outbox.failed_count)
        Gauge("rulecrm_outbox_oldest_queued_age_seconds", "Seconds the oldest queued action has waited for its "
              "channel (0 when none waits).", registry=registry).set_function(self._oldest_queued_age)
        self.timer_lag = Histogram("rulecrm_timer_lag_seconds", "Wall-clock time from a timer's due time to "
                                   "its firing.", buckets=TIMER_LAG_BUCKETS, registry=registry)
        self.decision_latency = Histogram("rulecrm_event_decision_latency_seconds", "Time from a source handing "
                                          "an event over to the commit of the step that applied it.",
                                          buckets=LATENCY_BUCKETS, registry=registry)
        self.delivery_duration = Histogram("rulecrm_delivery_duration_seconds", "Time of one send attempt, by "
                                           "channel.", ["channel"], buckets=LATENCY_BUCKETS, registry=registry)
        self.delivery_failures = Counter("rulecrm_delivery_failures", "Send attempts answered failed (to be "
                                         "retried) or dead (given up), by channel.", ["channel", "status"],
                                         registry=registry)
        self.dead_letters = Counter("rulecrm_dead_letters", "Lines (and timers) kept in the dead-letter store, by "
                                    "reason.", ["reason"], registry=registry)
        self.reloads = Counter("rulecrm_reloads", "Reloads of the edited rule files, by result.", ["result"],
                               registry=registry)
        self.shards_owned = Gauge("rulecrm_shards_owned", "Shards of a partitioned state this runner owns (0 on a "
                                  "state file).", registry=registry)
        self.shard_info = Info("rulecrm_shard", "One series per shard this runner owns.", ["shard"],
                               registry=registry)
        for reason in (*DEAD_LETTER_REASONS.values(), TIMER_DEAD_LETTER):
            self.dead_letters.labels(reason=reason)
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)

    # -- the plugin --------------------------------------------------------------------------
    def attach(self, manager) -> None:
        """Hear the delivery answers of the runner that uses `manager`."""
        manager.register(self, name=PLUGIN_NAME)
        self._manager = manager

    def detach(self) -> None:
        manager = getattr(self, "_manager", None)
        if manager is not None and manager.is_registered(self):
            manager.unregister(self)

    @hookimpl
    def rulecrm_action_dispatched(self, action, delivery) -> None:
        status = action.get("status")
        self.actions.labels(rule=action.get("rule") or "", status=status).inc()
        if status in DELIVERY_FAILURES:
            self.delivery_failures.labels(channel=action.get("channel") or "", status=status).inc()
        self._outbox.answered(action["key"], status)

    # -- /healthz ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(whether the runner's sources run, its state)."""
        state = self._state
        return state == RUNNING, state

    def state_changed(self, state: str) -> None:
        with self._state_lock:  # only forward: a stop asked during start-up is never undone by "running"
            if STATES.index(state) > STATES.index(self._state):
                self._state = state

    # -- the runner --------------------------------------------------------------------------
    def opened(self, session, source_names=()) -> None:
        shards = getattr(session, "owned_shards", ())
        self.shards_owned.set(len(shards))
        for shard in shards:
            self.shard_info.labels(shard=str(shard)).info({"partitions": str(session.partitioned.partitions)})
        for name in source_names:  # each source shows at 0 before its first event
            for counter in self.events.values():
                counter.labels(source=name)
        self._outbox.load(session.stores, self._clock())

    def lines_committed(self, outcomes, handed_over, committed_at) -> None:
        tally = Tally((line.source, outcome) for line, outcome in outcomes)
        for (source, outcome), count in tally.items():
            counter = EVENT_COUNTERS.get(outcome)
            if counter is not None:
                self.events[counter].labels(source=source).inc(count)
            if outcome in DEAD_LETTER_REASONS:
                self.dead_letters.labels(reason=DEAD_LETTER_REASONS[outcome]).inc(count)
            if outcome == APPLIED:
                latency = max(0.0, committed_at - handed_over.get(source, committed_at))
                for _ in range(count):
                    self.decision_latency.observe(latency)

    def timer_set_aside(self) -> None:
        self.dead_letters.labels(reason=TIMER_DEAD_LETTER).inc()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels(result="ok" if ok else "failed").inc()

    def send_timed(self, channel: str, seconds: float) -> None:
        self.delivery_duration.labels(channel=channel).observe(seconds)

    # -- a step's engine ---------------------------------------------------------------------
    def action_decided(self, action) -> None:
        self._step_actions.append((action.rule, str(action.status), action.key))

    def timer_fired(self, timer) -> None:
        # an event from the future (a client's clock ahead) fires timers early: no lag
        self._step_lags.append(max(0.0, self._clock() - timer.due.timestamp()))

    def step_committed(self) -> None:
        if self._step_actions:
            for (rule, status), count in Tally((rule, status) for rule, status, _key in self._step_actions).items():
                self.actions.labels(rule=rule, status=status).inc(count)
            self._outbox.add_queued([key for _rule, status, key in self._step_actions if status == "queued"],
                                    self._clock())
        for lag in self._step_lags:
            self.timer_lag.observe(lag)
        self.step_discarded()

    def step_discarded(self) -> None:
        self._step_actions.clear()
        del self._step_lags[:]

    def _oldest_queued_age(self) -> float:
        since = self._outbox.oldest_queued_at
        return 0.0 if since is None else max(0.0, self._clock() - since)
