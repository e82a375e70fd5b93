"""`rulecrm run`: the live runner's command line (signals, exit codes, messages on stderr)."""
from __future__ import annotations

import contextlib
import os
import sys

import click

from rulecrm.cli.backend_option import backend_option, note_python_stands_in
from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.stderr_log import FORMATS, stderr_log
from rulecrm.cli.util import EXIT_OK, reported_errors
from rulecrm.logline import LogLine


@click.command("run")
@click.option("--rules", "rules", required=True, type=click.Path(exists=True),
              help="Rules directory or file (reloaded on change).")
@click.option("--state", "state", required=True, type=click.Path(),
              help="SQLite state file, or a partitioned state directory (one runner at a time).")
@click.option("--partitions", "partitions", type=int, default=None, metavar="N",
              help="Make a new --state directory a partitioned state of N shards (an existing one must have N).")
@click.option("--shards", "shards", default=None, metavar="LIST",
              help="Own only these shards of a partitioned state, e.g. 0-3 or 0,2,5 (default: all); other runners "
                   "may own the others.")
@click.option("--source", "sources", multiple=True, metavar="NAME:ARG",
              help="Event source, repeatable: jsonl:PATH (follow a file), http:127.0.0.1:PORT (POST /events).")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False),
              help="Append actions as JSONL here ('-' for stdout).")
@backend_option
@click.option("--once", is_flag=True, help="Apply what the sources hold now, fire due timers, deliver, then exit.")
@click.option("--allow-remote", is_flag=True,
              help="Let the http source and --metrics bind a non-loopback address (they have no authentication).")
@click.option("--metrics", "metrics", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics (GET /metrics) and GET /healthz here, on loopback unless --allow-remote.")
@click.option("--log-format", "log_format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Write the messages on stderr as text lines, or as JSON lines.")
@pass_cli_context
def run_command(context, rules, state, partitions, shards, sources, out, backend, once, allow_remote, metrics,
                log_format):
    """Run live: ingest from sources, fire timers on the wall clock, deliver through channels.

    Stops cleanly on SIGTERM or Ctrl-C (the current step finishes and is committed).
    """
    # First thing, before the heavy imports: a SIGTERM from here on is a clean stop (exit 0), not a
    # kill. The entry point installs them even earlier (rulecrm/__main__.py). As the program itself
    # (not called in-process, by a test), keep them until exit: a signal while closing is no kill.
    from rulecrm.app.stopping import catch_stop_signals  # here: every command's start-up imports this module

    signals = catch_stop_signals(keep=sys.argv[1:2] == ["run"])
    try:
        return _run(signals, context, rules=rules, state=state, partitions=partitions, shards=shards, sources=sources,
                    out=out, backend=backend, once=once, allow_remote=allow_remote, metrics=metrics,
                    log=stderr_log(log_format))
    finally:
        signals.release()  # in-process callers get their handlers back; the command line keeps ours


def _run(signals, context, *, rules, state, partitions, shards, sources, out, backend, once, allow_remote, metrics,
         log):
    """`log` writes every message of the run, so that none escapes `--log-format`."""
    from rulecrm.app.runner import Runner
    from rulecrm.app.shards import parse_shard_list

    note_python_stands_in(backend, lambda text: log(LogLine(text, level="warning")))
    stream = None
    runner = None
    with reported_errors(echo=log), contextlib.ExitStack() as cleanup:
        metrics_address = _metrics_address(metrics, allow_remote) if metrics is not None else None
        _check_state(state, partitions)
        if out == "-":
            stream = sys.stdout
        elif out is not None:
            # line-buffered: each action is written whole
            stream = cleanup.enter_context(open(out, "a", encoding="utf-8", buffering=1))
        observer = None
        if metrics_address is not None:  # served from before start-up (503) until after the runner closed
            observer = _serve_metrics(metrics_address, context.manager, cleanup, log)
        cleanup.callback(lambda: runner is not None and runner.close())  # runs before the stream closes
        runner = Runner(rules, state, sources=sources, out=stream, backend_name=backend, allow_remote=allow_remote,
                        manager=context.manager, on_message=log, observer=observer,
                        shards=parse_shard_list(shards) if shards is not None else None)
        signals.on_stop(runner.stop)  # stops at once when a signal came during the imports
        if not runner.stopping:  # asked to stop before anything started: nothing to start
            runner.start()  # a signal while starting up stops right after it
            log(LogLine(f"running: rules {rules}, state {state}, sources {', '.join(sources) or 'none'}",
                        rules=str(rules), state=str(state), sources=list(sources)))
            runner.run(once=once)
        stats = runner.stats
        counts = {name: stats[name] for name in ("applied", "duplicates", "rejected", "reloads")}
        log(LogLine("stopped: " + ", ".join(f"{name} {count}" for name, count in counts.items()), **counts))
    return EXIT_OK


def _metrics_address(metrics: str, allow_remote: bool) -> tuple[str, int]:
    from rulecrm.errors import UsageError
    from rulecrm.listen_address import parse_listen_address

    try:
        return parse_listen_address(metrics, allow_remote=allow_remote, what="--metrics", example_port=9108)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _serve_metrics(address: tuple[str, int], manager, cleanup: contextlib.ExitStack, log):
    """The runner's metrics, served at `address` until `cleanup` ends (after the runner closed)."""
    # prometheus_client is imported here only: a run without --metrics starts without it
    from rulecrm.app.metrics import RunMetrics
    from rulecrm.app.metrics_server import MetricsServer

    metrics = RunMetrics()
    server = MetricsServer(*address, metrics.registry, metrics.health)
    cleanup.callback(server.close)
    metrics.attach(manager)
    cleanup.callback(metrics.detach)
    server.start()
    log(LogLine(f"metrics on {server.url}/metrics, health on {server.url}/healthz", url=server.url))
    return metrics


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
