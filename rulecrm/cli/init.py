"""`rulecrm init`: a starter project (rules and sample events) from the package's own data."""
from __future__ import annotations

from pathlib import Path

import click

from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, echo_err


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
def init_command(directory):
    """Create a starter project: a rules directory and sample events."""
    from importlib.resources import files

    target = Path(directory)
    starter = files("rulecrm.starter")  # package data: works from a wheel as well as a checkout
    rules_dir = target / "rules"
    if rules_dir.exists() and any(rules_dir.iterdir()):
        echo_err(f"error: {rules_dir} already has files; choose an empty directory")
        return EXIT_ERROR
    rules_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted((item for item in starter.iterdir() if item.name.endswith(".yaml")), key=lambda i: i.name):
        (rules_dir / source.name).write_bytes(source.read_bytes())
    (target / "events.jsonl").write_bytes(starter.joinpath("events.jsonl").read_bytes())
    click.echo(f"created {rules_dir} and {target / 'events.jsonl'}")
    click.echo(f"next: rulecrm check {rules_dir} && rulecrm replay --rules {rules_dir} "
               f"--events {target / 'events.jsonl'} --out -")
    return EXIT_OK
