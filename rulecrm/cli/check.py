"""`rulecrm check`: validate rule files, diagnostics on stdout and a count on stderr."""
from __future__ import annotations

import attrs
import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, echo_err, reported_errors


@attrs.frozen
class CheckReport:
    """What `check` found: every diagnostic of every file, errors and warnings together."""

    diagnostics: tuple

    @property
    def errors(self) -> int:
        return sum(d.is_error for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return len(self.diagnostics) - self.errors

    @property
    def exit_code(self) -> int:
        return EXIT_ERROR if self.errors else EXIT_OK


@click.command("check")
@click.argument("rules", type=click.Path(exists=True))
@pass_cli_context
def check_command(context, rules):
    """Validate a rules directory (or one file): file:line:col diagnostics on stdout."""
    from rulecrm.plugins import check_rules_with

    with reported_errors():  # a plugin failing while the rules are checked: one line, not a traceback
        _ruleset, diagnostics = check_rules_with(context.manager, rules)
    report = CheckReport(tuple(diagnostics))
    for diagnostic in report.diagnostics:
        click.echo(diagnostic.format())
    echo_err(f"{report.errors} error(s), {report.warnings} warning(s)")
    return report.exit_code
