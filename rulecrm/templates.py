"""Message templates: text with `{path}` / `{path:format}` fields that can read only resolve()'d names."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import attrs

from rulecrm.errors import ExpressionError
from rulecrm.expr.ast import Name
from rulecrm.expr.checker import Issue, Scope, check_name
from rulecrm.expr.context import MISSING, EvalContext, resolve
from rulecrm.expr.lexer import Lexer
from rulecrm.expr.parser import Parser
from rulecrm.timeutil import format_duration

MAX_FORMAT_WIDTH = 1000
_NUMBERS_IN_SPEC = re.compile(r"[0-9]+")


@attrs.frozen
class Field:
    """One `{name}` or `{name:spec}` of a template."""

    name: Name
    spec: str | None = None


@attrs.frozen
class Template:
    """A parsed template: `parts` alternate literal text (str) and Field values."""

    text: str
    parts: tuple = ()

    @property
    def names(self) -> tuple[Name, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, Field))

    def render(self, ctx: EvalContext) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(render_value(resolve(ctx, part.name.root, part.name.path), part.spec))
        return "".join(out)


def render_value(value, spec: str | None = None) -> str:
    """How a template shows a value: missing -> "", ISO timestamps, 30d-style durations, true/false."""
    if value is MISSING or value is None:
        return ""
    if spec is not None:
        try:
            return format(value, spec)
        except Exception:  # noqa: BLE001 - a spec that does not fit the value falls back to str()
            return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value)


def parse_template(text: str, *, line: int = 1, column: int = 1) -> Template:
    """Split a template into text and fields; `{{` and `}}` are literal braces."""
    if not isinstance(text, str):
        raise ExpressionError(
            "a template must be text", line=line, column=column, expected="a string", found=type(text).__name__
        )
    lexer = Lexer(text, line=line, column=column)
    parts: list = []
    chunk: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "}":
            if text.startswith("}}", pos):
                chunk.append("}")
                pos += 2
                continue
            raise lexer.error(
                "unmatched '}' in template", pos, expected="'}}' for a literal brace", found="'}'", hint="write '}}' for a literal }"
            )
        if char != "{":
            chunk.append(char)
            pos += 1
            continue
        if text.startswith("{{", pos):
            chunk.append("{")
            pos += 2
            continue
        if chunk:
            parts.append("".join(chunk))
            chunk = []
        field, pos = _field(text, pos, lexer)
        parts.append(field)
    if chunk:
        parts.append("".join(chunk))
    return Template(text, tuple(parts))


def _field(text: str, start: int, lexer: Lexer) -> tuple[Field, int]:
    """Read `{name}` or `{name:spec}` starting at the `{`; returns the field and the offset after `}`."""
    lexer.pos = start + 1
    parser = Parser(lexer)
    if parser.tok.kind == "end":
        raise _unclosed(lexer, start)
    name = parser.name()
    token = parser.tok
    if token.kind == "end":
        raise _unclosed(lexer, start)
    if token.kind == "char" and token.value == "}":
        return Field(name), token.end
    if token.kind == "char" and token.value == ":":
        close = text.find("}", token.end)
        opening = text.find("{", token.end)
        if close < 0:
            raise lexer.error("unclosed '{' in template", start, expected="'}' after the format", found="end of template")
        if 0 <= opening < close:
            raise lexer.error(
                "a format cannot contain '{'", opening, expected="a format such as .2f or %Y-%m-%d", found="'{'"
            )
        spec = text[token.end:close]
        _check_spec(spec, lexer, token.end)
        return Field(name, spec), close + 1
    raise parser.error(
        f"expected '}}' or ':format' after the name, found {token.describe()}",
        expected="'}' or ':'",
        hint="a field holds one name such as {customer.name}; write '{{' for a literal {",
    )


def _unclosed(lexer: Lexer, start: int) -> ExpressionError:
    return lexer.error(
        "unclosed '{' in template", start, expected="a name and '}'", found="end of template",
        hint="write '{{' for a literal {",
    )


def _check_spec(spec: str, lexer: Lexer, offset: int) -> None:
    for number in _NUMBERS_IN_SPEC.findall(spec):
        if len(number) > 4 or int(number) > MAX_FORMAT_WIDTH:
            raise lexer.error(
                f"format width {number} is too large", offset, expected=f"at most {MAX_FORMAT_WIDTH}", found=number
            )


def check_template(template: Template, *, scope: Scope) -> list[Issue]:
    """The same name checks as expressions, for every field of the template."""
    issues: list[Issue] = []
    for name in template.names:
        issues.extend(check_name(name, scope=scope))
    return issues
