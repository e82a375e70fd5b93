"""What every command of the command line shares: diagnostics on stderr and error exit codes."""
from __future__ import annotations

import contextlib
import sys

import click

from .errors import RuleFileError, RulecrmError

EXIT_OK = 0
EXIT_ERROR = 1


def echo_err(text: str) -> None:
    click.echo(text, err=True)


@contextlib.contextmanager
def reported_errors(exit_code: int = EXIT_ERROR):
    """Turn rulecrm's typed errors into messages on stderr and an exit code (nothing else does)."""
    try:
        yield
    except RuleFileError as exc:
        for diagnostic in exc.diagnostics:
            echo_err(diagnostic.format())
        sys.exit(exit_code)
    except RulecrmError as exc:
        echo_err(f"error: {exc}")
        sys.exit(exit_code)
