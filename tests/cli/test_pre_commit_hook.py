"""The pre-commit hook this repository provides (.pre-commit-hooks.yaml) runs a real `rulecrm check`."""
from __future__ import annotations

import configparser
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import click
import yaml

from rulecrm import plugins
from rulecrm.cli import CliContext, main

REPO = Path(__file__).resolve().parents[2]


def hook() -> dict:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    [found] = [item for item in hooks if item["id"] == "rulecrm-check"]
    return found


def test_the_hook_is_declared_as_pre_commit_reads_it():
    found = hook()
    assert found["language"] == "python"  # pre-commit installs this repository with pip
    assert found["entry"] == "rulecrm check"
    assert found["name"]
    # a rules directory is checked whole, so the changed files are not passed (`args` names the directory)
    assert found["pass_filenames"] is False


def test_its_entry_is_a_console_script_and_a_command_of_the_project():
    program, command = shlex.split(hook()["entry"])
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    declared = (line.split("=", 1) for line in setup["options.entry_points"]["console_scripts"].splitlines() if line)
    assert {name.strip(): target.strip() for name, target in declared}[program] == "rulecrm.__main__:main"
    [installed] = entry_points(group="console_scripts", name=program)  # as pip installs it for pre-commit
    assert installed.value == "rulecrm.__main__:main"
    context = click.Context(main, obj=CliContext(manager=plugins.build_plugin_manager(load_entry_points=False)))
    assert main.get_command(context, command) is not None


def test_it_runs_when_a_rule_file_changes_and_not_for_other_files():
    pattern = re.compile(hook()["files"])
    assert all(pattern.search(name) for name in ("rules/tea-shop/00-shop.yaml", "myshop/rules/tags.yml"))
    assert not any(pattern.search(name) for name in ("rules/rulecrm.schema.json", "README.md", "events.jsonl"))
