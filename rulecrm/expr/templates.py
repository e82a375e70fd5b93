"""Message templates: text with `{path}` / `{path:format}` fields that can read only resolve()'d names.

Rendering never fails and never shows Python's own spelling of a value (see `render_value`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal

import attrs

from rulecrm.errors import ExpressionError, TemplateError
from rulecrm.expr.ast import Name, Pos, moved
from rulecrm.expr.checker import Issue, Scope, check_name, infer_type
from rulecrm.expr.context import MISSING, EvalContext, resolve
from rulecrm.expr.lexer import Lexer
from rulecrm.expr.parser import Parser

MAX_FORMAT_WIDTH = 1000
MAX_ITEMS = 100  # items of one list, tag set or mapping shown; the rest become "…"
MAX_DEPTH = 3  # collections nested deeper than this show as "…"
TIME_FORMAT = "%Y-%m-%d %H:%M"
# The standard format mini-language: [[fill]align][sign][z][#][0][width][,_][.precision][type]
_STANDARD_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>[0-9]+)?[,_]?(?:\.(?P<precision>[0-9]+))?[bcdeEfFgGnosxX%]?", re.S
)
_INTEGER_TYPES = frozenset("bcdoxX")
# strftime directives every platform has (C89 plus Python's %f and ISO 8601's %G %u %V).
_TIME_DIRECTIVES = frozenset("aAwdbBmyYHIpMSfzZjUWcxXGuV%")
_DIRECTIVE = re.compile(r"%(.?)", re.S)
_BRACE = re.compile(r"[{}]")
_TIME_KINDS = ("timestamp",)
_TEXT_KINDS = ("string", "bool", "duration", "tags", "list", "mapping")

Locate = Callable[[int], "tuple[int, int]"]


@attrs.frozen
class Field:
    """One `{name}` or `{name:spec}` of a template; `spec_at` is where each character of the format is."""

    name: Name
    spec: str | None = None
    spec_at: tuple[Pos, ...] = attrs.field(default=(), eq=False)


@attrs.frozen
class Template:
    """A parsed template: `parts` alternate literal text (str) and Field values."""

    text: str
    parts: tuple = ()

    @property
    def names(self) -> tuple[Name, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, Field))

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(part for part in self.parts if isinstance(part, Field))

    def moved(self, lines: int) -> Template:
        """The template `lines` lines further down the file (see `rulecrm.expr.ast.moved`)."""
        return Template(self.text, tuple(
            part if isinstance(part, str) else
            Field(moved(part.name, lines), part.spec, tuple(Pos(at.line + lines, at.column) for at in part.spec_at))
            for part in self.parts))

    def render(self, ctx: EvalContext, zone=None) -> str:
        """The message; timestamps are shown in `zone` (the customer's or the shop's), else as given."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(render_value(resolve(ctx, part.name.root, part.name.path), part.spec, zone))
        return "".join(out)


# -- rendering -------------------------------------------------------------------------------------
def render_value(value, spec: str | None = None, zone=None) -> str:
    """How a template shows a value (docs/rules.md, "Templates"): missing -> "", true/false, numbers
    without float noise, timestamps as 2026-03-01 10:15 in `zone`, durations as 3d 4h, tags sorted
    and lists joined with ", ", mappings as `k: v, k2: v2`. A format that does not fit the value is
    left out rather than failing the message."""
    if value is MISSING or value is None:
        return ""
    if spec:
        shown = _formatted(value, spec, zone)
        if shown is not None:
            return shown
    return _human(value, zone, 0)


def _formatted(value, spec: str, zone) -> str | None:
    try:
        if isinstance(value, bool):
            return format(_human(value, zone, 0), spec)
        if isinstance(value, (int, float)):
            return _format_number(value, spec)
        if isinstance(value, datetime) and "%" in spec:
            return _local(value, zone).strftime(spec)
        return format(_human(value, zone, 0), spec)
    except (ValueError, TypeError, OverflowError):
        return None


def _format_number(value, spec: str) -> str:
    if spec[-1:] in _INTEGER_TYPES and isinstance(value, float) and value.is_integer():
        value = int(value)  # 128.0 from a JSON amount still takes an integer format such as {x:d}
    return format(value, spec)


