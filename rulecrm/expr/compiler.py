"""Compiles an expression tree into nested closures over EvalContext; the engine's per-event hot path."""
from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from math import isfinite
from typing import Any

from rulecrm.errors import ExpressionError
from rulecrm.expr.ast import Arith, BoolOp, Call, Compare, Contains, Literal, Matches, Membership, Name, Neg, Not
from rulecrm.expr.context import MISSING, EvalContext, resolve
from rulecrm.expr.regex import PatternError, compile_search
from rulecrm.suggest import did_you_mean

Compiled = Callable[[EvalContext], Any]

# Value families: values compare and combine only within one family; NONE (0) means "no family":
# MISSING, naive datetimes, collections, mappings and anything else.
NONE, NUMBER, STRING, BOOL, DURATION, TIMESTAMP = range(6)
_EXACT = {int: NUMBER, float: NUMBER, str: STRING, bool: BOOL, timedelta: DURATION,
          type(MISSING): NONE, type(None): NONE}
_COLLECTIONS = (list, tuple, set, frozenset)
_SETS = (set, frozenset)
_CONTAINERS = (str, *_COLLECTIONS)
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_ARITH_FAMILIES = {
    "+": {(NUMBER, NUMBER), (TIMESTAMP, DURATION), (DURATION, TIMESTAMP), (DURATION, DURATION)},
    "-": {(NUMBER, NUMBER), (TIMESTAMP, DURATION), (TIMESTAMP, TIMESTAMP), (DURATION, DURATION)},
    "*": {(NUMBER, NUMBER), (DURATION, NUMBER), (NUMBER, DURATION)},
    "/": {(NUMBER, NUMBER), (DURATION, NUMBER)},
}
_ALWAYS_BOOL = (Compare, Membership, Contains, Matches, BoolOp, Not)


def family(value: Any) -> int:
    """The comparison family of a value (NUMBER, STRING, ...), or NONE for MISSING and other types."""
    found = _EXACT.get(type(value))
    if found is not None:
        return found
    if isinstance(value, datetime):
        return NONE if value.utcoffset() is None else TIMESTAMP
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, str):
        return STRING
    if isinstance(value, timedelta):
        return DURATION
    if isinstance(value, numbers.Real):
        return NUMBER
    return NONE


def compile_expression(node, functions: Mapping[str, Callable] | None = None) -> Compiled:
    """A function of an EvalContext giving the expression's value (possibly MISSING).

    With `functions`, calls are bound now and an unknown name raises ExpressionError; without,
    they are looked up in `ctx.functions` at evaluation time (unknown -> MISSING).
    """
    return _Compiler(functions).compile(node)


def compile_condition(node, functions: Mapping[str, Callable] | None = None) -> Callable[[EvalContext], bool]:
    """A predicate that is True iff the expression's value is exactly True."""
    if isinstance(node, Literal):
        result = node.value is True
        return lambda ctx: result
    compiled = compile_expression(node, functions)
    if isinstance(node, _ALWAYS_BOOL):
        return compiled

    def condition(ctx):
        return compiled(ctx) is True

    return condition


