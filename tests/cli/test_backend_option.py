"""`--backend`: durable by default wherever durable-rules imports (SPEC §10), python where it does not,
with a note that says so; either chosen by name wherever the option exists."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rulecrm import backends, plugins
from rulecrm.backends import available_backends
from rulecrm.cli import CliContext, main

RULES = Path(__file__).resolve().parents[2] / "rules" / "tea-shop"
EVENTS = RULES / "events.jsonl"
UNTIL = "2026-12-31T00:00:00"
NOTE = "note: durable-rules does not import on this Python; using the python backend"


def invoke(*args):
    context = CliContext(manager=plugins.build_plugin_manager(load_entry_points=False))
    return CliRunner().invoke(main, list(args), obj=context)


def replay(*options):
    return invoke("replay", "--rules", str(RULES), "--events", str(EVENTS), "--until", UNTIL, *options)


def diff(*options):
    return invoke("diff", "--rules", str(RULES), "--rules-new", str(RULES), "--events", str(EVENTS),
                  "--until", UNTIL, *options)


def command(name):
    context = click.Context(main, obj=CliContext(manager=plugins.build_plugin_manager(load_entry_points=False)))
    return main.get_command(context, name)


def actions(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_replay_uses_durable_when_none_is_given_wherever_it_imports():
    expected = "durable" if "durable" in available_backends() else "python"
    default, named = replay(), replay("--backend", expected)
    assert default.exit_code == 0 and named.exit_code == 0, default.stderr + named.stderr
    assert f"backend {expected}" in default.stderr
    assert NOTE not in default.stderr
    assert actions(default) == actions(named)


@pytest.mark.parametrize("run", [replay, diff], ids=["replay", "diff"])
def test_where_durable_rules_does_not_import_python_stands_in_and_says_so(monkeypatch, run):
    monkeypatch.setattr(backends, "_import_durable", lambda: None)
    result = run()
    assert result.exit_code == 0, result.stderr
    assert NOTE in result.stderr
    assert "backend python" in result.stderr
    assert NOTE not in run("--backend", "python").stderr  # asked for by name: nothing to explain


def test_replay_with_backend_durable_uses_durable_where_it_imports_and_says_why_not_elsewhere():
    result = replay("--backend", "durable")
    if "durable" in available_backends():
        assert result.exit_code == 0, result.stderr
        assert "backend durable" in result.stderr
        assert actions(result) == actions(replay("--backend", "python"))
    else:
        assert result.exit_code != 0
        assert "durable backend is unavailable on this Python" in result.stderr
        assert "--backend python" in result.stderr


@pytest.mark.parametrize("name", ["replay", "diff", "run"])
def test_every_engine_command_offers_both_backends_and_defaults_to_durable_where_it_imports(name):
    (option,) = [param for param in command(name).params if param.name == "backend"]
    assert set(option.type.choices) == {"python", "durable"}
    assert option.default is None  # decided at start-up: durable where it imports
    assert "durable where durable-rules imports" in option.help


def test_the_property_search_defaults_to_python():
    # `rulecrm test` runs hundreds of generated shops: the python backend, the reference the durable
    # backend is tested against, gives the same verdicts faster
    (option,) = [param for param in command("test").params if param.name == "backend"]
    assert set(option.type.choices) == {"python", "durable"} and option.default == "python"


def test_run_says_so_too_where_durable_rules_does_not_import(monkeypatch, tmp_path):
    monkeypatch.setattr(backends, "_import_durable", lambda: None)
    monkeypatch.chdir(tmp_path)  # the shop's jsonl channel writes sends.jsonl where the runner runs
    result = invoke("run", "--rules", str(RULES), "--state", str(tmp_path / "state.db"),
                    "--source", f"jsonl:{EVENTS}", "--once")
    assert result.exit_code == 0, result.stderr
    assert NOTE in result.stderr
