"""Conditions that can never be true, found from the rule's text and the documented meaning of the data.

A rule is written to act sometimes. A `when` that no event and no customer can satisfy is a bug
that no run shows (nothing happens, and nothing is wrong with nothing). The proof here is
deliberately narrow, so that a correct rule is never called dead: a condition is dead only when
one of these holds for every way it could be true:

* a literal `false` or `null`;
* a field that a built-in event type does not have (it is always null) compared, matched or
  searched as if it had a value;
* number comparisons on one field that no number satisfies together, within the field's documented
  range (a rating is 1-5; counts are never negative);
* one field required to equal two different values, or to equal and differ from one value, or a
  stage (the customer's, or a stage.changed event's `from` and `to`) compared to one that does not
  exist;
* a condition and its negation asked for together.

Anything else (functions, arithmetic, `not`, other fields) counts as possibly true.

The same goes for `unless: TYPE same FIELD`: when FIELD is a near miss of a field documented for
the trigger or for TYPE (`reviewid` for `review_id`), one side is always null and nothing is ever
cancelled. A field that is near no documented one may be the shop's own and is left alone.
"""
from __future__ import annotations

import math

import attrs

from rulecrm.expr.ast import BoolOp, Compare, Contains, Literal, Matches, Membership, Name, Not
from rulecrm.schema import BUILTIN_EVENT_TYPES, EVENT_ENVELOPE_FIELDS, STAGES
from rulecrm.suggest import closest

