"""Static checks of an expression against the known fields and value types of `rulecrm.schema`."""
from __future__ import annotations

from datetime import timedelta

import attrs

from rulecrm.expr.ast import Arith, BoolOp, Call, Compare, Contains, Literal, Matches, Membership, Name, Neg, Not
from rulecrm.expr.parser import children, start_pos
from rulecrm.expr.regex import PatternError, check_pattern
from rulecrm.schema import (
    BUILTIN_EVENT_TYPES,
    CUSTOMER_FIELDS,
    EVENT_ENVELOPE_FIELDS,
    ORDER_FIELDS,
    PER_KEY_FIELDS,
    PRODUCT_FIELDS,
)
from rulecrm.suggest import closest, did_you_mean

ANY = "any"
_SCALARS = ("number", "string", "bool", "timestamp", "duration")
_COLLECTION_TYPES = ("tags", "list", "mapping")
_ARITH_TYPES = {
    "+": {
        ("number", "number"): "number",
        ("timestamp", "duration"): "timestamp",
        ("duration", "timestamp"): "timestamp",
        ("duration", "duration"): "duration",
    },
    "-": {
        ("number", "number"): "number",
        ("timestamp", "duration"): "timestamp",
        ("timestamp", "timestamp"): "duration",
        ("duration", "duration"): "duration",
    },
    "*": {("number", "number"): "number", ("duration", "number"): "duration", ("number", "duration"): "duration"},
    "/": {("number", "number"): "number", ("duration", "number"): "duration"},
}
_ARITH_OPERANDS = ("number", "timestamp", "duration", ANY)
_SKU_NAMES = ("event.sku", "product.sku", "customer.last_order.sku")
_EVENT_FIELD_CUTOFF = 0.75


@attrs.frozen
class Scope:
    """What an expression may refer to: the rule's event type (None for a profile rule),
    the registered function names and the declared product skus."""

    event_type: str | None
    functions: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()


@attrs.frozen
class Issue:
    severity: str  # "error" | "warning"
    message: str
    line: int
    column: int
    expected: str | None = None
    found: str | None = None
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def check_expression(node, *, scope: Scope, want: str) -> list[Issue]:
    """Every error and warning about `node`; `want` is "bool" for conditions, "duration" for `after`."""
    checker = _Checker(scope)
    checker.visit(node)
    found = infer_type(node, scope)
    if found != ANY and found != want:
        pos = start_pos(node)
        if want == "bool":
            message = f"a condition must be true or false, but this is {_a(found)}"
            hint = "compare it, e.g. customer.order_count >= 2"
        else:
            message = f"expected {_a(want)}, but this is {_a(found)}"
            hint = "write a duration such as 3d, 2h, cycle - 3d" if want == "duration" else None
        checker.error(pos, message, expected=want, found=found, hint=hint)
    return checker.issues


def check_name(name: Name, *, scope: Scope) -> list[Issue]:
    """The issues of one name (also used for template fields)."""
    issues: list[Issue] = []
    _lookup(name, scope, issues)
    return issues


def infer_type(node, scope: Scope) -> str:
    """The static value type of an expression, "any" when it cannot be known."""
    if isinstance(node, Literal):
        return _literal_type(node.value)
    if isinstance(node, Name):
        return _lookup(node, scope, None)
    if isinstance(node, (Compare, Membership, Contains, Matches, BoolOp, Not)):
        return "bool"
    if isinstance(node, Arith):
        left, right = infer_type(node.left, scope), infer_type(node.right, scope)
        return _ARITH_TYPES[node.op].get((left, right), ANY)
    if isinstance(node, Neg):
        operand = infer_type(node.operand, scope)
        return operand if operand in ("number", "duration") else ANY
    return ANY


