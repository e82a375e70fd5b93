"""`rulecrm run`: the live runner's command line (signals, exit codes, messages on stderr)."""
from __future__ import annotations

import contextlib
import os
import sys

import click

from rulecrm.app.stopping import catch_stop_signals
from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_OK, reported_errors
from rulecrm.cli.util import echo_err as _echo_err


@click.command("run")
@click.option("--rules", "rules", required=True, type=click.Path(exists=True),
              help="Rules directory or file (reloaded on change).")
@click.option("--state", "state", required=True, type=click.Path(),
              help="SQLite state file, or a partitioned state directory (one runner at a time).")
@click.option("--partitions", "partitions", type=int, default=None, metavar="N",
              help="Make a new --state directory a partitioned state of N shards (an existing one must have N).")
@click.option("--source", "sources", multiple=True, metavar="NAME:ARG",
              help="Event source, repeatable: jsonl:PATH (follow a file), http:127.0.0.1:PORT (POST /events).")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False),
              help="Append actions as JSONL here ('-' for stdout).")
@click.option("--backend", "backend", type=click.Choice(["durable", "python"]), default=None, help="Matching backend.")
@click.option("--once", is_flag=True, help="Apply what the sources hold now, fire due timers, deliver, then exit.")
@click.option("--allow-remote", is_flag=True,
              help="Let the http source bind a non-loopback address (it has no authentication).")
@pass_cli_context
def run_command(context, rules, state, partitions, sources, out, backend, once, allow_remote):
    """Run live: ingest from sources, fire timers on the wall clock, deliver through channels.

    Stops cleanly on SIGTERM or Ctrl-C (the current step finishes and is committed).
    """
    # First thing, before the heavy imports: a SIGTERM from here on is a clean stop (exit 0), not a
    # kill. The entry point installs them even earlier (rulecrm/__main__.py). As the program itself
    # (not called in-process, by a test), keep them until exit: a signal while closing is no kill.
    signals = catch_stop_signals(keep=sys.argv[1:2] == ["run"])
    try:
        return _run(signals, context, rules, state, partitions, sources, out, backend, once, allow_remote)
    finally:
        signals.release()  # in-process callers get their handlers back; the command line keeps ours


def _run(signals, context, rules, state, partitions, sources, out, backend, once, allow_remote):
    from rulecrm.app.runner import Runner
    from rulecrm.backends import default_backend_name

    if backend is None and default_backend_name() != "durable":
        _echo_err("note: durable-rules is not available on this Python; using the python backend")
    stream = None
    runner = None
    with reported_errors(), contextlib.ExitStack() as cleanup:
        _check_state(state, partitions)
        if out == "-":
            stream = sys.stdout
        elif out is not None:
            # line-buffered: each action is written whole
            stream = cleanup.enter_context(open(out, "a", encoding="utf-8", buffering=1))
        cleanup.callback(lambda: runner is not None and runner.close())  # runs before the stream closes
        runner = Runner(rules, state, sources=sources, out=stream, backend_name=backend, allow_remote=allow_remote,
                        manager=context.manager, on_message=_echo_err)
        signals.on_stop(runner.stop)  # stops at once when a signal came during the imports
        if not runner.stopping:  # asked to stop before anything started: nothing to start
            runner.start()  # a signal while starting up stops right after it
            _echo_err(f"running: rules {rules}, state {state}, sources {', '.join(sources) or 'none'}")
            runner.run(once=once)
        stats = runner.stats
        _echo_err(f"stopped: applied {stats['applied']}, duplicates {stats['duplicates']}, "
                  f"rejected {stats['rejected']}, reloads {stats['reloads']}")
    return EXIT_OK


def _check_state(state, partitions) -> None:
    """A directory must be a partitioned state (made here with --partitions); a file takes no --partitions."""
    from rulecrm.app.partitioned_replay import open_partitioned_state
    from rulecrm.errors import UsageError
    from rulecrm.state.partitioned import is_partitioned

    if partitions is not None:
        open_partitioned_state(state, partitions)  # made when new; an existing one must have N
    elif os.path.isdir(state) and not is_partitioned(state):
        raise UsageError(f"--state {state} is a directory but not a partitioned state (no manifest.json); "
                         "give --partitions N to make one, or a state file")
