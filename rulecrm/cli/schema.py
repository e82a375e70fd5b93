"""`rulecrm schema`: the JSON Schema of rule files on stdout, for editors."""
from __future__ import annotations

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_OK, reported_errors


@click.command("schema")
@pass_cli_context
def schema_command(context):
    """Print the JSON Schema (draft-07) of rule files, with the installed channel types.

    Point an editor at it (`# yaml-language-server: $schema=rulecrm.schema.json` as a rule file's
    first line) to have unknown keys and wrong values flagged while typing; `rulecrm check` checks
    everything the schema cannot.
    """
    # imported here, not at the top: every command module is imported at start-up, `check`'s too
    from rulecrm.plugins import check_channel_info
    from rulecrm.rulefile.json_schema import schema_text

    with reported_errors():  # a plugin failing to list its channel types: one line, not a traceback
        channel_types = check_channel_info(context.manager)
    click.echo(schema_text(channel_types), nl=False)
    return EXIT_OK
