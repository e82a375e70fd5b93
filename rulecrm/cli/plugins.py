"""`rulecrm plugins`: what each installed plugin (rulecrm's own among them) provides."""
from __future__ import annotations

import json

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_OK


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
@pass_cli_context
def plugins_command(context, as_json):
    """Installed plugins, the hooks each implements and the channel types they provide."""
    from rulecrm.plugins import describe

    for row in describe(context.manager):
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
            continue
        click.echo(f"{row['name']}  ({row['distribution']})")
        click.echo(f"  hooks: {', '.join(row['hooks']) or '-'}")
        if row["channel_types"]:
            click.echo(f"  channel types: {', '.join(row['channel_types'])}")
        if row["event_sources"]:
            click.echo(f"  event sources: {', '.join(row['event_sources'])}")
    return EXIT_OK
