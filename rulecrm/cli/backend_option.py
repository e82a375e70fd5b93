"""The `--backend` option of the commands that match rules, and the start-up note when durable cannot be used."""
from __future__ import annotations

from collections.abc import Callable

import click

backend_option = click.option(
    "--backend", "backend", type=click.Choice(["durable", "python"]), default=None,
    help="Matching backend (default: durable where durable-rules imports, else python).",
)


def note_python_stands_in(backend: str | None, say: Callable[[str], None]) -> None:
    """With no `--backend` on a Python where durable-rules does not import, say that python is used."""
    if backend is not None:
        return
    from rulecrm.backends import default_backend_name

    if default_backend_name() != "durable":
        say("note: durable-rules does not import on this Python; using the python backend")
