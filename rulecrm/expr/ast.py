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


ZERO = timedelta(0)
