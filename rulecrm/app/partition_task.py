"""The second phase of a partitioned replay: replay one partition on its shard, in two tasks.

`apply_partition` is one `Session` on the shard's state file fed the partition's lines in event
time, with their line numbers in the input file (so dead letters keep them), batched like
`rulecrm replay`. It returns the time of the last event it applied. Once every partition has,
`finish_partition` opens the shard again and fires its timers up to the time of the last event of
the whole input (or --until) and reports the actions still held, as a single replay does at its
end: a partition whose own last event is earlier must still fire the timers due after it.

Both tasks write the actions they report to the partition's part file (`rulecrm.app.merging`).
Each task is a plain function of picklable arguments, so a Dask worker can run it as well as the
command's own process.
"""
from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import attrs

from rulecrm.app.merging import PartFile
from rulecrm.app.replay import ActionWriter, batch_size
from rulecrm.app.session import FIXED_BEFORE, NOT_APPLIED, Input, Session
from rulecrm.app.splitting import read_pieces
from rulecrm.app.stopping import Interrupted
from rulecrm.engine.core import APPLIED, DUPLICATE
from rulecrm.sources.reader import Rejected, decode_line, read_event_lines


@attrs.frozen
class PartitionJob:
    """Everything a task needs to replay partition `shard`; every path must be reachable by the worker."""

    shard: int
    shard_path: str  # the partition's state file
    part_path: str  # the partition's part file
    rules: str
    backend: str
    source: str  # the events file as the command line names it: the `source` of its dead letters
    pieces_dir: str
    blocks: tuple[tuple[int, int], ...]  # (block index, lines before the block), in block order
    until: datetime | None = None  # --until: later events are not applied
    scratch: bool = False  # the shard is temporary (no --state): written as a replay without --state writes


@attrs.frozen
class PartitionResult:
    """What one task did: ReplaySummary counts, action statuses, and the last applied event's time."""

    shard: int
    counts: dict
    actions: Counter
    last_at: datetime | None = None


def apply_partition(job: PartitionJob, *, rules=None, stop=None) -> PartitionResult:
    """Apply the partition's lines in event-time order. `rules`: (plugin manager, rule set) already
    loaded in this process, else they are loaded from `job.rules`; `stop()` true: Interrupted."""
    counts = Counter()
    last_at = None
    with PartFile(job.part_path) as part:
        writer = ActionWriter(sink=part.add)
        with _session(job, rules, writer, part) as session:
            # a re-reader: pieces already in time order are streamed without a sort
            items = read_event_lines(functools.partial(_piece_lines, job), default_tz=session.ruleset.shop.timezone)
            size = batch_size(session.store)
            while batch := list(itertools.islice(items, size)):
                if stop is not None and stop():
                    raise Interrupted()
                with part.batch():
                    last_at = _apply_batch(session, job, batch, counts, part, last_at, stop)
    return PartitionResult(job.shard, dict(counts), writer.counts, last_at)


def finish_partition(job: PartitionJob, until: datetime | None, *, rules=None, stop=None) -> PartitionResult:
    """Fire the partition's timers due at or before `until` (the whole input's last event time, or
    --until) and report the actions still held; then index the part file for the merge."""
    if stop is not None and stop():
        raise Interrupted()
    with PartFile(job.part_path) as part:
        writer = ActionWriter(sink=part.add)
        with _session(job, rules, writer, part) as session, part.batch():
            session.advance(until, report_pending=True)
        part.finish()
    return PartitionResult(job.shard, {}, writer.counts)


def _session(job: PartitionJob, rules, writer: ActionWriter, part: PartFile) -> Session:
    manager, ruleset = rules if rules is not None else (None, None)
    return Session.open(
        job.rules, job.shard_path, ruleset=ruleset, manager=manager, backend_name=job.backend,
        on_decided=writer.write_all, on_report=writer,
        on_timer_set_aside=lambda key, error: part.reject(0, f"timer {key} set aside: {error}"),
        scratch=job.scratch,
    )


def _apply_batch(session, job, batch, counts, part, last_at, stop):
    """One store transaction, as `rulecrm replay` applies a batch; the new last event time."""
    inputs = []
    for line_no, item in batch:
        counts["events"] += 1
        if not isinstance(item, Rejected) and job.until is not None and item.at > job.until:
            counts["after_until"] += 1
        else:
            inputs.append(Input(job.source, line_no, item))
    applied = session.apply(inputs, stop=stop)
    outcomes = applied.counts
    counts["applied"] += outcomes[APPLIED]
    counts["duplicates"] += outcomes[DUPLICATE]
    counts["fixed_before"] += outcomes[FIXED_BEFORE]
    counts["rejected"] += sum(outcomes[outcome] for outcome in NOT_APPLIED)
    for line, reason in applied.problems:
        part.reject(line.line_no, reason)
    for event in applied.events():
        if last_at is None or event.at > last_at:
            last_at = event.at
    return last_at


def _piece_lines(job: PartitionJob) -> Iterator[tuple[int, str, str | None]]:
    """The partition's (line number, text, problem) in line order, for `read_event_lines`."""
    for line_no, raw in read_pieces(job.pieces_dir, list(job.blocks), job.shard):
        yield (line_no, *decode_line(raw))
