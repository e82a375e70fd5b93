"""The matching-backend protocol and the helpers every backend shares."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rulecrm.expr.ast import BoolOp, Pos
from rulecrm.expr.compiler import compile_condition
from rulecrm.expr.context import EvalContext
from rulecrm.rulefile.model import Rule

Condition = Callable[[EvalContext], bool]


class MatchingBackend:
    """Finds the enabled rules of one trigger whose `when` holds for one customer's context.

    A trigger is an event type (`rule.on`) or None for profile rules. Subclasses build their
    matching structures in `__init__` and answer `match` for one customer at a time.
    """

    name: str = ""

    def __init__(self, rules: Sequence[Rule], *, functions: Mapping[str, Callable] | None = None):
        self.functions = functions
        self.rules_by_trigger = group_by_trigger(rules)

    def match(self, trigger: str | None, ctx: EvalContext) -> list[Rule]:
        """The rules with `rule.on == trigger` whose `when` is true in `ctx`, in `rule.index` order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds; `match` must not be called afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def group_by_trigger(rules: Sequence[Rule]) -> dict[str | None, list[Rule]]:
    """The enabled rules by trigger, each list in `rule.index` order."""
    groups: dict[str | None, list[Rule]] = {}
    for rule in sorted((r for r in rules if r.enabled), key=lambda r: r.index):
        groups.setdefault(rule.on, []).append(rule)
    return groups


def conjuncts(node: Any) -> list[Any]:
    """The operands of a top-level `and`, flattened; `[]` for no condition.

    Exact for splitting because `and` is true iff every operand is exactly True.
    """
    if node is None:
        return []
    if isinstance(node, BoolOp) and node.op == "and":
        parts: list[Any] = []
        for operand in node.operands:
            parts.extend(conjuncts(operand))
        return parts
    return [node]


def conjunction(parts: Sequence[Any]) -> Any:
    """The inverse of `conjuncts`: None for no parts, the part itself for one, else an `and`."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return BoolOp("and", tuple(parts), getattr(parts[0], "pos", Pos(1, 1)))


def compile_when(node: Any, functions: Mapping[str, Callable] | None) -> Condition | None:
    """The compiled condition, or None when there is none (always true)."""
    if node is None:
        return None
    return compile_condition(node, functions)
