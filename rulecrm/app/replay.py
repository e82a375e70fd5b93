"""`rulecrm replay`: stream an event file through the engine in event time and report what it decided."""
from __future__ import annotations

import itertools
import time as wallclock
from collections import Counter
from datetime import datetime

import attrs
import orjson

from rulecrm import plugins
from rulecrm.app.session import FIXED_BEFORE, NOT_APPLIED, Input, Session
from rulecrm.app.stopping import Interrupted
from rulecrm.backends import default_backend_name
from rulecrm.engine.core import APPLIED, DUPLICATE
from rulecrm.sources.reader import Rejected, read_events

# Events per store transaction. Bigger steps write each busy profile and timer less often; what
# they cost is memory (a step's decisions wait for its commit), which grows with the step and not
# with the shop. A run that keeps its state resumes from its last committed step, so its steps are
# smaller: a stop loses less work.
BATCH = 50_000
RESUMABLE_BATCH = 20_000


def batch_size(store) -> int:
    """Events per transaction on this store (BATCH, at most RESUMABLE_BATCH on a kept state)."""
    return min(BATCH, RESUMABLE_BATCH) if store.keeps_state else BATCH


@attrs.define
class ReplaySummary:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    fixed_before: int = 0  # malformed lines already fixed (or removed) in the dead-letter store
    after_until: int = 0
    state: str | None = None
    actions: Counter = attrs.field(factory=Counter)
    backend: str = ""
    seconds: float = 0.0
    rejections: list = attrs.field(factory=list)  # (line_no, error), the first few for the report

    def lines(self) -> list[str]:
        rate = self.events / self.seconds if self.seconds else 0.0
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.actions.items())) or "none"
        text = [
            f"replayed {self.events} events in {self.seconds:.2f}s ({rate:,.0f}/s, backend {self.backend})",
            f"applied {self.applied}, duplicates {self.duplicates}, rejected {self.rejected}"
            + (f", fixed before {self.fixed_before}" if self.fixed_before else "")
            + (f", after --until {self.after_until}" if self.after_until else ""),
            f"actions: {statuses}",
        ]
        if self.rejected and self.state not in (None, ":memory:"):
            text.append(f"rejected lines are in the dead-letter store: rulecrm dead-letters --state {self.state}")
        elif self.rejected:
            # without --state the dead-letter store is temporary: the lines above are all that remains
            text.append("rejected lines are listed above; replay with --state STATE to keep them for "
                        "`rulecrm dead-letters --retry`")
        if self.undelivered:
            text.append(f"{self.undelivered} action(s) not delivered (failed or dead): see their `error` in --out")
        return text

    @property
    def undelivered(self) -> int:
        return self.actions.get("failed", 0) + self.actions.get("dead", 0)

    @property
    def exit_code(self) -> int:
        """The command line's exit status (docs/cli.md): 4 undelivered, else 3 rejected, else 0."""
        return 4 if self.undelivered else 3 if self.rejected else 0


class ActionWriter:
    """Writes each reported action as one JSON line (or nowhere) and counts statuses.

    `sink(record)`, instead of a stream, takes each action's public dict itself (a partitioned
    replay's part file, which files the line under the record's customer).
    """

    def __init__(self, stream=None, *, sink=None):
        self.stream = stream
        self.sink = sink
        self.counts: Counter = Counter()
        self.written = 0

    def write_all(self, actions) -> None:
        for action in actions:
            self(action)

    def __call__(self, action) -> None:
        """`action`: an engine Action, or a dispatched outbox record (already a public dict)."""
        record = action if isinstance(action, dict) else action.public_dict()
        self.counts[record["status"]] += 1
        self.written += 1
        if self.sink is not None:
            self.sink(record)
        elif self.stream is not None:
            # orjson: actions are most of the output; the standard encoder was a tenth of replay time
            self.stream.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE).decode())


def replay(
    rules_path,
    events_path,
    *,
    until: datetime | None = None,
    state: str | None = None,
    out=None,
    backend_name: str | None = None,
    progress: bool = False,
    on_rejected=None,
    plugin_manager=None,
    dispatch: bool = False,
    dispatch_options: dict | None = None,
    stop=None,
    ruleset=None,
) -> ReplaySummary:
    """Apply the events in event-time order, then fire timers due at or before `until`.

    `out` is a text stream for the actions JSONL (or None). `on_rejected(line_no, error)` is
    called once for each malformed line and each line the engine failed on; both are kept in the
    dead-letter store. With `dispatch`, actions go through their channels after each committed
    batch (`rulecrm.channels.dispatch.Dispatcher`, built with `dispatch_options`) and retries are waited for
    before returning. `stop()` turning true (a stop signal) ends the replay at the next event by
    raising `rulecrm.app.stopping.Interrupted`: the batch in progress is rolled back, committed batches
    stay in the state, and temporary files are removed.
    """
    manager = plugin_manager or plugins.build_plugin_manager()
    ruleset = ruleset or plugins.load_rules_with(manager, rules_path)  # the caller's, when it loaded them
    started = wallclock.perf_counter()
    report = _once_per_line(on_rejected or (lambda line_no, error: None))
    summary = ReplaySummary(backend=backend_name or default_backend_name(), state=state)
    writer = ActionWriter(out)
    session = Session.open(
        rules_path, state, ruleset=ruleset, manager=manager, backend_name=summary.backend, deliver=dispatch,
        on_decided=writer.write_all, on_report=writer, dispatch_options=dispatch_options,
        on_timer_set_aside=lambda key, error: report(0, f"timer {key} set aside: {error}"),
    )
    with session:
        last_at = _run_events(session, events_path, until, summary, progress, report, stop)
        session.advance(until or last_at, report_pending=True)
        session.drain()
    summary.actions = writer.counts
    summary.seconds = wallclock.perf_counter() - started
    return summary


def _once_per_line(report):
    seen = set()

    def once(line_no, error):
        if line_no == 0 or line_no not in seen:
            seen.add(line_no)
            report(line_no, error)

    return once


def _run_events(session, events_path, until, summary, progress, report, stop):
    source = str(events_path)
    items = read_events(events_path, default_tz=session.ruleset.shop.timezone)
    bar = _progress_bar(progress)
    last_at = None
    size = batch_size(session.store)
    while True:
        batch = list(itertools.islice(items, size))
        if not batch:
            break
        if stop is not None and stop():
            raise Interrupted()
        inputs = []
        for line_no, item in batch:
            summary.events += 1
            if not isinstance(item, Rejected) and until is not None and item.at > until:
                summary.after_until += 1
            else:
                inputs.append(Input(source, line_no, item))
        applied = session.apply(inputs, stop=stop)
        counts = applied.counts
        summary.applied += counts[APPLIED]
        summary.duplicates += counts[DUPLICATE]
        summary.fixed_before += counts[FIXED_BEFORE]
        summary.rejected += sum(counts[outcome] for outcome in NOT_APPLIED)
        for line, reason in applied.problems:
            report(line.line_no, reason)
        for event in applied.events():
            if last_at is None or event.at > last_at:
                last_at = event.at
        session.deliver()  # only committed actions reach channels
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return last_at


def _progress_bar(enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" events", desc="replay", leave=False)
