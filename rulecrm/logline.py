"""A message for people that also carries its level and fields, for a structured log (`run --log-format json`).

A `LogLine` is the message's text (a `str`), so every `on_message(text)` callback takes it as it
takes plain text; a writer of JSON lines reads its `level` and `fields` as well. Plain strings are
`info` with no fields. The text is already masked (secrets, phone numbers, e-mail addresses) where
it is made, and fields never hold customer data: a line number, a source's name, a rule file.
"""
from __future__ import annotations

from typing import Any

LEVELS = ("info", "warning", "error")


class LogLine(str):
    level: str
    fields: dict[str, Any]

    def __new__(cls, text: str, *, level: str = "info", **fields: Any) -> LogLine:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
        line = super().__new__(cls, text)
        line.level = level
        line.fields = fields
        return line


def diagnostic_line(diagnostic) -> LogLine:
    """A rule file's diagnostic: its `file:line:col: severity: ...` text, its severity, and where it is."""
    return LogLine(diagnostic.format(), level=diagnostic.severity, file=diagnostic.path, line=diagnostic.line,
                   column=diagnostic.column)


def level_of(text: str) -> str:
    return getattr(text, "level", "info")


def fields_of(text: str) -> dict[str, Any]:
    return getattr(text, "fields", {})
