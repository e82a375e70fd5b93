"""`rulecrm replay --partitions N`: a replay cut by customer into N partitions replayed side by side.

Every customer's events, profile, timers and actions live in one partition (its shard of a
partitioned state, `rulecrm.state.partitioned`), and nothing the engine decides for one customer
depends on another's, so the partitions can be replayed independently and their outputs merged.
The phases, each a set of independent tasks:

1. split (`rulecrm.app.splitting`): byte ranges of the input, one task each, cut into pieces per
   partition; the tasks' line counts give every line its number in the file.
2. replay (`rulecrm.app.partition_task`): one task per partition applies its lines in event time;
   then one task per partition fires its timers up to the last event time of the whole input (or
   --until), as a single replay does at its end.
3. merge (`rulecrm.app.merging`): the actions by customer id, the summaries added up.

`TaskRunner` runs a phase's tasks: `InProcessTasks` one after another in this process, or
`rulecrm.app.on_dask` on a Dask cluster. The pieces and part files are in a temporary directory
inside the state directory (where every worker of a cluster on a shared file system reaches
them), removed at the end, on failure and on a stop.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import time as wallclock
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from rulecrm import plugins
from rulecrm.app.merging import add_counts, merge_actions, merge_rejections
from rulecrm.app.partition_task import PartitionJob, apply_partition, finish_partition
from rulecrm.app.replay import ReplaySummary
from rulecrm.app.splitting import plan_blocks, split_block
from rulecrm.app.stopping import Interrupted
from rulecrm.backends import default_backend_name
from rulecrm.errors import RulecrmError, UsageError
from rulecrm.state.partitioned import PartitionedState, is_partitioned

WORK_PREFIX = ".rulecrm-replay-"  # the temporary directory of one run inside the state directory


class PartitionFailed(RulecrmError):
    """A task of a partitioned replay failed; the message names the partition (or block) and why."""


class TaskRunner(Protocol):
    """Runs one phase's tasks and returns their results in the order of `jobs`; the first failure
    ends the phase (and the run) with its exception."""

    in_process: bool  # tasks share this process: they may be handed its loaded rules and stop flag
    parallelism: int  # tasks that can run at once (the split cuts at least that many blocks)

    def run(self, task: Callable, jobs: Sequence, description: str) -> list: ...


class InProcessTasks:
    """Every task in this process, one after another."""

    in_process = True
    parallelism = 1

    def __init__(self, *, progress: bool = False, stop: Callable[[], bool] | None = None):
        self.progress = progress
        self.stop = stop

    def run(self, task: Callable, jobs: Sequence, description: str) -> list:
        results = []
        with progress_bar(self.progress, len(jobs), description) as bar:
            for job in jobs:
                if self.stop is not None and self.stop():
                    raise Interrupted()
                results.append(task(job))
                bar.update(1)
        return results


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str):
    """A tqdm bar over a phase's tasks on stderr (or a stand-in that shows nothing)."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit=" tasks", leave=False) as bar:
        yield bar


class _NoBar:
    def update(self, n: int) -> None:
        pass


def open_partitioned_state(state: str | None, partitions: int | None) -> PartitionedState:
    """The partitioned state of `--state` (made when new), or a temporary one (state None).

    A partitioned --state brings its own number of partitions; `partitions` given and different
    is refused. A plain state file cannot be partitioned.
    """
    if state is None:
        if partitions is None:
            raise UsageError("a partitioned replay without --state needs --partitions N")
        return PartitionedState.create(tempfile.mkdtemp(prefix="rulecrm-partitions-"), partitions)
    if is_partitioned(state):
        return PartitionedState.open(state, partitions)
    if os.path.isfile(state):
        raise UsageError(f"--state {state} is a state file (one partition); --partitions needs a directory: "
                         "a new one, or the state directory of an earlier partitioned replay")
    if partitions is None:
        raise UsageError(f"--state {state} is not a partitioned state: give --partitions N to make one")
    return PartitionedState.create(state, partitions)


