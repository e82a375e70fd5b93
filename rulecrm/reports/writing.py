"""Put a report on disk: checked before the command runs, written whole or not at all."""
from __future__ import annotations

import os
import tempfile

from rulecrm.errors import UsageError


def check_writable(path: str, *, out: str | None = None) -> None:
    """Refuse, before any replay, a `--report` path that cannot be written, or that is the `--out` file the
    actions go to (a UsageError, one line)."""
    directory = os.path.dirname(os.path.abspath(path))
    if out not in (None, "-") and os.path.abspath(out) == os.path.abspath(path):
        raise UsageError(f"--report {path} is also --out: give the report a file of its own")
    if os.path.isdir(path):
        raise UsageError(f"--report {path} is a directory: give the path of a file")
    if not os.path.isdir(directory):
        raise UsageError(f"--report {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"--report {path} cannot be written: permission denied")


def write_report(path: str, page: str) -> None:
    """Write `page` to `path` through a temporary file beside it, so that a failure leaves no half page."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the page from the people it is for
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
