"""`rulecrm replay`: apply an events file in event-time order and write the actions decided."""
from __future__ import annotations

import contextlib
import sys

import click

from rulecrm.app.stopping import Interrupted, catch_stop_signals
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
              help="SQLite state file; a second replay of the same events outputs nothing.")
@click.option("--out", "out", default="-", show_default=True, type=click.Path(dir_okay=False),
              help="Write the actions as JSONL to this file ('-': stdout).")
@click.option("--backend", "backend", type=click.Choice(["durable", "python"]), default=None, help="Matching backend.")
@click.option("--dispatch", "dispatch", is_flag=True,
              help="Deliver the actions through their channels (messages real people!).")
@pass_cli_context
def replay_command(context, rules, events, until, state, out, backend, dispatch):
    """Apply EVENTS in event-time order and decide the actions; channels are called only with --dispatch."""
    from rulecrm.app.replay import replay
    from rulecrm.backends import default_backend_name
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
    if backend is None and default_backend_name() != "durable":
        echo_err("note: durable-rules is not available on this Python; using the python backend")

    def report_rejected(line_no, error):
        echo_err(f"{events}:{line_no}: rejected: {mask_personal(error)}")

    signals = catch_stop_signals()
    try:
        with reported_errors(), contextlib.ExitStack() as resources:
            stream = None
            if out == "-":
                stream = sys.stdout
            elif out is not None:
                stream = resources.enter_context(open(out, "w", encoding="utf-8"))
            summary = replay(
                rules, events, until=until_at, state=state, out=stream, backend_name=backend,
                progress=sys.stderr.isatty(), on_rejected=report_rejected, plugin_manager=manager,
                dispatch=dispatch, dispatch_options={"on_warning": echo_err}, stop=lambda: signals.requested,
                ruleset=ruleset,
            )
    except Interrupted:
        kept = (f"the batches committed so far are in {state}; run the same command again to finish"
                if state not in (None, ":memory:") else "nothing was kept (no --state)")
        echo_err(f"replay stopped by a signal before the end: {kept}")
        return EXIT_ERROR
    finally:
        signals.release()
    for line in summary.lines():
        echo_err(line)
    return summary.exit_code
