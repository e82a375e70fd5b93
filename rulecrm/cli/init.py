"""`rulecrm init`: a starter project (rules and sample events) from the package's own data."""
from __future__ import annotations

from pathlib import Path

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, echo_err, reported_errors

# The schema goes beside the rule files and is named relative to them (no URL serves it), so the
# directory keeps working when it is moved or copied; `check` reads only *.yaml and *.yml.
SCHEMA_FILE = "rulecrm.schema.json"
MODELINE = f"# yaml-language-server: $schema={SCHEMA_FILE}\n"


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@pass_cli_context
def init_command(context, directory):
    """Create a starter project: a rules directory and sample events.

    The rules directory also gets rulecrm.schema.json (as `rulecrm schema` prints it), which the
    first line of each rule file names for editors.
    """
    from importlib.resources import files

    from rulecrm.plugins import check_channel_info
    from rulecrm.rulefile.json_schema import schema_text

    target = Path(directory)
    starter = files("rulecrm.starter")  # package data: works from a wheel as well as a checkout
    rules_dir = target / "rules"
    if rules_dir.exists() and any(rules_dir.iterdir()):
        echo_err(f"error: {rules_dir} already has files; choose an empty directory")
        return EXIT_ERROR
    with reported_errors():  # before anything is written: a broken plugin leaves no half-made project
        schema = schema_text(check_channel_info(context.manager))
    rules_dir.mkdir(parents=True, exist_ok=True)
    (rules_dir / SCHEMA_FILE).write_text(schema, encoding="utf-8")
    for source in sorted((item for item in starter.iterdir() if item.name.endswith(".yaml")), key=lambda i: i.name):
        (rules_dir / source.name).write_bytes(MODELINE.encode("utf-8") + source.read_bytes())
    (target / "events.jsonl").write_bytes(starter.joinpath("events.jsonl").read_bytes())
    click.echo(f"created {rules_dir} and {target / 'events.jsonl'}")
    click.echo(f"next: rulecrm check {rules_dir} && rulecrm replay --rules {rules_dir} "
               f"--events {target / 'events.jsonl'} --out -")
    return EXIT_OK
