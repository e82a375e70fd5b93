"""`rulecrm dead-letters`: list rejected input, re-ingest it after a fix, or drop it."""
from __future__ import annotations

import functools
import json
import os

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_OK, echo_err, reported_errors
from rulecrm.masking import mask_personal


@click.command("dead-letters")
@click.option("--state", "state", required=True, type=click.Path(exists=True),
              help="State file of a replay or run, or a partitioned state directory.")
@click.option("--retry", is_flag=True, help="Re-ingest the rejected lines that are now valid.")
@click.option("--rules", "rules", default=None, type=click.Path(exists=True),
              help="Rules for --retry (default: the last replay's).")
@click.option("--from", "fixes", default=None, type=click.File("r", encoding="utf-8"),
              help="With --retry: JSONL of {id, raw} with corrected lines (edit the listing and pass it back).")
@click.option("--remove", "remove", multiple=True, metavar="ID",
              help="Drop a dead letter by id on purpose (SHARD:ID on a partitioned state, e.g. 3:17).")
@pass_cli_context
def dead_letters_command(context, state, retry, rules, fixes, remove):
    """List rejected input as JSONL, re-ingest it after a fix, or drop it.

    To fix: list them to a file, correct each `raw`, then `--retry --from FILE`. A partitioned state
    (a directory) lists the dead letters of every shard, each with its `shard`; their ids are
    SHARD:ID (3:17 is dead letter 17 of shard 3), and a fixed line is applied in its customer's shard.
    """
    from rulecrm.app import deadletters
    from rulecrm.app import shard_deadletters as shards
    from rulecrm.state.partitioned import PartitionedState
    from rulecrm.state.store import Store

    if fixes is not None and not retry:
        raise click.UsageError("--from goes with --retry")
    with reported_errors():
        # a directory must be a partitioned state: one without a manifest is refused in one line
        partitioned = PartitionedState.open(state) if os.path.isdir(state) else None
        if partitioned is None:
            target, parse_id = state, functools.partial(deadletters.plain_letter_id, state_path=state)
            retry_all, remove_ids = deadletters.retry_dead_letters, deadletters.remove_dead_letters
        else:
            target, parse_id = partitioned, functools.partial(shards.shard_letter_id, partitioned=partitioned)
            retry_all, remove_ids = shards.retry_shard_dead_letters, shards.remove_shard_dead_letters
        if retry:
            corrections = deadletters.read_corrections(fixes, parse_id) if fixes is not None else None
            result = retry_all(
                target, rules_path=rules, corrections=corrections, manager=context.manager, on_warning=echo_err,
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
            ids = [parse_id(id_) for id_ in remove]
            remove_ids(target, ids)
            echo_err(f"removed {len(set(ids))} dead letter(s)")
            return EXIT_OK
        if partitioned is not None:
            for item in shards.list_shard_dead_letters(partitioned):
                click.echo(json.dumps(item, ensure_ascii=False))
            return EXIT_OK
        store = Store.open(state)
        try:
            for item in store.iter_dead_letters():
                click.echo(json.dumps(item, ensure_ascii=False))
        finally:
            store.close()
    return EXIT_OK
