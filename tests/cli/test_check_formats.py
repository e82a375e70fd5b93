"""`rulecrm check --format json` (one JSON list of diagnostics, for tools) and `--strict` (warnings fail);
the text format stays the default and unchanged."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import rulecrm

from rulecrm import plugins
from rulecrm.cli import CliContext, main
from rulecrm.rulefile.loader import check_rules

# one warning (max: 0) and no error
WARNS = "caps:\n  - {id: never, kinds: [marketing], max: 0, per: 1d}\n"
# two errors (an unknown key with a did-you-mean, an unknown kind) and the same warning
FAILS = WARNS + ("rules:\n  - {id: a, tag: t, wehn: 'true'}\n"
                 "  - {id: b, notify: {to: customer, kind: promo, template: hi}}\n")
CLEAN = "rules:\n  - {id: a, tag: t}\n"


def check(tmp_path, text, *options):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    context = CliContext(manager=plugins.build_plugin_manager(load_entry_points=False))
    return path, CliRunner().invoke(main, ["check", *options, str(path)], obj=context)


def test_json_lists_every_diagnostic_with_all_its_fields(tmp_path):
    path, result = check(tmp_path, FAILS, "--format", "json")
    assert result.exit_code == 1
    records = json.loads(result.stdout)
    _ruleset, diagnostics = check_rules(path)
    assert records == [
        {"file": d.path, "line": d.line, "column": d.column, "severity": d.severity, "message": d.message,
         "expected": d.expected, "found": d.found, "hint": d.hint}
        for d in diagnostics
    ]
    assert [r["severity"] for r in records].count("error") == 2
    typo = next(r for r in records if "wehn" in r["message"])
    assert (typo["line"], typo["column"], typo["hint"]) == (4, 21, "did you mean 'when'?")
    assert result.stderr == "2 error(s), 1 warning(s)\n"


def test_json_of_clean_rules_is_an_empty_list(tmp_path):
    _path, result = check(tmp_path, CLEAN, "--format", "json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


def test_text_is_the_default_and_unchanged(tmp_path):
    path, result = check(tmp_path, FAILS)
    _ruleset, diagnostics = check_rules(path)
    assert result.stdout == "".join(d.format() + "\n" for d in diagnostics)
    assert result.stdout.splitlines()[0] == f"{path}:2:42: warning: max: 0 blocks every send of these kinds; " \
                                            "write it only on purpose"
    _path, explicit = check(tmp_path, FAILS, "--format", "text")
    assert explicit.stdout == result.stdout


@pytest.mark.parametrize("text,options,code", [
    (WARNS, (), 0),
    (WARNS, ("--strict",), 1),
    (WARNS, ("--strict", "--format", "json"), 1),
    (FAILS, (), 1),
    (FAILS, ("--strict",), 1),
    (CLEAN, ("--strict",), 0),
])
def test_strict_makes_warnings_fail(tmp_path, text, options, code):
    _path, result = check(tmp_path, text, *options)
    assert result.exit_code == code, result.output


def test_an_unknown_format_is_a_usage_error(tmp_path):
    _path, result = check(tmp_path, CLEAN, "--format", "xml")
    assert result.exit_code != 0
    assert "xml" in result.output


def test_as_a_process_the_json_is_alone_on_stdout(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(WARNS, encoding="utf-8")
    result = rulecrm("check", "--format", "json", "--strict", path)
    assert result.returncode == 1
    [record] = json.loads(result.stdout)
    assert (record["severity"], record["file"]) == ("warning", str(path))
    assert result.stderr.strip().endswith("0 error(s), 1 warning(s)")