def _human(value, zone, depth: int) -> str:
    if value is MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _integer(value)
    if isinstance(value, float):
        return _decimal(value)
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return _local(value, zone).strftime(TIME_FORMAT)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, (set, frozenset, list, tuple, Mapping)):
        return _collection(value, zone, depth)
    return str(value)


def _integer(value: int) -> str:
    if value.bit_length() > 10_000:  # beyond Python's int-to-text limit; validation keeps these out
        return format(Decimal(value), ".6e")
    return str(value)


def _decimal(value: float) -> str:
    """128.0 -> 128, 0.1 + 0.2 -> 0.3, 1e20 -> 1e+20: at most 10 decimals, no trailing zeros."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    size = abs(value)
    if size >= 1e15 or (size and size < 1e-6):
        return format(value, ".10g")
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _local(value: datetime, zone) -> datetime:
    if zone is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(zone)
    except (OverflowError, ValueError):  # at the edge of the representable range: keep its own offset
        return value


def _duration(value: timedelta) -> str:
    """3d 4h, 45m, 1m 30s, 500ms; zero is 0s."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000),
                       ("ms", 1_000)):
        if micros >= size:
            parts.append(f"{micros // size}{unit}")
            micros %= size
    return sign + (" ".join(parts) or "0s")


def _collection(value, zone, depth: int) -> str:
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        items = [f"{_human(key, zone, depth + 1)}: {_human(item, zone, depth + 1)}"
                 for key, item in _first(value.items())]
        more = len(value) > MAX_ITEMS
        opening, closing = "{", "}"
    else:
        items = [_human(item, zone, depth + 1) for item in _first(value)]
        more = len(value) > MAX_ITEMS
        if isinstance(value, (set, frozenset)):
            items.sort()  # a tag set has no order of its own
        opening, closing = "[", "]"
    if more:
        items.append("…")
    text = ", ".join(items)
    return text if depth == 0 else f"{opening}{text}{closing}"


def _first(items):
    out = []
    for item in items:
        if len(out) == MAX_ITEMS:
            break
        out.append(item)
    return out


# -- parsing ---------------------------------------------------------------------------------------
def parse_template(text: str, *, line: int = 1, column: int = 1, locate: Locate | None = None) -> Template:
    """Split a template into text and fields; `{{` and `}}` are literal braces.

    Raises TemplateError with every syntax error. Positions come from `locate` (offset in `text` to
    (line, column) in the file) when given, else count from `line`/`column`."""
    template, errors = read_template(text, line=line, column=column, locate=locate)
    if errors:
        raise TemplateError(errors)
    return template


def read_template(text: str, *, line: int = 1, column: int = 1,
                  locate: Locate | None = None) -> tuple[Template, list[ExpressionError]]:
    """The template's good fields and every syntax error, so a rule file reports them all at once."""
    if not isinstance(text, str):
        error = ExpressionError("a template must be text", line=line, column=column, expected="a string",
                                found=type(text).__name__)
        return Template("", ()), [error]
    lexer = _Lexer(text, locate or Lexer(text, line=line, column=column).position)
    parts: list = []
    chunk: list[str] = []
    errors: list[ExpressionError] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char not in "{}":
            stop = _BRACE.search(text, pos)
            stop = stop.start() if stop else len(text)
            chunk.append(text[pos:stop])
            pos = stop
            continue
        if text.startswith(char * 2, pos):
            chunk.append(char)
            pos += 2
            continue
        if char == "}":
            errors.append(lexer.error(
                "unmatched '}' in template", pos, expected="'}}' for a literal brace", found="'}'",
                hint="write }} for a literal }, or open a field with {",
            ))
            pos += 1
            continue
        field, after, error = _field(text, pos, lexer)
        if error is not None:
            errors.append(error)  # and go on: every error of the template is reported at once
        if field is not None:
            if chunk:
                parts.append("".join(chunk))
                chunk = []
            parts.append(field)
        pos = after
    if chunk:
        parts.append("".join(chunk))
    return Template(text, tuple(parts)), errors


