"""`rulecrm explain`: reads a state file and tells why a customer's actions did or did not happen."""
from __future__ import annotations

import os

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_OK, reported_errors


@click.command("explain")
@click.option("--rules", "rules", required=True, type=click.Path(exists=True), help="Rules directory or file.")
@click.option("--state", "state", required=True, type=click.Path(exists=True),
              help="State file of a replay or run, or a partitioned state directory (read only).")
@click.option("--customer", "customer", required=True, help="The customer id.")
@click.option("--rule", "rule_id", default=None, help="Explain only this rule.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
@pass_cli_context
def explain_command(context, rules, state, customer, rule_id, as_json):
    """Why an action did or did not happen: conditions with their values, gates, pending timers.

    On a partitioned state only the customer's shard is read.
    """
    from rulecrm.explain import StateReader, explain, render_json, render_text
    from rulecrm.plugins import address_fields, functions, load_rules_with
    from rulecrm.state.partitioned import customer_state_file
    from rulecrm.state.store import Store, storage_errors

    with reported_errors():
        manager = context.manager
        ruleset = load_rules_with(manager, rules)
        state_file, shard = customer_state_file(state, customer)
        with storage_errors(state_file):
            Store.open(state_file, readonly=True).close()  # a damaged, foreign or newer state: one clear line
            with StateReader(state_file) as reader:
                customer_state = reader.customer(customer)
        report = explain(
            ruleset, customer_state, rule_id=rule_id,
            functions=functions(manager), address_fields=address_fields(manager),
        )
    if shard is None:
        click.echo(render_json(report) if as_json else render_text(report))
    elif as_json:
        click.echo(render_json({"state": shard, **report}))
    else:
        click.echo(f"state {shard['path']}, shard {shard['shard']} of {shard['partitions']} "
                   f"({os.path.basename(shard['file'])})")
        click.echo(render_text(report))
    return EXIT_OK

