"""The one error hierarchy of rulecrm: every error the core raises derives from RulecrmError."""
from __future__ import annotations

import attrs


class RulecrmError(Exception):
    """Root of every error rulecrm raises on purpose."""


@attrs.frozen
class Diagnostic:
    """One positioned finding about a rule file (an error or a warning)."""

    path: str
    line: int  # 1-based
    column: int  # 1-based
    severity: str  # "error" | "warning"
    message: str
    expected: str | None = None
    found: str | None = None
    hint: str | None = None

    def format(self) -> str:
        text = f"{self.path}:{self.line}:{self.column}: {self.severity}: {self.message}"
        details = []
        if self.expected is not None:
            details.append(f"expected {self.expected}")
        if self.found is not None:
            details.append(f"found {self.found}")
        if details:
            text += f" ({', '.join(details)})"
        if self.hint:
            text += f"; {self.hint}"
        return text

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class RuleFileError(RulecrmError):
    """A rules directory that cannot be used; carries every diagnostic found, warnings included."""

    def __init__(self, diagnostics):
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.is_error]
        super().__init__("\n".join(d.format() for d in errors) or "invalid rules")


class ExpressionError(RulecrmError):
    """A syntax or type error inside one expression or template.

    `line`/`column` are absolute positions in the rule file (1-based) once the
    expression was parsed with its origin; the rule-file loader turns this into a Diagnostic.
    """

    def __init__(self, message, *, line=1, column=1, expected=None, found=None, hint=None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.expected = expected
        self.found = found
        self.hint = hint


class EventError(RulecrmError):
    """An input line that is not a valid event; it goes to the dead-letter store."""

    def __init__(self, message, *, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


class StateError(RulecrmError):
    """The state store cannot be used (locked by another runner, wrong schema, ...)."""


class UsageError(RulecrmError):
    """A command was called with arguments that cannot work together."""


class StorageError(StateError):
    """The state file cannot be read or written: disk full, read-only, damaged, an I/O error.

    `kind` says which ("full", "readonly", "damaged", "io", "busy", "cannot-open"); the message is one
    line naming the file and what to do. Work committed before the fault is kept.
    """

    def __init__(self, message, *, kind, path=None):
        super().__init__(message)
        self.kind = kind
        self.path = path


class PluginError(RulecrmError):
    """A plugin misbehaved; the message names the plugin."""


class ChannelConfigError(RulecrmError):
    """A channel instance cannot be built (missing environment variable, bad setting...)."""


class ExplainError(RulecrmError):
    """explain cannot answer: an unknown customer or rule, or a state it cannot read."""


class SourceError(RulecrmError):
    """A source cannot start (bad argument, address not allowed, port in use ...)."""


class PatternError(RulecrmError):
    """A `matches` pattern RE2 cannot run: `offset` is the character in the pattern it is about, if
    known. The expression parser turns it into a positioned ExpressionError."""

    def __init__(self, message: str, offset: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.hint = hint


class TemplateError(ExpressionError):
    """Every syntax error of one template; the exception's own message and position are the first's."""

    def __init__(self, errors):
        first = errors[0]
        super().__init__(first.message, line=first.line, column=first.column, expected=first.expected,
                         found=first.found, hint=first.hint)
        self.errors = tuple(errors)