class _Lexer(Lexer):
    """The expression lexer with positions from a locate function (exact places inside YAML)."""

    def __init__(self, text: str, locate: Locate):
        super().__init__("")
        self.text = text
        self._locate = locate

    def position(self, offset: int) -> tuple[int, int]:
        return self._locate(offset)


def _field(text: str, start: int, lexer: _Lexer):
    """Read the field whose `{` is at `start`: (Field or None, offset to go on from, error or None)."""
    brace = _BRACE.search(text, start + 1)
    if brace is not None and brace.group() == "{" and _format_before(start, brace.start(), lexer):
        return _nested(text, brace.start(), lexer)
    if brace is None or brace.group() == "{":
        # no '}' before the next '{' or the end: report the brace, read what follows as text
        return None, start + 1, _unclosed_error(start, brace.start() if brace else None, lexer)
    close = brace.start()
    try:
        lexer.pos = start + 1
        parser = Parser(lexer)
        if parser.tok.kind == "char" and parser.tok.value == "}" and parser.tok.start == close:
            return None, close + 1, lexer.error(
                "empty field '{}' in template", start + 1, expected="a name such as {customer.name}", found="'}'",
                hint="write {{}} for literal braces",
            )
        name = parser.name()
        token = parser.tok
    except ExpressionError as exc:
        return None, _resume(text, close, lexer.pos), exc
    if token.kind == "char" and token.value == "}":
        return Field(name), token.end, None
    if token.kind == "char" and token.value == ":":
        close = text.find("}", token.end)
        if close < 0:  # `_BRACE` found a '}' before: only a name that swallowed it gets here
            return None, len(text), _unclosed_error(start, None, lexer)
        opening = text.find("{", token.end, close)
        if opening >= 0:
            return _nested(text, opening, lexer)
        spec = text[token.end:close]
        error = _check_width(spec, lexer, token.end)
        if error is not None:
            return None, close + 1, error
        spec_at = tuple(Pos(*lexer.position(offset)) for offset in range(token.end, close))
        return Field(name, spec, spec_at), close + 1, None
    error = ExpressionError(
        f"expected '}}' or ':format' after the name, found {token.describe()}",
        line=token.line, column=token.column, expected="'}' or ':'", found=token.describe(),
        hint="a field holds one name such as {customer.name}; write {{ for a literal {",
    )
    return None, _resume(text, close, token.start), error


def _nested(text: str, opening: int, lexer: _Lexer):
    """`{x:{y}}`: a '{' inside a format; go on after the field's '}' (and the outer one, if doubled)."""
    error = lexer.error(
        "a format cannot contain '{'", opening, expected="a format such as .2f or %Y-%m-%d", found="'{'",
        hint="formats are fixed text; a field cannot be nested in another",
    )
    close = text.find("}", opening)
    return None, len(text) if close < 0 else close + (2 if text.startswith("}}", close) else 1), error


def _format_before(start: int, opening: int, lexer: _Lexer) -> bool:
    """Whether the field at `start` is a name and ':' before the '{' at `opening` (`{x:{y}}`)."""
    try:
        lexer.pos = start + 1
        parser = Parser(lexer)
        parser.name()
    except ExpressionError:
        return False
    token = parser.tok
    return token.kind == "char" and token.value == ":" and token.start < opening


def _resume(text: str, close: int, reached: int) -> int:
    """Where to go on after a broken field: past its '}' (or a later one, if the error came after it)."""
    if reached <= close:
        return close + 1
    after = text.find("}", reached)
    return len(text) if after < 0 else after + 1


def _unclosed_error(start: int, next_open: int | None, lexer: _Lexer) -> ExpressionError:
    if next_open is None:
        found = "end of template"
    else:
        line, column = lexer.position(next_open)
        found = f"another '{{' at line {line}, column {column}"
    return lexer.error(
        "unclosed brace: this '{' has no matching '}'", start, expected="a name and '}'", found=found,
        hint="close it with } or write {{ for a literal brace",
    )


