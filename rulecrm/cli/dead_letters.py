"""`rulecrm dead-letters`: list rejected input, re-ingest it after a fix, or drop it."""
from __future__ import annotations

import json

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_OK, echo_err, reported_errors
from rulecrm.masking import mask_personal


@click.command("dead-letters")
@click.option("--state", "state", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--retry", is_flag=True, help="Re-ingest the rejected lines that are now valid.")
@click.option("--rules", "rules", default=None, type=click.Path(exists=True),
              help="Rules for --retry (default: the last replay's).")
@click.option("--from", "fixes", default=None, type=click.File("r", encoding="utf-8"),
              help="With --retry: JSONL of {id, raw} with corrected lines (edit the listing and pass it back).")
@click.option("--remove", "remove", multiple=True, type=int, help="Drop a dead letter by id on purpose.")
@pass_cli_context
def dead_letters_command(context, state, retry, rules, fixes, remove):
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
                state, rules_path=rules, corrections=corrections, manager=context.manager, on_warning=echo_err,
                on_report=lambda record: click.echo(json.dumps(record, ensure_ascii=False, default=str)),
            )
            statuses = ", ".join(f"{n} {status}" for status, n in sorted(result.actions.items())) or "none"
            echo_err(f"re-ingested {result.applied}, duplicates {result.duplicates}, "
                     f"still rejected {result.still_rejected}")
            echo_err(f"actions: {statuses}" + ("" if result.delivered else
                                                " (decided only: this state's actions are not delivered)"))
            for item in result.remaining:
                echo_err(f"{item['source']}:{item['line_no']}: rejected: {mask_personal(item['error'])}")
            return result.exit_code
        if remove:
            remove_dead_letters(state, remove)
            echo_err(f"removed {len(set(remove))} dead letter(s)")
            return EXIT_OK
        store = Store.open(state)
        try:
            for item in store.iter_dead_letters():
                click.echo(json.dumps(item, ensure_ascii=False))
        finally:
            store.close()
    return EXIT_OK
