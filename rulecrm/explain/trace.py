"""Evaluates an expression node by node with the engine's own compiler and records what each part saw."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from rulecrm.explain.values import jsonable, shown
from rulecrm.expr.ast import Arith, BoolOp, Call, Compare, Contains, Literal, Matches, Membership, Name, Neg, Not
from rulecrm.expr.compiler import compile_condition, compile_expression
from rulecrm.expr.context import EvalContext
from rulecrm.expr.parser import children
from rulecrm.timeutil import format_duration

_IDENTIFIER = re.compile(r"[^\W\d]\w*\Z")
_CONDITIONS = (Compare, Membership, Contains, Matches)
# Binding strength, as the parser reads it: or < and < not < comparisons < + - < * / < unary < atoms.
_PRECEDENCE = {BoolOp: 1, Not: 3, Compare: 4, Membership: 4, Contains: 4, Matches: 4, Neg: 7}


@attrs.frozen
class Trace:
    """One sub-expression: its text, the value it had, and the traces of its operands."""

    node: Any
    text: str
    value: Any
    parts: tuple["Trace", ...] = ()

    def to_dict(self, tz=None) -> dict:
        data = {"expr": self.text, "value": jsonable(self.value, tz), "shown": shown(self.value, tz)}
        if self.parts:
            data["parts"] = [part.to_dict(tz) for part in self.parts]
        return data


@attrs.frozen
class Evaluation:
    """A whole condition: whether it held (exactly as the engine decides) and its trace."""

    result: bool
    trace: Trace


def evaluate(node, ctx: EvalContext, functions: Mapping | None = None) -> Evaluation:
    """Trace a `when`/`recheck` condition; `result` is the engine's compile_condition verdict."""
    if functions is not None and not ctx.functions:
        ctx.functions = dict(functions)
    return Evaluation(compile_condition(node)(ctx) is True, trace(node, ctx))


def trace(node, ctx: EvalContext) -> Trace:
    """The value of `node` and of every sub-expression below it, each computed by compile_expression."""
    value = compile_expression(node)(ctx)
    parts = () if isinstance(node, (Literal, Name)) else tuple(trace(child, ctx) for child in children(node))
    return Trace(node, expression_text(node), value, parts)


def reasons(traced: Trace) -> list[tuple[Trace, bool]]:
    """The parts that decided a condition's truth value, each with the truth value it had.

    A false `and` is decided by its first part that was not true, a true `or` by its first true
    part; a true `and` and a false `or` by every part. `not` is decided by its operand.
    """
    node, value = traced.node, traced.value is True
    if isinstance(node, Not):
        return reasons(traced.parts[0])
    if isinstance(node, BoolOp):
        every = (node.op == "and") == value
        found = []
        for part in traced.parts:
            if (part.value is True) == value:
                found.extend(reasons(part))
                if not every:
                    break
        return found
    return [(traced, value)]


def describe(leaf: Trace, truth: bool, tz=None) -> str:
    """`event.rating <= 2 was false (event.rating was 4)`: a decisive part and the values it compared."""
    if not isinstance(leaf.node, _CONDITIONS) and not isinstance(leaf.value, bool):
        return f"{leaf.text} was {shown(leaf.value, tz)}"
    seen = [part for part in leaf.parts if not isinstance(part.node, Literal)]
    if not seen:
        return f"{leaf.text} was {'true' if truth else 'false'}"
    values = ", ".join(f"{part.text} was {shown(part.value, tz)}" for part in seen)
    return f"{leaf.text} was {'true' if truth else 'false'} ({values})"


def explain_outcome(evaluation: Evaluation, tz=None) -> str:
    """Why a condition came out as it did, in one line."""
    return " and ".join(describe(leaf, truth, tz) for leaf, truth in reasons(evaluation.trace))


# -- expression text -------------------------------------------------------------------------------


def expression_text(node, context: int = 0) -> str:
    """The expression as a rule file would spell it, parenthesised only where needed."""
    own = _precedence(node)
    text = _spell(node)
    return f"({text})" if own < context else text


def _precedence(node) -> int:
    if isinstance(node, BoolOp):
        return 1 if node.op == "or" else 2
    if isinstance(node, Arith):
        return 5 if node.op in "+-" else 6
    return _PRECEDENCE.get(type(node), 8)


def _spell(node) -> str:
    if isinstance(node, Literal):
        return literal_text(node.value)
    if isinstance(node, Name):
        return node.root + "".join(
            f".{key}" if _IDENTIFIER.match(key) else f"[{json.dumps(key, ensure_ascii=False)}]" for key in node.path
        )
    if isinstance(node, BoolOp):
        own = _precedence(node)
        return f" {node.op} ".join(expression_text(part, own + 1) for part in node.operands)
    if isinstance(node, Not):
        return "not " + expression_text(node.operand, 3)
    if isinstance(node, Compare):
        return f"{expression_text(node.left, 5)} {node.op} {expression_text(node.right, 5)}"
    if isinstance(node, Membership):
        return f"{expression_text(node.item, 5)} {node.op} {expression_text(node.container, 5)}"
    if isinstance(node, Contains):
        return f"{expression_text(node.container, 5)} contains {expression_text(node.item, 5)}"
    if isinstance(node, Matches):
        return f"{expression_text(node.subject, 5)} matches {literal_text(node.pattern)}"
    if isinstance(node, Arith):
        own = _precedence(node)
        return f"{expression_text(node.left, own)} {node.op} {expression_text(node.right, own + 1)}"
    if isinstance(node, Neg):
        return "-" + expression_text(node.operand, 7)
    if isinstance(node, Call):
        return f"{node.name}({', '.join(expression_text(arg) for arg in node.args)})"
    return repr(node)


def literal_text(value) -> str:
    """A literal as written: "text", true, null, 30d, [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal_text(item) for item in value) + "]"
    if hasattr(value, "total_seconds"):
        return format_duration(value)
    return repr(value)