# fields whose values are stages: the customer's, and a stage.changed event's from and to
_STAGE_FIELDS = ("customer.stage", "event.from", "event.to")
# documented ranges of number fields: (root, path) -> (lowest, highest); event fields of review.created
_RANGES = {
    ("event", ("rating",)): (1, 5),
    ("customer", ("order_count",)): (0, math.inf),
    ("customer", ("refund_count",)): (0, math.inf),
    ("customer", ("open_reviews",)): (0, math.inf),
    ("customer", ("open_complaints",)): (0, math.inf),
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def why_never_true(tree, event_type: str | None) -> str | None:
    """Why the condition `tree` of a rule on `event_type` can never be true, or None when it may be."""
    if tree is None:
        return None
    return _dead(tree, event_type)


def why_unless_never_matches(unless, trigger: str | None) -> str | None:
    """Why `unless` (an Unless of the rule file) can never cancel a timer of a rule on `trigger`, or None."""
    if unless is None or unless.same is None:
        return None
    for owner in (trigger, unless.event_type):
        if owner not in BUILTIN_EVENT_TYPES:
            continue
        known = {*BUILTIN_EVENT_TYPES[owner], *EVENT_ENVELOPE_FIELDS}
        near = None if unless.same in known else (
            closest(unless.same, known) or next((k for k in known if k.lower() == unless.same.lower()), None))
        if near is not None:
            return (f"{owner} has no field {unless.same!r} (did you mean {near!r}?), so no {unless.event_type} "
                    "ever has the same one")
    return None


def start_of(tree):
    """Where an expression's text begins (an operator node is positioned at its operator)."""
    while True:
        if isinstance(tree, BoolOp):
            tree = tree.operands[0]
        elif isinstance(tree, Compare):
            tree = tree.left
        elif isinstance(tree, (Matches, Contains, Membership)):
            tree = tree.subject if isinstance(tree, Matches) else tree.container if isinstance(tree, Contains) \
                else tree.item
        else:
            return tree.pos


def _dead(node, event_type) -> str | None:
    if isinstance(node, Literal):
        return f"it is the constant {node.value!r}" if node.value in (False, None) else None
    if isinstance(node, BoolOp):
        reasons = [_dead(operand, event_type) for operand in node.operands]
        if node.op == "or":
            return "; ".join(reasons) if all(reasons) else None
        return (next((reason for reason in reasons if reason), None) or _negated(node.operands)
                or _conflict(node.operands, event_type))
    missing = _missing_field(node, event_type)
    if missing is not None:
        return missing
    if isinstance(node, Compare):
        return _conflict((node,), event_type)
    return None


def _negated(operands) -> str | None:
    """A conjunction that asks for a condition and for its negation."""
    shapes = {_shape(operand) for operand in operands if not isinstance(operand, Not)}
    for operand in operands:
        if isinstance(operand, Not) and _shape(operand.operand) in shapes:
            return "it asks for a condition and for its negation together"
    return None


def _shape(node):
    """The node without its positions, to compare two conditions as written."""
    if isinstance(node, (tuple, list)):
        return tuple(_shape(item) for item in node)
    if not attrs.has(type(node)):
        return node
    return (type(node).__name__, *(_shape(getattr(node, f.name)) for f in attrs.fields(type(node))
                                   if f.name not in ("pos", "pattern_pos")))


def _missing_field(node, event_type) -> str | None:
    """A comparison or search on an event field the event type never has (so it is always null)."""
    if isinstance(node, Compare):
        pairs = ((node.left, node.right), (node.right, node.left))
        for name, other in pairs:
            if (_absent(name, event_type) and isinstance(other, Literal) and other.value is not None
                    and node.op != "!="):
                return f"{event_type} has no field {name.path[0]!r}, so {name.dotted} is always null"
        return None
    subject = {Matches: "subject", Contains: "container", Membership: "item"}.get(type(node))
    if subject is not None and _absent(getattr(node, subject), event_type) and getattr(node, "op", "in") == "in":
        name = getattr(node, subject)
        return f"{event_type} has no field {name.path[0]!r}, so {name.dotted} is always null"
    return None


def _absent(node, event_type) -> bool:
    if not isinstance(node, Name) or node.root != "event" or not node.path or event_type not in BUILTIN_EVENT_TYPES:
        return False
    field = node.path[0]
    return field not in BUILTIN_EVENT_TYPES[event_type] and field not in EVENT_ENVELOPE_FIELDS


def _conflict(operands, event_type) -> str | None:
    """Comparisons of one field with literals that no single value meets together."""
    bounds: dict[str, list] = {}  # field -> [low, low inclusive, high, high inclusive, shown]
    equal: dict[str, tuple] = {}  # field -> (value, shown)
    excluded: dict[tuple, str] = {}  # (field, value) -> the first of == and != met
    for node in operands:
        found = _field_and_literal(node)
        if found is None:
            continue
        name, op, value = found
        field = name.dotted
        shown = f"{field} {op} {value!r}"
        if op == "==":
            if field in _STAGE_FIELDS and _stage_valued(name, event_type) and isinstance(value, str) \
                    and value not in STAGES:
                return f"{shown}: the stages are {', '.join(STAGES)}"
            if field in equal and equal[field][0] != value:
                return f"{equal[field][1]} and {shown}"
            equal[field] = (value, shown)
        if op in ("==", "!="):
            if excluded.setdefault((field, value), op) != op:
                return f"{field} == {value!r} and {field} != {value!r}"
        if not isinstance(value, (int, float)) or isinstance(value, bool) or op == "!=":
            continue
        documented = _documented_range(name, event_type)
        low, high = documented or (-math.inf, math.inf)
        bound = bounds.setdefault(field, [low, True, high, True, []])
        if op in (">", ">=", "=="):
            _raise_low(bound, value, op != ">")
        if op in ("<", "<=", "=="):
            _lower_high(bound, value, op != "<")
        bound[4].append(shown)
        if bound[0] > bound[2] or (bound[0] == bound[2] and not (bound[1] and bound[3])):
            limits = "" if documented is None else f" (documented range {low}-{high})"
            return " and ".join(bound[4]) + f": no number meets all of them{limits}"
    return None


def _documented_range(name, event_type):
    """(lowest, highest) of a number field, or None; an event's rating is documented for reviews only."""
    if name.root == "event" and event_type != "review.created":
        return None
    return _RANGES.get((name.root, name.path))


def _stage_valued(name, event_type) -> bool:
    return name.root == "customer" or event_type == "stage.changed"


def _raise_low(bound, value, inclusive) -> None:
    if value > bound[0] or (value == bound[0] and not inclusive):
        bound[0], bound[1] = value, inclusive


def _lower_high(bound, value, inclusive) -> None:
    if value < bound[2] or (value == bound[2] and not inclusive):
        bound[2], bound[3] = value, inclusive


def _field_and_literal(node):
    """(name, operator as seen from the name, literal value) of `field OP literal`, or None."""
    if not isinstance(node, Compare):
        return None
    if isinstance(node.left, Name) and isinstance(node.right, Literal):
        return node.left, node.op, node.right.value
    if isinstance(node.right, Name) and isinstance(node.left, Literal):
        return node.right, _FLIPPED[node.op], node.left.value
    return None
