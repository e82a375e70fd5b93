"""The expression tree that `when`, `after`, `recheck` and `untag` compile from; frozen and positioned."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs


@attrs.frozen
class Pos:
    """Absolute 1-based position of a node in its rule file."""

    line: int
    column: int


@attrs.frozen
class Literal:
    """number, string, true/false, null, duration (timedelta) or list (tuple of Literal values)."""

    value: Any
    pos: Pos


@attrs.frozen
class Name:
    """A reference into the evaluation context.

    root is one of "event", "customer", "product", "cycle"; path is the tuple of keys below it
    (`customer.sku["tea-xqg"].order_count` -> root "customer", path ("sku", "tea-xqg", "order_count")).
    `cycle` has an empty path.
    """

    root: str
    path: tuple[str, ...]
    pos: Pos

    @property
    def dotted(self) -> str:
        return ".".join((self.root, *self.path))


@attrs.frozen
class Compare:
    op: str  # == != < <= > >=
    left: Any
    right: Any
    pos: Pos


@attrs.frozen
class Membership:
    """`item in container` / `item not in container`."""

    op: str  # "in" | "not in"
    item: Any
    container: Any
    pos: Pos


@attrs.frozen
class Contains:
    """`container contains item`: substring for strings, membership for lists and tag sets."""

    container: Any
    item: Any
    pos: Pos


@attrs.frozen
class Matches:
    """`subject matches "regex"`: an RE2 search in a string subject; the pattern is a literal."""

    subject: Any
    pattern: str
    pos: Pos
    pattern_pos: Pos | None = attrs.field(default=None, eq=False)  # where the quoted pattern starts


@attrs.frozen
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple
    pos: Pos


@attrs.frozen
class Not:
    operand: Any
    pos: Pos


@attrs.frozen
class Arith:
    op: str  # + - * /
    left: Any
    right: Any
    pos: Pos


@attrs.frozen
class Neg:
    operand: Any
    pos: Pos


@attrs.frozen
class Call:
    """A function registered by a plugin, called by name with positional arguments."""

    name: str
    args: tuple
    pos: Pos


def moved(node, lines: int):
    """The tree `lines` lines further down the file: what parsing the same one-line text there gives
    (the rule reader reuses a repeated condition's tree instead of parsing it again)."""
    pos = Pos(node.pos.line + lines, node.pos.column)
    cls = type(node)
    if cls is Name:
        return Name(node.root, node.path, pos)
    if cls is Literal:
        value = node.value
        if isinstance(value, tuple):  # a list literal: its items are Literals
            value = tuple(moved(item, lines) if isinstance(item, Literal) else item for item in value)
        return Literal(value, pos)
    if cls is Compare or cls is Arith:
        return cls(node.op, moved(node.left, lines), moved(node.right, lines), pos)
    if cls is BoolOp:
        return BoolOp(node.op, tuple(moved(operand, lines) for operand in node.operands), pos)
    if cls is Not or cls is Neg:
        return cls(moved(node.operand, lines), pos)
    if cls is Membership:
        return Membership(node.op, moved(node.item, lines), moved(node.container, lines), pos)
    if cls is Contains:
        return Contains(moved(node.container, lines), moved(node.item, lines), pos)
    if cls is Matches:
        at = node.pattern_pos
        return Matches(moved(node.subject, lines), node.pattern, pos,
                       None if at is None else Pos(at.line + lines, at.column))
    if cls is Call:
        return Call(node.name, tuple(moved(arg, lines) for arg in node.args), pos)
    raise TypeError(f"not an expression node: {cls.__name__}")


ZERO = timedelta(0)
