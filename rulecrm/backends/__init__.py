"""Matching backends: which enabled rules of a trigger hold for one customer (docs/architecture.md)."""
from __future__ import annotations

from rulecrm.backends.base import MatchingBackend
from rulecrm.errors import RulecrmError

__all__ = ["MatchingBackend", "available_backends", "default_backend_name", "get_backend"]

_NAMES = ("durable", "python")


def get_backend(name: str) -> type[MatchingBackend]:
    """The backend class called `name` ("durable" or "python")."""
    if name == "python":
        from rulecrm.backends.python import PythonBackend

        return PythonBackend
    if name == "durable":
        durable = _import_durable()
        if durable is None:
            raise RulecrmError(
                "the durable backend is unavailable on this Python (durable-rules does not import here); "
                "use --backend python"
            )
        return durable.DurableBackend
    raise RulecrmError(f"unknown matching backend {name!r}; choose one of: {', '.join(_NAMES)}")


def available_backends() -> tuple[str, ...]:
    """The backend names usable in this process, the default first."""
    return ("durable", "python") if _import_durable() is not None else ("python",)


def default_backend_name() -> str:
    """"durable" where durable-rules imports, else "python".

    SPEC §10: durable is the default as long as its B1 time is within 1.5× the python backend's; it
    is 1.00× since it remembers fact classes (bench/README.md, B1). Where durable-rules does not
    import (Python 3.13+), the commands say so at start-up and use python.
    """
    return available_backends()[0]


def _import_durable():
    # Only rulecrm.backends.durable may import durable_rules; probing it lazily keeps the python
    # backend usable on interpreters where the C extension cannot load (3.13+).
    try:
        from rulecrm.backends import durable
    except ImportError:
        return None
    return durable
