"""Collects the diagnostics of one rule file, each pinned to a node or a (line, column)."""
from __future__ import annotations

from rulecrm.errors import Diagnostic
from rulecrm.rulefile.model import Source


class Report:
    """Appends to a shared list so one run gathers the findings of every file."""

    def __init__(self, path: str, sink: list[Diagnostic]):
        self.path = path
        self.sink = sink

    def error(self, at, message, *, expected=None, found=None, hint=None) -> None:
        self._add("error", at, message, expected, found, hint)

    def warning(self, at, message, *, expected=None, found=None, hint=None) -> None:
        self._add("warning", at, message, expected, found, hint)

    def issue(self, issue) -> None:
        """Take over an expression checker Issue (its position is already absolute)."""
        self._add(issue.severity, (issue.line, issue.column), issue.message, issue.expected, issue.found, issue.hint)

    def source(self, at) -> Source:
        line, column = _position(at)
        return Source(self.path, line, column)

    def _add(self, severity, at, message, expected, found, hint) -> None:
        line, column = _position(at)
        self.sink.append(Diagnostic(self.path, line, column, severity, message, expected, found, hint))


def _position(at) -> tuple[int, int]:
    line, column = at if isinstance(at, tuple) else (at.line, at.column)
    return max(int(line), 1), max(int(column), 1)
