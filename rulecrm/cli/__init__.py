"""The `rulecrm` command line: the only place that turns errors into messages and exit codes."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from rulecrm import __version__
from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, reported_errors
from rulecrm.cli.util import echo_err as _echo_err
from rulecrm.masking import mask_personal
from rulecrm.app.stopping import Interrupted, catch_stop_signals
from rulecrm.timeutil import parse_timestamp
EXIT_REJECTED = 3
EXIT_UNDELIVERED = 4  # replay --dispatch: some action ended `failed` or `dead`


class _RulecrmGroup(click.Group):
    """Usage errors (a bad option value, a missing file) exit 1 like every other error (SPEC §8);
    click's own convention is 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_ERROR)
        except click.exceptions.Abort:
            _echo_err("Aborted!")
            sys.exit(EXIT_ERROR)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.group(cls=_RulecrmGroup)
@click.version_option(__version__, prog_name="rulecrm")
def main() -> None:
    """rulecrm: rules for private-domain customer operations."""


@main.command()
@click.argument("rules", type=click.Path(exists=True))
def check(rules):
    """Validate a rules directory (or one file): file:line:col diagnostics on stdout."""
    from rulecrm.plugins import build_plugin_manager, check_rules_with

    _ruleset, diagnostics = check_rules_with(build_plugin_manager(), rules)
    for diagnostic in diagnostics:
        click.echo(diagnostic.format())
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    _echo_err(f"{errors} error(s), {warnings} warning(s)")
    sys.exit(EXIT_ERROR if errors else EXIT_OK)


@main.command()
@click.option("--rules", "rules", required=True, type=click.Path(exists=True), help="Rules directory or file.")
@click.option("--events", "events", required=True, type=click.Path(exists=True, dir_okay=False), help="Events JSONL.")
@click.option("--until", "until", default=None, help="Fire timers due at or before this time (default: the last event's).")
@click.option("--state", "state", default=None, help="SQLite state file; a second replay of the same events outputs nothing.")
@click.option("--out", "out", default="-", show_default=True, type=click.Path(dir_okay=False),
              help="Write the actions as JSONL to this file ('-': stdout).")
@click.option("--backend", "backend", type=click.Choice(["durable", "python"]), default=None, help="Matching backend.")
@click.option("--dispatch", "dispatch", is_flag=True, help="Deliver the actions through their channels (messages real people!).")
def replay(rules, events, until, state, out, backend, dispatch):
    """Apply EVENTS in event-time order and decide the actions; channels are called only with --dispatch."""
    from rulecrm.backends import default_backend_name
    from rulecrm.plugins import build_plugin_manager, load_rules_with
    from rulecrm.app.replay import replay as run_replay

    manager = build_plugin_manager()
    with reported_errors():
        ruleset = load_rules_with(manager, rules)
    until_at = None
    if until is not None:
        try:
            until_at = parse_timestamp(until, ruleset.shop.timezone)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from None
    if backend is None and default_backend_name() != "durable":
        _echo_err("note: durable-rules is not available on this Python; using the python backend")

    def report_rejected(line_no, error):
        _echo_err(f"{events}:{line_no}: rejected: {mask_personal(error)}")

    signals = catch_stop_signals()
    try:
        with reported_errors(), contextlib.ExitStack() as resources:
            stream = None
            if out == "-":
                stream = sys.stdout
            elif out is not None:
                stream = resources.enter_context(open(out, "w", encoding="utf-8"))
            summary = run_replay(
                rules, events, until=until_at, state=state, out=stream, backend_name=backend,
                progress=sys.stderr.isatty(), on_rejected=report_rejected, plugin_manager=manager,
                dispatch=dispatch, dispatch_options={"on_warning": _echo_err}, stop=lambda: signals.requested,
            )
    except Interrupted:
        kept = (f"the batches committed so far are in {state}; run the same command again to finish"
                if state not in (None, ":memory:") else "nothing was kept (no --state)")
        _echo_err(f"replay stopped by a signal before the end: {kept}")
        sys.exit(EXIT_ERROR)
    finally:
        signals.release()
    for line in summary.lines():
        _echo_err(line)
    if summary.undelivered:
        sys.exit(EXIT_UNDELIVERED)
    sys.exit(EXIT_REJECTED if summary.rejected else EXIT_OK)


