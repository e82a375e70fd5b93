"""`rulecrm replay`: apply an events file in event-time order and write the actions decided."""
from __future__ import annotations

import contextlib
import sys

import click

from rulecrm.cli.backend_option import backend_option, note_python_stands_in
from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_ERROR, echo_err, reported_errors
from rulecrm.masking import mask_personal
from rulecrm.timeutil import parse_timestamp


@click.command("replay")
@click.option("--rules", "rules", required=True, type=click.Path(exists=True), help="Rules directory or file.")
@click.option("--events", "events", required=True, type=click.Path(exists=True, dir_okay=False), help="Events JSONL.")
@click.option("--until", "until", default=None,
              help="Fire timers due at or before this time (default: the last event's).")
@click.option("--state", "state", default=None,
              help="SQLite state file (with --partitions, a directory); a second replay of the same events outputs "
                   "nothing.")
@click.option("--out", "out", default="-", show_default=True, type=click.Path(dir_okay=False),
              help="Write the actions as JSONL to this file ('-': stdout).")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "table"]), default=None,
              help="Actions as JSON lines or as a table for people (default: table on a terminal, else jsonl).")
@backend_option
@click.option("--dispatch", "dispatch", is_flag=True,
              help="Deliver the actions through their channels (messages real people!).")
@click.option("--partitions", "partitions", type=click.IntRange(min=1), default=None, metavar="N",
              help="Replay in N partitions by customer; --state is then a directory (default: that of a "
                   "partitioned --state).")
@click.option("--workers", "workers", type=click.IntRange(min=1), default=None, metavar="K",
              help="Replay the partitions on a local Dask cluster of this many worker processes.")
@click.option("--scheduler", "scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Replay the partitions on the Dask cluster of this scheduler (--state on a shared file system).")
@click.option("--progress/--no-progress", "progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
@click.option("--report", "report", default=None, metavar="PATH", type=click.Path(),
              help="Also write an HTML report of the actions to this file (one self-contained page).")
@pass_cli_context
def replay_command(context, rules, events, until, state, out, output_format, backend, dispatch, partitions, workers,
                   scheduler, progress, report):
    """Apply EVENTS in event-time order and decide the actions; channels are called only with --dispatch."""
    from rulecrm.app.partitioned_replay import replay_partitioned
    from rulecrm.app.replay import replay
    from rulecrm.app.stopping import Interrupted, catch_stop_signals
    from rulecrm.plugins import load_rules_with

    manager = context.manager
    with reported_errors():
        ruleset = load_rules_with(manager, rules)
    until_at = None
    if until is not None:
        try:
            until_at = parse_timestamp(until, ruleset.shop.timezone)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from None
    note_python_stands_in(backend, echo_err)
    partitioned = _partitioned(partitions, workers, scheduler, state, dispatch)
    if report is not None:
        from rulecrm.reports.writing import check_writable

        with reported_errors():
            check_writable(report, out=out)  # before the replay, which may take hours
    if progress is None:
        progress = sys.stderr.isatty()

    def report_rejected(line_no, error):
        echo_err(f"{events}:{line_no}: rejected: {mask_personal(error)}")

    signals = catch_stop_signals()

    def stop():
        return signals.requested

    try:
        with reported_errors(), contextlib.ExitStack() as resources:
            stream = None
            if out == "-":
                stream = sys.stdout
            elif out is not None:
                stream = resources.enter_context(open(out, "w", encoding="utf-8"))
            if _output_format(output_format, out) == "table":
                stream = _table(stream, to_terminal=out == "-")
            log = None
            if report is not None:  # the report reads the very lines --out gets
                from rulecrm.reports.collect import ActionLog

                stream = log = resources.enter_context(ActionLog(stream))
            if partitioned:
                tasks = task_runner(resources, workers, scheduler, progress, stop)
                summary = replay_partitioned(
                    rules, events, partitions=partitions, state=state, tasks=tasks, until=until_at, out=stream,
                    backend_name=backend, on_rejected=report_rejected, plugin_manager=manager, ruleset=ruleset,
                    stop=stop,
                )
            else:
                summary = replay(
                    rules, events, until=until_at, state=state, out=stream, backend_name=backend,
                    progress=progress, on_rejected=report_rejected, plugin_manager=manager,
                    dispatch=dispatch, dispatch_options={"on_warning": echo_err}, stop=stop, ruleset=ruleset,
                )
            if log is not None:
                _write_report(report, log, rules=rules, events=events, until=until_at, ruleset=ruleset,
                              summary=summary, partitions=_partitions_of(partitions, state) if partitioned else None)
    except Interrupted:
        kept = (f"the batches committed so far are in {state}; run the same command again to finish"
                if state not in (None, ":memory:") else "nothing was kept (no --state)")
        echo_err(f"replay stopped by a signal before the end: {kept}")
        return EXIT_ERROR
    finally:
        signals.release()
    for line in summary.lines():
        echo_err(line)
    if report is not None:
        echo_err(f"report written to {report}")
    return summary.exit_code


def _write_report(path, log, *, rules, events, until, ruleset, summary, partitions) -> None:
    from rulecrm.reports.pages import replay_page
    from rulecrm.reports.writing import write_report

    log.finish()
    rule_ids = [rule.id for rule in ruleset.active_rules]
    write_report(path, replay_page(log, rules=rules, events=events, until=until, rule_ids=rule_ids, summary=summary,
                                   partitions=partitions))


def _partitions_of(partitions, state) -> int | None:
    """The number of partitions of a partitioned replay: given, or that of its --state."""
    if partitions is not None or state is None:
        return partitions
    from rulecrm.state.partitioned import PartitionedState

    return PartitionedState.open(state).partitions


def _partitioned(partitions, workers, scheduler, state, dispatch) -> bool:
    """Whether the options ask for a partitioned replay; a usage error for options that cannot go together."""
    from rulecrm.state.partitioned import is_partitioned

    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    partitioned = partitions is not None or workers is not None or scheduler is not None or (
        state is not None and is_partitioned(state))
    if not partitioned:
        return False
    if dispatch:
        raise click.UsageError("--dispatch delivers from one state: it cannot be used with partitions")
    if scheduler is not None and state is None:
        raise click.UsageError("--scheduler needs --state: a directory that every worker of the cluster reaches")
    if partitions is None and not (state is not None and is_partitioned(state)):
        raise click.UsageError("--workers and --scheduler need --partitions N (or a partitioned --state)")
    return True


def _output_format(chosen: str | None, out: str) -> str:
    """`--format`, else a table for someone reading stdout at a terminal and JSON lines for a file or a pipe."""
    if chosen is not None:
        return chosen
    return "table" if out == "-" and sys.stdout.isatty() else "jsonl"


def _table(stream, *, to_terminal: bool):
    """The table writer in front of `stream`, as wide as the terminal (a file's: 120 columns)."""
    import shutil

    from rulecrm.cli.action_table import ActionTable

    return ActionTable(stream, width=shutil.get_terminal_size((120, 24)).columns if to_terminal else 120)


def task_runner(resources, workers, scheduler, progress, stop):
    """Where the partitions' tasks run: a Dask cluster, or this process one task after another."""
    if workers is None and scheduler is None:
        from rulecrm.app.partitioned_replay import InProcessTasks

        return InProcessTasks(progress=progress, stop=stop)
    from rulecrm.app.on_dask import dask_tasks

    return resources.enter_context(dask_tasks(workers=workers, scheduler=scheduler, progress=progress, stop=stop))
