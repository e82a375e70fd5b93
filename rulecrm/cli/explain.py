"""`rulecrm explain`: reads a state file and tells why a customer's actions did or did not happen."""
from __future__ import annotations

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_OK, reported_errors


@click.command("explain")
@click.option("--rules", "rules", required=True, type=click.Path(exists=True), help="Rules directory or file.")
@click.option("--state", "state", required=True, type=click.Path(exists=True, dir_okay=False),
              help="State file of a replay or run (read only).")
@click.option("--customer", "customer", required=True, help="The customer id.")
@click.option("--rule", "rule_id", default=None, help="Explain only this rule.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
@pass_cli_context
def explain_command(context, rules, state, customer, rule_id, as_json):
    """Why an action did or did not happen: conditions with their values, gates, pending timers."""
    from rulecrm.explain import StateReader, explain, render_json, render_text
    from rulecrm.plugins import address_fields, functions, load_rules_with
    from rulecrm.state.store import Store, storage_errors

    with reported_errors():
        manager = context.manager
        ruleset = load_rules_with(manager, rules)
        with storage_errors(state):
            Store.open(state, readonly=True).close()  # a damaged, foreign or newer state: one clear line
            with StateReader(state) as reader:
                customer_state = reader.customer(customer)
        report = explain(
            ruleset, customer_state, rule_id=rule_id,
            functions=functions(manager), address_fields=address_fields(manager),
        )
    click.echo(render_json(report) if as_json else render_text(report))
    return EXIT_OK
