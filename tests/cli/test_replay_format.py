"""`rulecrm replay --format jsonl|table`: JSON lines for pipes and files, a table for people at a terminal."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rulecrm import plugins
from rulecrm.cli import CliContext, main
from rulecrm.cli.action_table import display_width, fit

RULES = Path(__file__).resolve().parents[2] / "rules" / "tea-shop"  # Chinese messages, suppressed actions
EVENTS = RULES / "events.jsonl"
UNTIL = "2026-12-31T00:00:00"


def replay_args(*options):
    return ["replay", "--rules", str(RULES), "--events", str(EVENTS), "--until", UNTIL, "--backend", "python",
            *options]


def context():
    return CliContext(manager=plugins.build_plugin_manager(load_entry_points=False))


def invoke(*options):
    return CliRunner().invoke(main, replay_args(*options), obj=context())


def run_at_a_terminal(capsys, monkeypatch, *options):
    """The command with pytest's captured stdout claiming to be a terminal 140 columns wide."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "140")
    code = main.main(replay_args(*options), standalone_mode=False, obj=context())
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def jsonl_actions():
    result = invoke("--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_jsonl_is_the_default_when_stdout_is_not_a_terminal(jsonl_actions):
    result = invoke()  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == jsonl_actions


def test_table_has_a_heading_and_one_row_per_action(jsonl_actions):
    result = invoke("--format", "table")
    assert result.exit_code == 0, result.stderr
    heading, rule, *rows = result.stdout.splitlines()
    assert heading.split() == ["time", "customer", "rule", "kind", "status", "channel", "reason", "message"]
    assert set(rule) == {"-", " "}
    assert len(rows) == len(jsonl_actions)
    for row, action in zip(rows, jsonl_actions, strict=True):
        when = (action["sent_at"] or action["due_at"])[:16].replace("T", " ")
        assert row.startswith(f"{when} {fit(action['customer_id'], 10)} {fit(action['rule'], 16)} ")
        assert f" {fit(action['status'], 10)} " in row
        assert display_width(row) <= 120  # a file's width, whatever the characters (Chinese take two columns)
    suppressed = next(a for a in jsonl_actions if a["status"] == "suppressed")
    assert any(suppressed["reason"] in row and suppressed["customer_id"] in row for row in rows)
    assert "…" in result.stdout  # long messages are cut to fit


def test_table_is_the_default_at_a_terminal(capsys, monkeypatch, jsonl_actions):
    code, out = run_at_a_terminal(capsys, monkeypatch)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["time", "customer"] and len(lines) == len(jsonl_actions) + 2
    assert max(display_width(line) for line in lines) == 140  # the message takes what the terminal has left


def test_jsonl_at_a_terminal_when_asked_or_written_to_a_file(capsys, monkeypatch, tmp_path, jsonl_actions):
    code, out = run_at_a_terminal(capsys, monkeypatch, "--format", "jsonl")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == jsonl_actions
    path = tmp_path / "actions.jsonl"
    code, out = run_at_a_terminal(capsys, monkeypatch, "--out", str(path))
    assert (code, out) == (0, "")
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == jsonl_actions


def test_table_with_partitions_lists_the_same_rows(jsonl_actions):
    result = invoke("--format", "table", "--partitions", "2")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(jsonl_actions) + 2


@pytest.mark.parametrize("text, width, expected", [
    ("abc", 5, "abc  "),
    ("abcdef", 5, "abcd…"),
    ("王芳您好", 4, "王… "),  # two columns a character: the cut never splits one
    ("", 3, "   "),
])
def test_fit_cuts_and_pads_to_terminal_columns(text, width, expected):
    assert fit(text, width) == expected and display_width(fit(text, width)) == width
