"""What an expression or template can see, and the one function that looks names up in it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


class _Missing:
    """A value that is not there: comparisons with it are false, arithmetic keeps it missing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


@attrs.define(slots=True)
class EvalContext:
    """event: the event's data plus type/at/customer_id/id; customer: the profile mapping;
    product: the mapping of the event's sku's product; cycle: a timedelta, None, or a function
    of no arguments giving one (called once, when an expression first reads `cycle`)."""

    event: Mapping[str, Any] | None = None
    customer: Mapping[str, Any] | None = None
    product: Mapping[str, Any] | None = None
    cycle: Any = None
    functions: Mapping[str, Any] = attrs.field(factory=dict)


def resolve(ctx: EvalContext, root: str, path: tuple[str, ...]) -> Any:
    """Walk mappings only (never attributes), so a rule can reach nothing but data."""
    if root == "cycle":
        value = ctx.cycle
        if callable(value):  # computed on first use: a learned cycle is a median over past orders
            value = ctx.cycle = value()
        return MISSING if value is None or path else value
    if root == "event":
        value = ctx.event
    elif root == "customer":
        value = ctx.customer
    elif root == "product":
        value = ctx.product
    else:
        return MISSING
    for key in path:
        # `type(...) is dict` first: most contexts are plain dicts and isinstance on an ABC is slow.
        if type(value) is not dict and not isinstance(value, Mapping):
            return MISSING
        value = value.get(key, MISSING)
        if value is MISSING:
            return MISSING
    if value is None:
        return MISSING
    return value
