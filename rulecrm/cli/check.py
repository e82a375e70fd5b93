"""`rulecrm check`: validate rule files, diagnostics on stdout and a count on stderr."""
from __future__ import annotations

import attrs
import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, echo_err, reported_errors


@attrs.frozen
class CheckReport:
    """What `check` found: every diagnostic of every file, errors and warnings together.

    `strict`: warnings fail the check as errors do (`--strict`, e.g. in a pre-commit hook or CI).
    """

    diagnostics: tuple
    strict: bool = False

    @property
    def errors(self) -> int:
        return sum(d.is_error for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return len(self.diagnostics) - self.errors

    @property
    def exit_code(self) -> int:
        return EXIT_ERROR if self.errors or (self.strict and self.warnings) else EXIT_OK


def diagnostic_record(diagnostic) -> dict:
    """One diagnostic as `--format json` writes it: every field, absent ones as null."""
    return {
        "file": diagnostic.path,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "severity": diagnostic.severity,
        "message": diagnostic.message,
        "expected": diagnostic.expected,
        "found": diagnostic.found,
        "hint": diagnostic.hint,
    }


@click.command("check")
@click.argument("rules", type=click.Path(exists=True))
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: file:line:col lines; json: one JSON list of diagnostics, for tools.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@pass_cli_context
def check_command(context, rules, output_format, strict):
    """Validate a rules directory (or one file): file:line:col diagnostics on stdout."""
    from rulecrm.plugins import check_rules_with

    with reported_errors():  # a plugin failing while the rules are checked: one line, not a traceback
        _ruleset, diagnostics = check_rules_with(context.manager, rules)
    report = CheckReport(tuple(diagnostics), strict=strict)
    if output_format == "json":
        import json  # only this format needs it

        click.echo(json.dumps([diagnostic_record(d) for d in report.diagnostics], indent=2, ensure_ascii=False))
    else:
        for diagnostic in report.diagnostics:
            click.echo(diagnostic.format())
    echo_err(f"{report.errors} error(s), {report.warnings} warning(s)")
    return report.exit_code
