"""`--backend`: python by default on every Python, durable chosen by name wherever the option exists."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rulecrm import plugins
from rulecrm.backends import available_backends
from rulecrm.cli import CliContext, main

RULES = Path(__file__).resolve().parents[2] / "rules" / "tea-shop"
EVENTS = RULES / "events.jsonl"
UNTIL = "2026-12-31T00:00:00"


def replay(*options):
    args = ["replay", "--rules", str(RULES), "--events", str(EVENTS), "--until", UNTIL, *options]
    context = CliContext(manager=plugins.build_plugin_manager(load_entry_points=False))
    return CliRunner().invoke(main, args, obj=context)


def command(name):
    context = click.Context(main, obj=CliContext(manager=plugins.build_plugin_manager(load_entry_points=False)))
    return main.get_command(context, name)


def test_replay_uses_the_python_backend_when_none_is_given():
    default, python = replay(), replay("--backend", "python")
    assert default.exit_code == 0 and python.exit_code == 0, default.stderr + python.stderr
    assert "backend python" in default.stderr
    assert "note:" not in default.stderr  # nothing to explain: the default is the same on every Python
    assert default.stdout == python.stdout


def test_replay_with_backend_durable_uses_durable_where_it_imports_and_says_why_not_elsewhere():
    result = replay("--backend", "durable")
    if "durable" in available_backends():
        assert result.exit_code == 0, result.stderr
        assert "backend durable" in result.stderr
        python = replay("--backend", "python")
        assert [json.loads(line) for line in result.stdout.splitlines()] == \
            [json.loads(line) for line in python.stdout.splitlines()]
    else:
        assert result.exit_code != 0
        assert "durable backend is unavailable on this Python" in result.stderr
        assert "--backend python" in result.stderr


@pytest.mark.parametrize("name", ["replay", "diff", "run", "test"])
def test_every_backend_option_offers_both_backends_and_defaults_to_python(name):
    (option,) = [param for param in command(name).params if param.name == "backend"]
    assert set(option.type.choices) == {"python", "durable"}
    assert option.default in (None, "python")
    assert "python" in (option.help or "") or option.show_default