class _Checker:
    def __init__(self, scope: Scope):
        self.scope = scope
        self.issues: list[Issue] = []

    def error(self, pos, message, **details) -> None:
        self.issues.append(Issue("error", message, pos.line, pos.column, **details))

    def warning(self, pos, message, **details) -> None:
        self.issues.append(Issue("warning", message, pos.line, pos.column, **details))

    def type_of(self, node) -> str:
        return infer_type(node, self.scope)

    def visit(self, node) -> None:
        stack = [node]
        while stack:
            current = stack.pop()
            check = getattr(self, "_" + type(current).__name__.lower(), None)
            if check is not None:
                check(current)
            stack.extend(reversed(children(current)))

    def _name(self, node: Name) -> None:
        _lookup(node, self.scope, self.issues)

    def _call(self, node: Call) -> None:
        functions = self.scope.functions
        if node.name in functions:
            return
        self.error(
            node.pos,
            f"unknown function {node.name!r}",
            expected="a function registered by a plugin",
            found=repr(node.name),
            hint=did_you_mean(node.name, functions)
            or (f"registered functions: {', '.join(sorted(functions))}" if functions
                else "no functions are registered"),
        )

    def _compare(self, node: Compare) -> None:
        for side in (node.left, node.right):
            if isinstance(side, Literal) and side.value is None:
                self.warning(
                    side.pos,
                    "a comparison with null is always false",
                    hint="a missing field already makes every comparison false",
                )
                return
        left, right = self.type_of(node.left), self.type_of(node.right)
        for kind in (left, right):
            if kind in _COLLECTION_TYPES:
                self.error(
                    node.pos,
                    f"{_a(kind)} cannot be compared with {node.op}",
                    expected="a number, string, timestamp, duration or bool",
                    found=kind,
                    hint="use 'in', 'not in' or 'contains' for tags and lists" if kind != "mapping" else None,
                )
                return
        if left != ANY and right != ANY and left != right:
            self.error(
                node.pos,
                f"{_a(left)} is never {node.op} {_a(right)}: this comparison is always false",
                expected=left,
                found=right,
                hint=_mismatch_hint(node.right, left),
            )
            return
        if node.op not in ("==", "!=") and "bool" in (left, right):
            self.error(
                node.pos,
                f"true/false values cannot be ordered with {node.op}",
                expected="== or !=",
                found=repr(node.op),
            )
            return
        self._check_sku(node.left, node.right)
        self._check_sku(node.right, node.left)

    def _membership(self, node: Membership) -> None:
        self._check_container(node, node.item, node.container, f"'{node.op}'")

    def _contains(self, node: Contains) -> None:
        self._check_container(node, node.item, node.container, "'contains'")

    def _check_container(self, node, item, container, word: str) -> None:
        item_type, container_type = self.type_of(item), self.type_of(container)
        if container_type in ("number", "bool", "timestamp", "duration", "mapping"):
            self.error(
                node.pos,
                f"{word} needs a list, tags or a string, but this is {_a(container_type)}",
                expected="a list, tags or a string",
                found=container_type,
            )
            return
        if item_type in _COLLECTION_TYPES:
            self.error(
                node.pos,
                f"{word} looks for a single value, but this is {_a(item_type)}",
                expected="a number, string, timestamp, duration or bool",
                found=item_type,
            )
            return
        if container_type in ("string", "tags") and item_type not in (ANY, "string"):
            self.error(
                node.pos,
                f"{word} on {_a(container_type)} needs a string, but this is {_a(item_type)}",
                expected="string",
                found=item_type,
            )
            return
        if isinstance(container, Literal) and isinstance(container.value, tuple):
            kinds = {_literal_type(value) for value in container.value if value is not None}
            if item_type != ANY and kinds and item_type not in kinds:
                self.error(
                    node.pos,
                    f"{_a(item_type)} is never in a list of {' and '.join(sorted(kinds))} values",
                    expected=item_type,
                    found=f"a list of {' and '.join(sorted(kinds))}",
                )
                return
            for value in container.value:
                if isinstance(value, str):
                    self._check_sku(item, Literal(value, container.pos))

    def _matches(self, node: Matches) -> None:
        subject = self.type_of(node.subject)
        if subject not in (ANY, "string"):
            self.error(
                node.pos,
                f"'matches' searches a string, but this is {_a(subject)}",
                expected="string",
                found=subject,
            )
        try:
            notes = check_pattern(node.pattern)
        except PatternError:
            return  # the parser reports refused patterns
        for _, note in notes:
            self.warning(node.pattern_pos or node.pos, f"in RE2 {note.split(' ', 1)[0]} is ASCII-only",
                         hint=note)

    def _boolop(self, node: BoolOp) -> None:
        for operand in node.operands:
            self._check_condition(operand, f"'{node.op}'")

    def _not(self, node: Not) -> None:
        self._check_condition(node.operand, "'not'")

    def _check_condition(self, operand, word: str) -> None:
        kind = self.type_of(operand)
        if kind not in (ANY, "bool"):
            self.error(
                start_pos(operand),
                f"{word} needs a condition, but this is {_a(kind)} (only true counts as true)",
                expected="bool",
                found=kind,
                hint="compare it, e.g. customer.order_count >= 2",
            )

    def _arith(self, node: Arith) -> None:
        left, right = self.type_of(node.left), self.type_of(node.right)
        bad = next((kind for kind in (left, right) if kind not in _ARITH_OPERANDS), None)
        if bad is None and ANY not in (left, right) and (left, right) not in _ARITH_TYPES[node.op]:
            bad = right
        if bad is not None:
            self.error(
                node.pos,
                f"cannot compute {_a(left)} {node.op} {_a(right)}",
                expected=_arith_expectation(node.op),
                found=f"{left} {node.op} {right}",
            )
            return
        if node.op == "/" and isinstance(node.right, Literal) and node.right.value == 0 and right == "number":
            self.error(node.right.pos, "division by zero", expected="a non-zero number", found="0")

    def _neg(self, node: Neg) -> None:
        kind = self.type_of(node.operand)
        if kind not in (ANY, "number", "duration"):
            self.error(
                node.pos,
                f"cannot negate {_a(kind)}",
                expected="a number or a duration",
                found=kind,
            )

    def _check_sku(self, name, literal) -> None:
        skus = self.scope.skus
        if not (skus and isinstance(name, Name) and isinstance(literal, Literal)):
            return
        if name.dotted not in _SKU_NAMES or not isinstance(literal.value, str) or literal.value in skus:
            return
        _report_sku(literal.value, literal.pos, skus, self.issues)


