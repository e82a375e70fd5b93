"""Expressions and templates inside YAML scalars: parsed at their absolute file position, then checked."""
from __future__ import annotations

import attrs

from rulecrm.errors import ExpressionError
from rulecrm.expr.ast import Arith, Literal, Name, Neg, moved
from rulecrm.expr.checker import Scope, check_expression
from rulecrm.expr.lexer import Lexer
from rulecrm.expr.parser import children, parse_expression
from rulecrm.expr.templates import check_template, read_template
from rulecrm.rulefile.fields import INVALID, type_error
from rulecrm.rulefile.report import Report
from rulecrm.rulefile.scalarpos import locator, one_line_start
from rulecrm.rulefile.yamlpos import Scalar


@attrs.frozen
class Place:
    """Where a scalar's content starts in the file, and how far a literal block (`|`) is indented:
    YAML strips that indentation from every line, so positions past the first line move right by it."""

    line: int
    column: int
    indent: int = 0

    def fix(self, line: int, column: int) -> tuple[int, int]:
        return (line, column + self.indent) if line > self.line else (line, column)


def place(node: Scalar, lines: list[str]) -> Place:
    """Quoted scalars start after the quote; block scalars on their first non-blank line.
    Positions inside multi-line plain or folded (`>`) scalars are best effort."""
    if node.style in ("'", '"'):
        return Place(node.line, node.column + 1)
    if node.style in ("|", ">"):
        for index in range(node.line, len(lines)):
            content = lines[index]
            if content.strip():
                indent = len(content) - len(content.lstrip(" "))
                return Place(index + 1, indent + 1, indent if node.style == "|" else 0)
    return Place(node.line, node.column)


def origin(node: Scalar, lines: list[str]) -> tuple[int, int]:
    """The (line, column) of the scalar's first character of content."""
    where = place(node, lines)
    return where.line, where.column


def _report(report: Report, where: Place, issue) -> None:
    line, column = where.fix(issue.line, issue.column)
    report.issue(attrs.evolve(issue, line=line, column=column))


def _source_text(report: Report, node, label: str, what: str):
    if isinstance(node, Scalar) and node.kind != "null":
        return node.text
    return type_error(report, node, label, what)


def expression(report: Report, node, *, label: str, scope: Scope, want: str, lines: list[str]):
    """The checked expression tree of a scalar, or INVALID (every problem reported)."""
    what = "an expression" if want == "bool" else "a duration expression"
    return _parsed(report, node, label, what, lines, parse_expression,
                   lambda tree: check_expression(tree, scope=scope, want=want))


def template(report: Report, node, *, label: str, scope: Scope, lines: list[str]):
    """The checked Template of a scalar, or INVALID; every error of the template is reported, each
    at the exact character inside the YAML scalar (escapes and folded lines accounted for)."""
    source = _source_text(report, node, label, "a message template")
    if source is INVALID:
        return INVALID
    start = one_line_start(node, lines)
    if start is not None:  # the common case; its characters are consecutive columns
        line, column = start
        parsed, errors = _TEMPLATES.moved_here((source, column), line), []
        if parsed is None:
            parsed, errors = read_template(source, locate=locator(node, lines))
            if not errors:
                _TEMPLATES.keep((source, column), line, parsed)
    else:
        locate = locator(node, lines)
        if locate is None:  # a scalar we cannot match character by character: estimate as expressions do
            where = place(node, lines)
            count = Lexer(source, line=where.line, column=where.column).position
            locate = lambda offset: where.fix(*count(offset))  # noqa: E731
        parsed, errors = read_template(source, locate=locate)
    for error in errors:
        report.error((error.line, error.column), error.message, expected=error.expected, found=error.found,
                     hint=error.hint)
    issues = check_template(parsed, scope=scope)
    for issue in issues:
        report.issue(issue)
    return INVALID if errors or any(issue.is_error for issue in issues) else parsed


def _parsed(report: Report, node, label: str, what: str, lines: list[str], parse, check):
    """Parse a scalar at its place in the file and check it; INVALID when anything is an error."""
    source = _source_text(report, node, label, what)
    if source is INVALID:
        return INVALID
    where = place(node, lines)
    try:
        if "\n" in source:
            parsed = parse(source, line=where.line, column=where.column)
        else:  # one line: the tree of the same text in the same column elsewhere, moved here
            key = (parse, source, where.column)
            parsed = _EXPRESSIONS.moved_here(key, where.line)
            if parsed is None:
                parsed = parse(source, line=where.line, column=where.column)  # an error raises: not kept
                _EXPRESSIONS.keep(key, where.line, parsed)
    except ExpressionError as exc:
        report.error(where.fix(exc.line, exc.column), exc.message, expected=exc.expected, found=exc.found,
                     hint=exc.hint)
        return INVALID
    except RecursionError:
        report.error(node, f"{what} is nested too deeply", hint="split it into simpler parts")
        return INVALID
    issues = check(parsed)
    for issue in issues:
        _report(report, where, issue)
    return INVALID if any(issue.is_error for issue in issues) else parsed


class _Repeated:
    """Trees of one-line expressions (or templates) already read, by text and column.

    A rule file repeats its conditions and messages (a shop's reminders differ by product, not by
    wording), and a tree read once only needs its lines moved to serve at another place: reading is
    a pure function of the text and its (line, column). Keep only what read without an error.
    Bounded: emptied when full.
    """

    LIMIT = 4096

    def __init__(self, move) -> None:
        self._move = move  # (tree, lines) -> the tree that many lines further down
        self._trees: dict = {}  # key -> (line it was read at, tree)

    def moved_here(self, key, line: int):
        """The tree kept under `key`, moved to `line`; None when there is none."""
        found = self._trees.get(key)
        if found is None:
            return None
        at, tree = found
        return tree if at == line else self._move(tree, line - at)

    def keep(self, key, line: int, tree) -> None:
        if len(self._trees) >= self.LIMIT:
            self._trees.clear()
        self._trees[key] = (line, tree)


_EXPRESSIONS = _Repeated(moved)
_TEMPLATES = _Repeated(lambda template, lines: template.moved(lines))


def cycle_names(tree) -> list[Name]:
    """Every `cycle` reference in an expression tree."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Name) and node.root == "cycle":
            found.append(node)
        stack.extend(children(node))
    return found


def constant_duration(tree):
    """The value of a duration made only of literals (`2h`, `1d + 12h`), else None."""
    if isinstance(tree, Literal):
        return tree.value if hasattr(tree.value, "total_seconds") else None
    if isinstance(tree, Neg):
        value = constant_duration(tree.operand)
        return -value if value is not None else None
    if isinstance(tree, Arith) and tree.op in "+-":
        left, right = constant_duration(tree.left), constant_duration(tree.right)
        if left is None or right is None:
            return None
        return left + right if tree.op == "+" else left - right
    return None
