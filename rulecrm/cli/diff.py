"""`rulecrm diff`: what a rule change would have done to a history, as actions that appear, disappear or change."""
from __future__ import annotations

import contextlib

import click

from rulecrm.cli.backend_option import backend_option, note_python_stands_in
from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, echo_err, reported_errors
from rulecrm.masking import mask_personal
from rulecrm.timeutil import parse_timestamp


@click.command("diff")
@click.option("--rules", "rules", required=True, type=click.Path(exists=True), help="Old rules (directory or file).")
@click.option("--rules-new", "rules_new", required=True, type=click.Path(exists=True),
              help="The new rules (directory or file).")
@click.option("--events", "events", required=True, type=click.Path(exists=True, dir_okay=False), help="Events JSONL.")
@click.option("--until", "until", default=None,
              help="Fire timers due at or before this time (default: the last event's), under both rule sets.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
@click.option("--examples", "examples", type=click.IntRange(min=0), default=3, show_default=True, metavar="N",
              help="Examples shown per rule and kind of difference.")
@backend_option
@click.option("--partitions", "partitions", type=click.IntRange(min=1), default=None, metavar="N",
              help="Replay each rule set in N partitions by customer.")
@click.option("--workers", "workers", type=click.IntRange(min=1), default=None, metavar="K",
              help="Replay the partitions on a local Dask cluster of this many worker processes.")
@click.option("--report", "report_path", default=None, metavar="PATH", type=click.Path(),
              help="Also write an HTML report of both sides' actions to this file (one self-contained page).")
@pass_cli_context
def diff_command(context, rules, rules_new, events, until, as_json, examples, backend, partitions, workers,
                 report_path):
    """Replay EVENTS under the old and the new rules and report the actions that appear, disappear or change."""
    import json

    from rulecrm.app import diffing
    from rulecrm.app.diff_report import as_json as report_json
    from rulecrm.app.diff_report import render_text
    from rulecrm.app.stopping import Interrupted, catch_stop_signals

    if workers is not None and partitions is None:
        raise click.UsageError("--workers needs --partitions N")
    manager = context.manager
    with reported_errors():
        old_set, new_set = _load_both(manager, rules, rules_new)
    old = diffing.RuleSetRun(rules, old_set, _until(until, old_set))
    new = diffing.RuleSetRun(rules_new, new_set, _until(until, new_set))
    note_python_stands_in(backend, echo_err)
    if report_path is not None:
        from rulecrm.reports.writing import check_writable

        with reported_errors():
            check_writable(report_path)  # before both replays
    rejected_lines: set[int] = set()

    def report_rejected(line_no, error):  # both replays read the same lines: each is listed once
        if line_no == 0 or line_no not in rejected_lines:
            rejected_lines.add(line_no)
            echo_err(f"{events}:{line_no}: rejected: {mask_personal(error)}")

    signals = catch_stop_signals()
    try:
        with reported_errors(), contextlib.ExitStack() as resources:
            options = {"backend_name": backend, "on_rejected": report_rejected, "plugin_manager": manager,
                       "stop": lambda: signals.requested}
            if partitions is None:
                replay_into = diffing.single_replay(**options)
            else:
                from rulecrm.cli.replay import task_runner

                tasks = task_runner(resources, workers, None, False, options["stop"])
                replay_into = diffing.partitioned_replay(partitions=partitions, tasks=tasks, **options)
            logs: list = []  # each replay's actions, old then new, for the report
            if report_path is not None:
                from rulecrm.reports.collect import logging_replays

                replay_into = logging_replays(replay_into, resources, logs)
            report = diffing.diff_replays(old, new, events, replay_into, examples=examples)
            if report_path is not None:
                from rulecrm.reports.pages import diff_page
                from rulecrm.reports.writing import write_report

                write_report(report_path, diff_page(*logs, report, partitions=partitions))
    except Interrupted:
        echo_err("diff stopped by a signal before the end: nothing was kept")
        return EXIT_ERROR
    finally:
        signals.release()
    if as_json:
        click.echo(json.dumps(report_json(report), ensure_ascii=False, indent=2))
    else:
        for line in render_text(report):
            click.echo(line)
    old_summary = report.summaries[0]
    echo_err(f"replayed {old_summary.events} events under each rule set (backend {old_summary.backend})")
    rejected = max(summary.rejected for summary in report.summaries)
    if rejected:
        echo_err(f"{rejected} line(s) rejected (listed above): the comparison is of the other lines")
    if report_path is not None:
        echo_err(f"report written to {report_path}")
    return EXIT_REJECTED if rejected else EXIT_OK


def _load_both(manager, old_path, new_path):
    """Both rule sets; every error of either is reported, not only the first set's."""
    from rulecrm.errors import RuleFileError
    from rulecrm.plugins import load_rules_with

    loaded, diagnostics = [], []
    for path in (old_path, new_path):
        try:
            loaded.append(load_rules_with(manager, path))
        except RuleFileError as exc:
            diagnostics.extend(exc.diagnostics)
    if diagnostics:
        raise RuleFileError(diagnostics)
    return loaded


def _until(text, ruleset):
    """`--until` in this rule set's shop time zone (a time without offset), as `replay` reads it."""
    if text is None:
        return None
    try:
        return parse_timestamp(text, ruleset.shop.timezone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None