def _check_width(spec: str, lexer: _Lexer, offset: int) -> ExpressionError | None:
    """Widths and precisions are bounded so a format cannot blow a message up (`{x:999999999}`)."""
    match = _STANDARD_SPEC.fullmatch(spec)
    if match is None:
        return None  # not a width/precision format (a date format, or one check_template rejects)
    for group in ("width", "precision"):
        number = match.group(group)
        if number is not None and (len(number) > 4 or int(number) > MAX_FORMAT_WIDTH):
            return lexer.error(
                f"format {group} {number[:8]} is too large", offset + match.start(group),
                expected=f"at most {MAX_FORMAT_WIDTH}", found=number[:8],
            )
    return None


# -- checking --------------------------------------------------------------------------------------
def check_template(template: Template, *, scope: Scope) -> list[Issue]:
    """The same name checks as expressions, and each format against its field's type."""
    issues: list[Issue] = []
    for field in template.fields:
        found = check_name(field.name, scope=scope)
        issues.extend(found)
        if field.spec and not any(issue.is_error for issue in found):
            issue = _spec_issue(field, infer_type(field.name, scope))
            if issue is not None:
                issues.append(issue)
    return issues


def _spec_issue(field: Field, kind: str) -> Issue | None:
    spec, pos, dotted = field.spec, field.spec_at[0], field.name.dotted
    numeric, textual = _fits(0, spec) or _fits(0.5, spec), _fits("x", spec)
    if kind == "number":
        if numeric:
            return None
        return Issue("error", f"{spec!r} is not a number format", pos.line, pos.column,
                     expected="a number format such as .2f, ,d, >8 or .0%", found=repr(spec),
                     hint=_time_hint(spec, dotted, "a number"))
    if kind in _TIME_KINDS:
        return _time_issue(field)
    if kind in _TEXT_KINDS:
        if textual:
            return None
        shown = {"bool": "true/false", "duration": "a duration such as 3d 4h", "tags": "text",
                 "list": "text", "mapping": "text"}.get(kind, "text")
        what = "a number format" if numeric else f"{spec!r} is not a valid format"
        return Issue("error", f"{what} on {dotted}, which is {_a(kind)}", pos.line, pos.column,
                     expected="a text format such as >10 (width) or .20 (cut to 20 characters)",
                     found=repr(spec), hint=f"{dotted} shows as {shown}; only alignment and width apply")
    # A field of unknown type (a custom event field, an attribute) is checked when the message is
    # rendered; only a format that fits no value at all is an error now.
    if numeric or textual or _time_problem(spec) is None:
        return None
    return Issue("error", f"{spec!r} is not a valid format", pos.line, pos.column,
                 expected="a format such as .2f, >10 or %Y-%m-%d", found=repr(spec))


def _fits(sample, spec: str) -> bool:
    try:
        format(sample, spec)
    except (ValueError, TypeError):
        return False
    return True


def _time_issue(field: Field) -> Issue | None:
    problem = _time_problem(field.spec)
    if problem is None:
        return None
    message, found, offset = problem
    pos = field.spec_at[offset]
    return Issue("error", f"{message} in the format of {field.name.dotted}, a timestamp", pos.line, pos.column,
                 expected="a date format such as %Y-%m-%d %H:%M", found=found,
                 hint="timestamp formats use % directives: %Y %m %d %H %M %S %a %b %z ...")


def _time_problem(spec: str):
    """(message, found, offset in spec) of what is wrong with a strftime format, or None."""
    seen = False
    for match in _DIRECTIVE.finditer(spec):
        code = match.group(1)
        if code == "":
            return "a lone '%' at the end", "'%'", match.start()
        if code not in _TIME_DIRECTIVES:
            return f"unknown directive %{code}", repr(match.group()), match.start()
        seen = seen or code != "%"
    if not seen:
        return "no % directive", repr(spec), 0
    return None


def _time_hint(spec: str, dotted: str, kind: str) -> str:
    if "%" in spec and _time_problem(spec) is None and not spec.endswith("%"):
        return f"{dotted} is {kind}; % directives such as %Y are for timestamps"
    return f"{dotted} is {kind}"


def _a(kind: str) -> str:
    if kind == "tags":
        return "a tag set"
    return ("an " if kind[0] in "aeiou" else "a ") + kind