def _lookup(name: Name, scope: Scope, issues: list[Issue] | None) -> str:
    """The type of a name; appends its issues to `issues` when given."""
    report = _Reporter(name, issues)
    if name.root == "cycle":
        return "duration"
    if name.root == "event":
        return _event_type(name, scope, report)
    if name.root == "customer":
        return _customer_type(name, scope, report)
    if name.root == "product":
        field = name.path[0]
        if field not in PRODUCT_FIELDS:
            report.unknown("product", field, PRODUCT_FIELDS)
            return ANY
        return _below(PRODUCT_FIELDS[field], name, 1, report)
    return ANY


def _event_type(name: Name, scope: Scope, report: _Reporter) -> str:
    if scope.event_type is None:
        report.error(
            "a profile rule (a rule without `on`) has no event",
            expected="customer.<field>",
            found=repr(name.dotted),
            hint="add `on: <event type>` to the rule, or use customer fields",
        )
        return ANY
    field = name.path[0]
    if field in EVENT_ENVELOPE_FIELDS:
        return _below(EVENT_ENVELOPE_FIELDS[field], name, 1, report)
    fields = BUILTIN_EVENT_TYPES.get(scope.event_type)
    if fields is None:
        return ANY
    if field in fields:
        return _below(fields[field], name, 1, report)
    known = {*fields, *EVENT_ENVELOPE_FIELDS}
    match = closest(field, known, cutoff=_EVENT_FIELD_CUTOFF)
    if match:
        report.error(
            f"{field!r} is not a field of {scope.event_type}",
            expected=f"a field of {scope.event_type}",
            found=repr(field),
            hint=f"did you mean {match!r}?",
        )
    else:
        report.warning(
            f"{field!r} is not a known field of {scope.event_type}; custom fields are allowed",
            found=repr(field),
            hint=f"known fields: {', '.join(sorted(known))}",
        )
    return ANY


