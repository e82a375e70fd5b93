"""docs/cli.md cannot drift: every command and option of the real `rulecrm` group is in it."""
from __future__ import annotations

from pathlib import Path

import click
import pytest

from rulecrm import plugins
from rulecrm.cli import CliContext, main

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def built_in_commands() -> dict[str, click.Command]:
    """The commands of `rulecrm` without installed plugins, looked up as the command line does."""
    context = click.Context(main, obj=CliContext(manager=plugins.build_plugin_manager(load_entry_points=False)))
    names = main.list_commands(context)
    return {name: main.get_command(context, name) for name in names
            if main.get_command(context, name).callback.__module__.startswith("rulecrm.")}


COMMANDS = built_in_commands()


def section(name: str) -> str:
    """The part of docs/cli.md under `## \\`rulecrm NAME ...\\``, up to the next heading."""
    text = REFERENCE.read_text(encoding="utf-8")
    start = text.find(f"## `rulecrm {name}")
    assert start != -1, f"docs/cli.md has no section `## \\`rulecrm {name} ...\\``"
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_every_built_in_command_is_there():
    assert {"check", "replay", "dead-letters", "init", "plugins", "test", "explain", "run", "diff"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_and_argument_is_documented_under_its_command(name):
    text = section(name)
    for param in COMMANDS[name].params:
        if isinstance(param, click.Argument):
            assert f"`{param.human_readable_name}`" in text, f"argument {param.human_readable_name} of {name}"
        else:
            for option in param.opts:
                assert f"`{option}" in text, f"option {option} of rulecrm {name} is not in docs/cli.md"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_says_its_exit_codes(name):
    assert "Exit codes:" in section(name)


def test_the_group_options_are_there():
    text = REFERENCE.read_text(encoding="utf-8")
    assert all(f"`{option}" in text for param in main.params for option in param.opts)