@main.command("dead-letters")
@click.option("--state", "state", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--retry", is_flag=True, help="Re-ingest the rejected lines that are now valid.")
@click.option("--rules", "rules", default=None, type=click.Path(exists=True), help="Rules for --retry (default: the last replay's).")
@click.option("--from", "fixes", default=None, type=click.File("r", encoding="utf-8"),
              help="With --retry: JSONL of {id, raw} with corrected lines (edit the listing and pass it back).")
@click.option("--remove", "remove", multiple=True, type=int, help="Drop a dead letter by id on purpose.")
def dead_letters(state, retry, rules, fixes, remove):
    """List rejected input as JSONL, re-ingest it after a fix, or drop it.

    To fix: list them to a file, correct each `raw`, then `--retry --from FILE`.
    """
    from rulecrm.app.deadletters import read_corrections, remove_dead_letters, retry_dead_letters
    from rulecrm.state.store import Store

    if fixes is not None and not retry:
        raise click.UsageError("--from goes with --retry")
    with reported_errors():
        if retry:
            corrections = read_corrections(fixes) if fixes is not None else None
            result = retry_dead_letters(
                state, rules_path=rules, corrections=corrections, on_warning=_echo_err,
                on_report=lambda record: click.echo(json.dumps(record, ensure_ascii=False, default=str)),
            )
            statuses = ", ".join(f"{n} {status}" for status, n in sorted(result.actions.items())) or "none"
            _echo_err(f"re-ingested {result.applied}, duplicates {result.duplicates}, "
                      f"still rejected {result.still_rejected}")
            _echo_err(f"actions: {statuses}" + ("" if result.delivered else
                                                 " (decided only: this state's actions are not delivered)"))
            for item in result.remaining:
                _echo_err(f"{item['source']}:{item['line_no']}: rejected: {mask_personal(item['error'])}")
            if result.actions.get("failed") or result.actions.get("dead"):
                sys.exit(EXIT_UNDELIVERED)
            sys.exit(EXIT_REJECTED if result.still_rejected else EXIT_OK)
        if remove:
            remove_dead_letters(state, remove)
            _echo_err(f"removed {len(set(remove))} dead letter(s)")
            return
        store = Store.open(state)
        try:
            for item in store.iter_dead_letters():
                click.echo(json.dumps(item, ensure_ascii=False))
        finally:
            store.close()


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def init(directory):
    """Create a starter project: a rules directory and sample events."""
    from importlib.resources import files

    target = Path(directory)
    starter = files("rulecrm.starter")  # package data: works from a wheel as well as a checkout
    rules_dir = target / "rules"
    if rules_dir.exists() and any(rules_dir.iterdir()):
        _echo_err(f"error: {rules_dir} already has files; choose an empty directory")
        sys.exit(EXIT_ERROR)
    rules_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted((item for item in starter.iterdir() if item.name.endswith(".yaml")), key=lambda i: i.name):
        (rules_dir / source.name).write_bytes(source.read_bytes())
    (target / "events.jsonl").write_bytes(starter.joinpath("events.jsonl").read_bytes())
    click.echo(f"created {rules_dir} and {target / 'events.jsonl'}")
    click.echo(f"next: rulecrm check {rules_dir} && rulecrm replay --rules {rules_dir} --events {target / 'events.jsonl'} --out -")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
def plugins(as_json):
    """Installed plugins, the hooks each implements and the channel types they provide."""
    from rulecrm.plugins import build_plugin_manager, describe

    for row in describe(build_plugin_manager()):
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
            continue
        click.echo(f"{row['name']}  ({row['distribution']})")
        click.echo(f"  hooks: {', '.join(row['hooks']) or '-'}")
        if row["channel_types"]:
            click.echo(f"  channel types: {', '.join(row['channel_types'])}")
        if row["event_sources"]:
            click.echo(f"  event sources: {', '.join(row['event_sources'])}")


def entry() -> None:
    """The console script: plugins may add commands before the command line is parsed."""
    from rulecrm.plugins import PluginError, build_plugin_manager

    try:
        manager = build_plugin_manager()
        manager.hook.rulecrm_register_commands(cli=main)
    except PluginError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    main()

from rulecrm.cli.test import test_command  # noqa: E402
main.add_command(test_command, "test")

from rulecrm.cli.explain import explain_command  # noqa: E402
main.add_command(explain_command, "explain")

from rulecrm.cli.run import run_command  # noqa: E402
main.add_command(run_command, "run")
