"""`rulecrm serve`: the ops console, a small web application over a state and its rules.

Pages read the state with read-only SQLite connections and never take the runner lock; the few
changes (retrying an action, fixing, retrying or removing a dead letter) go through the same
functions as the command line, which take the lock. Importing this package needs nothing beyond
rulecrm itself: Starlette, Jinja2 and uvicorn are imported by `rulecrm.console.app` and
`rulecrm.console.server` only (the `console` extra).
"""
from __future__ import annotations

EXTRA_MODULES = ("starlette", "jinja2", "uvicorn", "python_multipart")
INSTALL_HINT = "pip install 'rulecrm[console]'"


def missing_extra() -> str | None:
    """The first module of the `console` extra that cannot be imported, or None when all are there."""
    import importlib

    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None
