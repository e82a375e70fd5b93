"""The rule files with `rulecrm check`'s diagnostics at their lines, and the rule set when it loads."""
from __future__ import annotations

import os

import attrs

from rulecrm.cli.check import CheckReport
from rulecrm.plugins import check_rules_with
from rulecrm.rulefile.loader import rule_files
from rulecrm.rulefile.model import RuleSet


@attrs.frozen
class FileLine:
    number: int
    text: str
    diagnostics: tuple  # the Diagnostics at this line


@attrs.frozen
class RuleFile:
    path: str
    lines: tuple  # FileLine
    unplaced: tuple  # diagnostics past the file's end (or of a file that cannot be read)


@attrs.frozen
class Checked(CheckReport):
    """`check`'s report (its counts of errors and warnings), with the rule set and the files' lines."""

    ruleset: RuleSet | None = attrs.field(kw_only=True)  # None when the rules have errors
    files: tuple = attrs.field(kw_only=True)  # RuleFile


def check(rules_path: str, manager) -> Checked:
    """`rulecrm check RULES`, with each file's text so that diagnostics can be shown at their lines."""
    ruleset, diagnostics = check_rules_with(manager, rules_path)
    files = []
    for path in rule_files(rules_path):
        mine = [d for d in diagnostics if os.path.abspath(d.path) == os.path.abspath(path)]
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                texts = handle.read().splitlines()
        except OSError:
            texts = []
        lines = tuple(FileLine(number, text, tuple(d for d in mine if d.line == number))
                      for number, text in enumerate(texts, 1))
        unplaced = tuple(d for d in mine if not 1 <= d.line <= len(texts))
        files.append(RuleFile(path, lines, unplaced))
    known = {os.path.abspath(f.path) for f in files}
    elsewhere = [d for d in diagnostics if os.path.abspath(d.path) not in known]  # about the directory itself
    if elsewhere:
        files.append(RuleFile(rules_path, (), tuple(elsewhere)))
    return Checked(tuple(diagnostics), ruleset=ruleset, files=tuple(files))