def replay_partitioned(
    rules_path,
    events_path,
    *,
    partitions: int | None = None,
    state: str | None = None,
    tasks: TaskRunner | None = None,
    until: datetime | None = None,
    out=None,
    backend_name: str | None = None,
    on_rejected=None,
    plugin_manager=None,
    ruleset=None,
    stop: Callable[[], bool] | None = None,
) -> ReplaySummary:
    """Replay like `rulecrm.app.replay.replay`, partition by partition, on `tasks` (default: in this
    process). `state`: a partitioned state directory (made when new; its number of partitions is
    kept), or None for a temporary one. `out` gets the actions in the merged order (module doc);
    `on_rejected(line_no, error)` each rejected line, in line order, once the partitions are done.
    """
    started = wallclock.perf_counter()
    manager = plugin_manager or plugins.build_plugin_manager()
    ruleset = ruleset or plugins.load_rules_with(manager, rules_path)
    tasks = tasks or InProcessTasks(stop=stop)
    backend = backend_name or default_backend_name()
    if not os.path.isfile(events_path):
        raise UsageError(f"--events {events_path} is not a regular file: a partitioned replay reads it in byte "
                         "ranges (save a stream to a file first)")
    partitioned = open_partitioned_state(state, partitions)
    summary = ReplaySummary(backend=backend, state=state)
    try:
        work = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=partitioned.path)
        try:
            local = {"rules": (manager, ruleset), "stop": stop} if tasks.in_process else {}
            pieces = os.path.join(work, "pieces")
            os.mkdir(pieces)
            jobs = _split(tasks, events_path, partitioned, work, pieces, rules_path, backend, until,
                          scratch=state is None)
            applied = tasks.run(_named(apply_partition, **local), jobs, "replay partitions")
            shutil.rmtree(pieces)  # a copy of the input, read by now
            last_at = max((r.last_at for r in applied if r.last_at is not None), default=None)
            finished = tasks.run(_named(finish_partition, until=until or last_at, **local), jobs, "fire timers")
            for result in [*applied, *finished]:
                add_counts(summary, result.counts, result.actions)
            parts = [job.part_path for job in jobs]
            for line_no, error in merge_rejections(parts):
                if on_rejected is not None:
                    on_rejected(line_no, error)
            merge_actions(parts, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if state is None:
            shutil.rmtree(partitioned.path, ignore_errors=True)
    summary.seconds = wallclock.perf_counter() - started
    return summary


def _split(tasks: TaskRunner, events_path, partitioned: PartitionedState, work: str, pieces_dir: str, rules_path,
           backend: str, until, *, scratch: bool) -> list[PartitionJob]:
    """Phase 1; the partitions' jobs, which know where their lines are. `scratch`: the shards are
    temporary, kept as a replay without --state keeps its store (`rulecrm.state.scratch`)."""
    path = os.path.abspath(events_path)
    blocks = plan_blocks(path, parallelism=tasks.parallelism)
    split = _named(split_block, path, partitions=partitioned.partitions, pieces_dir=pieces_dir)
    counts = tasks.run(split, blocks, "split the input")
    placed, lines_before = [], 0
    for block in counts:
        placed.append((block.index, lines_before))
        lines_before += block.lines
    return [
        PartitionJob(shard=shard, shard_path=os.path.abspath(partitioned.shard_path(shard)),
                     part_path=os.path.join(work, f"part-{shard:04d}.db"), rules=os.path.abspath(rules_path),
                     backend=backend, source=str(events_path), pieces_dir=pieces_dir, blocks=tuple(placed), until=until,
                     scratch=scratch)
        for shard in range(partitioned.partitions)
    ]


def _named(task: Callable, *args, **kwargs) -> Callable:
    """`task` with arguments bound, whose typed errors name the partition or block they happened in."""
    return functools.partial(_naming_failures, functools.partial(task, *args, **kwargs))


def _naming_failures(task: Callable, job):
    """Run `task(job)`; a RulecrmError or OSError becomes a PartitionFailed, one line that also
    crosses process boundaries (StorageError, for one, cannot be rebuilt from its pickle)."""
    try:
        return task(job)
    except (RulecrmError, OSError) as exc:
        where = f"partition {job.shard}" if isinstance(job, PartitionJob) else f"block {job.index} of the input"
        detail = f"{exc.filename}: {exc.strerror or exc}" if isinstance(exc, OSError) and exc.filename else str(exc)
        raise PartitionFailed(f"{where}: {detail}") from None