def _customer_type(name: Name, scope: Scope, report: _Reporter) -> str:
    path = name.path
    field = path[0]
    if field not in CUSTOMER_FIELDS:
        report.unknown("customer", field, CUSTOMER_FIELDS)
        return ANY
    if field == "attributes":
        return ANY if len(path) > 1 else "mapping"
    if field == "last_order":
        return _order_field(path[1:])
    if field in ("sku", "category"):
        if field == "sku" and len(path) > 1 and scope.skus and path[1] not in scope.skus:
            _report_sku(path[1], name.pos, scope.skus, report.issues)
        if len(path) < 3:
            return "mapping"
        per_key = path[2]
        if per_key not in PER_KEY_FIELDS:
            report.unknown(f"customer.{field}[...]", per_key, PER_KEY_FIELDS)
            return ANY
        if per_key == "last_order":
            return _order_field(path[3:])
        return _below(PER_KEY_FIELDS[per_key], name, 3, report)
    return _below(CUSTOMER_FIELDS[field], name, 1, report)


def _order_field(rest: tuple[str, ...]) -> str:
    if not rest:
        return "mapping"
    return ORDER_FIELDS.get(rest[0], ANY) if len(rest) == 1 else ANY


def _below(kind: str, name: Name, depth: int, report: _Reporter) -> str:
    """The type of a known field, checking that nothing is looked up below a plain value."""
    if len(name.path) <= depth:
        return kind
    if kind in ("mapping", ANY):
        return ANY
    owner = ".".join((name.root, *name.path[:depth]))
    report.error(
        f"{owner} is {_a(kind)} and has no fields",
        expected=owner,
        found=repr(name.dotted),
    )
    return ANY


def _report_sku(value: str, pos, skus, issues: list[Issue] | None) -> None:
    if issues is None:
        return
    match = closest(value, skus)
    if match:
        issues.append(
            Issue(
                "error",
                f"{value!r} is not a declared product sku",
                pos.line,
                pos.column,
                expected="a sku from `products`",
                found=repr(value),
                hint=f"did you mean {match!r}?",
            )
        )
    else:
        issues.append(
            Issue(
                "warning",
                f"{value!r} is not a declared product sku",
                pos.line,
                pos.column,
                found=repr(value),
                hint="declare it under `products` if it is one",
            )
        )


class _Reporter:
    """Collects the issues of one name at its position (or drops them when only the type is wanted)."""

    def __init__(self, name: Name, issues: list[Issue] | None):
        self.name = name
        self.issues = issues

    def _add(self, severity, message, **details) -> None:
        if self.issues is not None:
            pos = self.name.pos
            self.issues.append(Issue(severity, message, pos.line, pos.column, **details))

    def error(self, message, **details) -> None:
        self._add("error", message, **details)

    def warning(self, message, **details) -> None:
        self._add("warning", message, **details)

    def unknown(self, owner: str, field: str, known) -> None:
        self.error(
            f"unknown {owner} field {field!r}",
            expected=f"a {owner} field",
            found=repr(field),
            hint=did_you_mean(field, known) or f"known fields: {', '.join(sorted(known))}",
        )


def _literal_type(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, tuple):
        return "list"
    if isinstance(value, timedelta):
        return "duration"
    return ANY


def _mismatch_hint(right, wanted: str) -> str | None:
    if not isinstance(right, Literal):
        return None
    value = right.value
    if wanted == "number" and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return None
        return f"remove the quotes: {value}"
    if wanted == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'quote it: "{value}"'
    return None


def _arith_expectation(op: str) -> str:
    return " or ".join(f"{a} {op} {b}" for a, b in _ARITH_TYPES[op])


def _a(kind: str) -> str:
    if kind == ANY:
        return "a value"
    if kind == "tags":
        return "a tag set"
    return ("an " if kind[0] in "aeiou" else "a ") + kind
