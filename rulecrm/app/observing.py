"""What the live runner tells an observer as it works (`rulecrm run --metrics`); every method here does nothing.

The runner, its sessions and their engines call these methods and know nothing else of who listens:
`rulecrm.app.metrics` implements them with Prometheus metrics, and only `run --metrics` imports it.
Delivery answers are not here: an observer hears them as any plugin does, through the
`rulecrm_action_dispatched` hook, and the time of each send through the dispatcher's `on_send_timed`.

All methods but `state_changed` run on the runner's thread, the one that owns the state.
"""
from __future__ import annotations

# The runner's life, in this order; /healthz says "ok" only while `RUNNING`.
STARTING, RUNNING, STOPPING, STOPPED = "starting", "running", "stopping", "stopped"
STATES = (STARTING, RUNNING, STOPPING, STOPPED)


class StepObserver:
    """What a session's engine did in a step, as it does it; it counts once the step is committed.

    The engine calls `action_decided` and `timer_fired` before the step's transaction ends. Then the
    applier calls `step_committed()`, or `step_discarded()` when the step was rolled back (it is
    then redone, and seen again).
    """

    def action_decided(self, action) -> None:
        """The engine gave `action` a status (`queued`, `sent`, `suppressed`, `deferred`)."""

    def timer_fired(self, timer) -> None:
        """The engine fired `timer` (its `due` is a datetime)."""

    def step_committed(self) -> None:
        """The step's transaction committed."""

    def step_discarded(self) -> None:
        """The step's transaction was rolled back: forget what was seen since the last commit."""


class RunObserver(StepObserver):
    """Everything the live runner reports: its sessions' steps, and its own life and work."""

    def state_changed(self, state: str) -> None:
        """The runner is now in `state` (one of STATES); may be called from a signal's relay thread."""

    def opened(self, session, source_names=()) -> None:
        """The runner opened its state (`session`: a Session, or ShardSessions on a partitioned state) and
        its sources (by name)."""

    def lines_committed(self, outcomes, handed_over: dict[str, float], committed_at: float) -> None:
        """A step committed `outcomes` ((Input, outcome) pairs). `handed_over[source name]` is when the
        source's batch was polled, `committed_at` when the step committed (both `time.monotonic()`)."""

    def timer_set_aside(self) -> None:
        """A timer whose firing failed was kept in the dead-letter store."""

    def reloaded(self, ok: bool) -> None:
        """The rule files changed and were loaded again (`ok`), or were refused (the old rules stay)."""

    def send_timed(self, channel: str, seconds: float) -> None:
        """One send attempt on `channel` took `seconds` (called on the channel's worker thread)."""
