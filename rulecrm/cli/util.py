"""What every command of the command line shares: diagnostics on stderr and error exit codes."""
from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Callable

import click

from rulecrm.errors import RulecrmError, RuleFileError
from rulecrm.logline import LogLine, diagnostic_line

# The exit statuses of docs/cli.md; the result objects (ReplaySummary, RetryResult) carry 3 and 4.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REJECTED = 3  # some input was rejected (kept as dead letters)
EXIT_UNDELIVERED = 4  # some action ended `failed` or `dead`


def echo_err(text: str) -> None:
    click.echo(text, err=True)


@contextlib.contextmanager
def reported_errors(exit_code: int = EXIT_ERROR, *, echo: Callable[[str], None] = echo_err):
    """Turn rulecrm's typed errors into messages on stderr and an exit code (nothing else does).

    The code travels as click's `Exit` to the group's `main`, which alone ends the process. `echo`
    writes each message (`run --log-format json` gives its own).
    """
    try:
        yield
    except RuleFileError as exc:
        for diagnostic in exc.diagnostics:
            echo(diagnostic_line(diagnostic))
        raise click.exceptions.Exit(exit_code) from None
    except RulecrmError as exc:
        echo(LogLine(f"error: {exc}", level="error"))
        raise click.exceptions.Exit(exit_code) from None
    except OSError as exc:  # another file than the state (--out, an events file): still one line, no traceback
        echo(LogLine(f"error: {_os_error_text(exc)}", level="error"))
        raise click.exceptions.Exit(exit_code) from None
    except Exception as exc:
        # sqlite3 is looked up rather than imported (`check` never loads it): unloaded, it raised nothing
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is None or type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
            raise  # IntegrityError and the like are bugs: keep their traceback
        # the state's own faults arrive as StorageError; this is a temporary database of a reader
        echo(LogLine(f"error: a temporary file of rulecrm: {exc}; free some space in its directory (TMPDIR) and "
                     "run again", level="error"))
        raise click.exceptions.Exit(exit_code) from None


_OS_HINTS = {errno.ENOSPC: "free some space and run again", errno.EDQUOT: "free some space and run again",
             errno.EFBIG: "the file size limit was reached", errno.EROFS: "write to another file system"}


def _os_error_text(exc: OSError) -> str:
    what = f"{exc.filename}: " if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno)
    return f"{what}{exc.strerror or exc}" + (f"; {hint}" if hint else "")