class _Compiler:
    def __init__(self, functions: Mapping[str, Callable] | None):
        self.functions = functions
        self.methods = {
            Literal: self._literal,
            Name: self._name,
            Compare: self._compare,
            Membership: self._membership,
            Contains: self._contains,
            Matches: self._matches,
            BoolOp: self._boolop,
            Not: self._not,
            Arith: self._arith,
            Neg: self._neg,
            Call: self._call,
        }

    def compile(self, node) -> Compiled:
        method = self.methods.get(type(node))
        if method is None:
            raise ExpressionError(f"cannot compile {type(node).__name__}: not an expression node")
        return method(node)

    # -- leaves --------------------------------------------------------------------------------

    def _literal(self, node: Literal) -> Compiled:
        value = MISSING if node.value is None else node.value
        return lambda ctx: value

    def _name(self, node: Name) -> Compiled:
        root, path, lookup = node.root, node.path, resolve

        def name(ctx):
            return lookup(ctx, root, path)

        return name

    # -- comparisons ---------------------------------------------------------------------------

    def _compare(self, node: Compare) -> Compiled:
        test = _COMPARE[node.op]
        ordering = node.op not in ("==", "!=")
        if isinstance(node.right, Literal):
            return self._compare_constant(node.left, test, node.right.value, ordering)
        left, right = self.compile(node.left), self.compile(node.right)

        def compare(ctx):
            a = left(ctx)
            b = right(ctx)
            kind = family(a)
            if not kind or kind != family(b) or (ordering and kind == BOOL):
                return False
            return test(a, b) is True

        return compare

    def _compare_constant(self, left_node, test, value, ordering) -> Compiled:
        kind = family(value)
        if not kind or (ordering and kind == BOOL):
            return _false
        exact = {int, float} if kind == NUMBER else {type(value)}
        if isinstance(left_node, Name):
            root, path, lookup = left_node.root, left_node.path, resolve

            def compare_name(ctx):
                a = lookup(ctx, root, path)
                if type(a) in exact:
                    return test(a, value)
                return family(a) == kind and test(a, value) is True

            return compare_name
        left = self.compile(left_node)

        def compare_constant(ctx):
            a = left(ctx)
            if type(a) in exact:
                return test(a, value)
            return family(a) == kind and test(a, value) is True

        return compare_constant

    def _membership(self, node: Membership) -> Compiled:
        item = self.compile(node.item)
        negate = node.op == "not in"
        if isinstance(node.container, Literal):
            return _member_of_constant(item, node.container.value, negate)
        container = self.compile(node.container)
        if negate:
            return lambda ctx: member(item(ctx), container(ctx)) is False
        return lambda ctx: member(item(ctx), container(ctx)) is True

    def _contains(self, node: Contains) -> Compiled:
        if isinstance(node.container, Literal):
            return _member_of_constant(self.compile(node.item), node.container.value, False)
        container = self.compile(node.container)
        if isinstance(node.item, Literal) and isinstance(node.item.value, str):
            value = node.item.value

            def contains_string(ctx):
                c = container(ctx)
                return isinstance(c, _CONTAINERS) and value in c

            return contains_string
        item = self.compile(node.item)
        return lambda ctx: member(item(ctx), container(ctx)) is True

    def _matches(self, node: Matches) -> Compiled:
        try:
            found = compile_search(node.pattern)  # RE2: linear in the text, never Python's backtracking re
        except PatternError as exc:
            raise ExpressionError(
                f"invalid regular expression: {exc.message}", line=node.pos.line, column=node.pos.column,
                hint=exc.hint,
            ) from None
        subject = self.compile(node.subject)

        def matches(ctx):
            s = subject(ctx)
            return isinstance(s, str) and found(s)

        return matches

    # -- logic ---------------------------------------------------------------------------------

    def _boolop(self, node: BoolOp) -> Compiled:
        parts = tuple(self.compile(operand) for operand in node.operands)
        if node.op == "and":
            if len(parts) == 2:
                a, b = parts
                return lambda ctx: a(ctx) is True and b(ctx) is True

            def all_true(ctx):
                for part in parts:
                    if part(ctx) is not True:
                        return False
                return True

            return all_true
        if len(parts) == 2:
            a, b = parts
            return lambda ctx: a(ctx) is True or b(ctx) is True

        def any_true(ctx):
            for part in parts:
                if part(ctx) is True:
                    return True
            return False

        return any_true

    def _not(self, node: Not) -> Compiled:
        operand = self.compile(node.operand)
        return lambda ctx: operand(ctx) is not True

    # -- arithmetic ----------------------------------------------------------------------------

    def _arith(self, node: Arith) -> Compiled:
        apply, allowed = _ARITH[node.op], _ARITH_FAMILIES[node.op]
        left = self.compile(node.left)
        if isinstance(node.right, Literal):
            value = node.right.value
            right_kind = family(value)
            left_kinds = frozenset(a for a, b in allowed if b == right_kind)
            if not left_kinds or (node.op == "/" and value == 0):
                return _missing

            def arith_constant(ctx):
                a = left(ctx)
                if family(a) not in left_kinds:
                    return MISSING
                try:
                    result = apply(a, value)
                except Exception:  # noqa: BLE001 - overflow and the like leave the value missing
                    return MISSING
                return MISSING if type(result) is float and not isfinite(result) else result

            return arith_constant
        right = self.compile(node.right)

        def arith(ctx):
            a, b = left(ctx), right(ctx)
            if (family(a), family(b)) not in allowed:
                return MISSING
            try:
                result = apply(a, b)
            except Exception:  # noqa: BLE001 - division by zero, overflow: the value is missing
                return MISSING
            # a float that overflowed to infinity is missing too, like an int that overflowed
            return MISSING if type(result) is float and not isfinite(result) else result

        return arith

    def _neg(self, node: Neg) -> Compiled:
        operand = self.compile(node.operand)

        def negate(ctx):
            a = operand(ctx)
            if family(a) not in (NUMBER, DURATION):
                return MISSING
            try:
                return -a
            except Exception:  # noqa: BLE001 - -timedelta.min overflows: the value is missing
                return MISSING

        return negate

    # -- calls ---------------------------------------------------------------------------------

    def _call(self, node: Call) -> Compiled:
        args = tuple(self.compile(arg) for arg in node.args)
        name = node.name
        if self.functions is None:

            def lookup(ctx):
                return (ctx.functions or {}).get(name)

        else:
            if name not in self.functions:
                known = sorted(self.functions)
                raise ExpressionError(
                    f"unknown function {name!r}",
                    line=node.pos.line,
                    column=node.pos.column,
                    expected="a function registered by a plugin",
                    found=repr(name),
                    hint=did_you_mean(name, known)
                    or (f"registered functions: {', '.join(known)}" if known else "no functions are registered"),
                )
            function = self.functions[name]

            def lookup(ctx):
                return function

        def call(ctx):
            values = []
            for arg in args:
                value = arg(ctx)
                if value is MISSING:
                    return MISSING
                values.append(value)
            function = lookup(ctx)
            if function is None:
                return MISSING
            try:
                result = function(*values)
            except Exception:  # noqa: BLE001 - a failing plugin function makes the value missing
                return MISSING
            return MISSING if result is None else result

        return call


def member(item: Any, container: Any) -> bool | None:
    """Membership with family-aware equality: True/False, or None when the pair cannot be tested."""
    if isinstance(container, str):
        return item in container if isinstance(item, str) else None
    if not isinstance(container, _COLLECTIONS):
        return None
    kind = family(item)
    if not kind:
        return None
    if kind == STRING and isinstance(container, _SETS):
        return item in container
    for candidate in container:
        if family(candidate) == kind and (candidate == item) is True:
            return True
    return False


def _member_of_constant(item: Compiled, container: Any, negate: bool) -> Compiled:
    """`x in [literal, ...]` / `"literal" contains x` with the container known at compile time."""
    if isinstance(container, str):
        if negate:
            return lambda ctx: isinstance(v := item(ctx), str) and v not in container
        return lambda ctx: isinstance(v := item(ctx), str) and v in container
    if not isinstance(container, tuple):
        return _false
    keys = frozenset((family(value), value) for value in container if family(value))

    def member_of(ctx):
        value = item(ctx)
        kind = family(value)
        return bool(kind) and ((kind, value) in keys) is not negate

    return member_of


def _false(ctx) -> bool:
    return False


def _missing(ctx) -> Any:
    return MISSING
