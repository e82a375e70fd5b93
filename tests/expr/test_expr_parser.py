"""Parsing expressions: tree shapes, absolute positions, error reports, and fuzzing."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.errors import ExpressionError
from rulecrm.expr.ast import (
    Arith,
    BoolOp,
    Call,
    Compare,
    Contains,
    Literal,
    Matches,
    Membership,
    Name,
    Neg,
    Not,
    Pos,
)
from rulecrm.expr.parser import parse_expression


def strip(node):
    """The tree without positions, as nested tuples, for shape comparisons."""
    if isinstance(node, Literal):
        return ("lit", node.value)
    if isinstance(node, Name):
        return ("name", node.root, node.path)
    if isinstance(node, Compare):
        return (node.op, strip(node.left), strip(node.right))
    if isinstance(node, Membership):
        return (node.op, strip(node.item), strip(node.container))
    if isinstance(node, Contains):
        return ("contains", strip(node.container), strip(node.item))
    if isinstance(node, Matches):
        return ("matches", strip(node.subject), node.pattern)
    if isinstance(node, BoolOp):
        return (node.op, *map(strip, node.operands))
    if isinstance(node, Not):
        return ("not", strip(node.operand))
    if isinstance(node, Arith):
        return (node.op, strip(node.left), strip(node.right))
    if isinstance(node, Neg):
        return ("neg", strip(node.operand))
    if isinstance(node, Call):
        return ("call", node.name, *map(strip, node.args))
    raise AssertionError(node)


def shape(text):
    return strip(parse_expression(text))


def error(text, **origin) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, **origin)
    return info.value


# -- literals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("42", 42),
        ("3.5", 3.5),
        ("1e3", 1000.0),
        ('"tea"', "tea"),
        ("'tea'", "tea"),
        (r'"a\"b"', 'a"b'),
        (r"'a\'b'", "a'b"),
        (r'"a\\b"', "a\\b"),
        (r'"a\nb\tc"', "a\nb\tc"),
        (r'"\d+"', "\\d+"),
        ('"近期"', "近期"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("45s", timedelta(seconds=45)),
        ("15m", timedelta(minutes=15)),
        ("250ms", timedelta(milliseconds=250)),
        ("2h", timedelta(hours=2)),
        ("30d", timedelta(days=30)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1.5h", timedelta(minutes=90)),
        ("-3", -3),
        ("-3d", timedelta(days=-3)),
        ("[1, 2, \"a\"]", (1, 2, "a")),
        ("[]", ()),
        ("[-1, 2h, true, null]", (-1, timedelta(hours=2), True, None)),
    ],
)
def test_literals(text, value):
    node = parse_expression(text)
    assert isinstance(node, Literal)
    assert node.value == value
    assert type(node.value) is type(value)


# -- names and calls ----------------------------------------------------------------------------


def test_names():
    assert shape("event.rating") == ("name", "event", ("rating",))
    assert shape('customer.sku["tea-xqg"].order_count') == ("name", "customer", ("sku", "tea-xqg", "order_count"))
    assert shape("customer.last_order.sku") == ("name", "customer", ("last_order", "sku"))
    assert shape("cycle") == ("name", "cycle", ())
    assert shape("event.from") == ("name", "event", ("from",))
    assert shape("event.in") == ("name", "event", ("in",))
    assert shape("event.评分") == ("name", "event", ("评分",))


def test_calls():
    assert shape("days_since(customer.last_order_at)") == (
        "call",
        "days_since",
        ("name", "customer", ("last_order_at",)),
    )
    assert shape("now()") == ("call", "now")
    assert shape("f(1, g(2), event.a + 1)") == (
        "call",
        "f",
        ("lit", 1),
        ("call", "g", ("lit", 2)),
        ("+", ("name", "event", ("a",)), ("lit", 1)),
    )


# -- precedence ---------------------------------------------------------------------------------


def test_precedence():
    assert shape("event.a or event.b and not event.c") == (
        "or",
        ("name", "event", ("a",)),
        ("and", ("name", "event", ("b",)), ("not", ("name", "event", ("c",)))),
    )
    assert shape("1 + 2 * 3 == 7") == ("==", ("+", ("lit", 1), ("*", ("lit", 2), ("lit", 3))), ("lit", 7))
    assert shape("(1 + 2) * 3") == ("*", ("+", ("lit", 1), ("lit", 2)), ("lit", 3))
    assert shape("1 - 2 - 3") == ("-", ("-", ("lit", 1), ("lit", 2)), ("lit", 3))
    assert shape("-event.a * 2") == ("*", ("neg", ("name", "event", ("a",))), ("lit", 2))
    assert shape("not event.a == 1") == ("not", ("==", ("name", "event", ("a",)), ("lit", 1)))
    assert shape("event.a and event.b and event.c") == (
        "and",
        ("name", "event", ("a",)),
        ("name", "event", ("b",)),
        ("name", "event", ("c",)),
    )


def test_membership_contains_matches():
    assert shape('event.sku in ["a", "b"]') == ("in", ("name", "event", ("sku",)), ("lit", ("a", "b")))
    assert shape('event.sku not in ["a"]') == ("not in", ("name", "event", ("sku",)), ("lit", ("a",)))
    assert shape('customer.tags contains "vip"') == ("contains", ("name", "customer", ("tags",)), ("lit", "vip"))
    assert shape('event.text matches "近期|最近"') == ("matches", ("name", "event", ("text",)), "近期|最近")
    assert shape('event.text matches "\\d+"') == ("matches", ("name", "event", ("text",)), "\\d+")


# -- positions ----------------------------------------------------------------------------------


def test_positions_are_absolute():
    node = parse_expression("event.rating <= 2", line=10, column=11)
    assert node.pos == Pos(10, 24)
    assert node.left.pos == Pos(10, 11)
    assert node.right.pos == Pos(10, 27)


def test_positions_after_newline():
    node = parse_expression("event.a == 1 and\n  event.b == 2", line=5, column=9)
    assert node.operands[0].left.pos == Pos(5, 9)
    assert node.operands[1].left.pos == Pos(6, 3)
    assert node.operands[1].right.pos == Pos(6, 14)


def test_error_positions_after_newline():
    err = error("event.a == 1 and\n  evnt.b == 2", line=5, column=9)
    assert (err.line, err.column) == (6, 3)
    assert err.hint == "did you mean 'event'?"


# -- errors -------------------------------------------------------------------------------------


def test_misspelled_root():
    err = error("evnt.rating <= 2", line=3, column=7)
    assert (err.line, err.column) == (3, 7)
    assert err.found == "'evnt'"
    assert err.expected
    assert err.hint == "did you mean 'event'?"


@pytest.mark.parametrize(
    "text, hint",
    [
        ("custmer.order_count > 1", "did you mean 'customer'?"),
        ("event.a == True", "did you mean 'true'?"),
        ("event.a == ture", "did you mean 'true'?"),
        ("event.a == 1 adn event.b == 2", "did you mean 'and'?"),
        ("event.a = 1", "use '==' to compare"),
        ("event.a == 1 && event.b", "use 'and'"),
        ("event.a ＝＝ 1", "use the ASCII character '='"),
    ],
)
def test_hints(text, hint):
    assert error(text).hint == hint


@pytest.mark.parametrize(
    "text, column, fragment",
    [
        ("", 1, "expected an expression"),
        ("event.a ==", 11, "expected an expression"),
        ("1 < 2 < 3", 7, "cannot be chained"),
        ("event.a == 1 == 2", 14, "cannot be chained"),
        ("rating > 3", 1, "unknown name 'rating'"),
        ("event", 6, "expected '.' and a field"),
        ("cycle.days", 6, "has no fields"),
        ("event.a matches event.b", 17, "quoted regular expression"),
        ('event.a matches "("', 18, "invalid regular expression"),
        ('"abc', 1, "unterminated string"),
        ("3days", 1, "invalid number or duration"),
        ("1d12", 1, "invalid number or duration"),
        ("(1 + 2", 7, "expected ')'"),
        ("[event.a]", 2, "lists hold literals only"),
        ("[1 2]", 4, "expected ','"),
        ('event.a not "x"', 13, "expected 'in' after 'not'"),
        ("event[1]", 7, "quoted key"),
        ("event.a @ 1", 9, "expected an operator"),
        ("f(1,", 5, "expected an expression"),
    ],
)
def test_errors(text, column, fragment):
    err = error(text, line=2, column=1)
    assert fragment in err.message
    assert (err.line, err.column) == (2, column)
    assert err.found is not None


def test_invalid_pattern_points_into_the_pattern():
    err = error('event.text matches "ab(c"')
    assert err.column == 20 + 1 + 2
    assert "RE2 syntax" in err.expected


def test_deep_nesting_is_an_expression_error():
    with pytest.raises(ExpressionError):
        parse_expression("(" * 500 + "1" + ")" * 500)
    with pytest.raises(ExpressionError):
        parse_expression("not " * 500 + "true")
    with pytest.raises(ExpressionError):
        parse_expression("-" * 500 + "1")
    with pytest.raises(ExpressionError):
        parse_expression(" + ".join(["1"] * 500))


def test_huge_numbers_are_expression_errors():
    with pytest.raises(ExpressionError):
        parse_expression("9" * 5000)
    with pytest.raises(ExpressionError):
        parse_expression("1e999")
    with pytest.raises(ExpressionError):
        parse_expression("99999999999999w")


# -- property tests -----------------------------------------------------------------------------

_ALPHABET = st.sampled_from(
    list("abcdeilnorstuvxy_.[](),'\"\\ \n+-*/<>=!0123456789hdmsw:{}&|#") + ["event", "customer", "in", "not", "近"]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_fuzz_only_expression_errors(text):
    try:
        parse_expression(text, line=3, column=4)
    except ExpressionError as exc:
        assert exc.line >= 3
        assert exc.column >= 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_arbitrary_text(text):
    try:
        parse_expression(text)
    except ExpressionError:
        pass


_FIELD = st.sampled_from(["rating", "text", "sku", "amount", "at", "from"])
_NAME = st.one_of(
    st.builds(lambda f: Name("event", (f,), Pos(1, 1)), _FIELD),
    st.builds(lambda f: Name("customer", (f,), Pos(1, 1)), _FIELD),
    st.builds(lambda k: Name("customer", ("sku", k, "order_count"), Pos(1, 1)), st.text(max_size=5)),
    st.just(Name("cycle", (), Pos(1, 1))),
)
_SCALAR = st.one_of(
    st.integers(0, 10**6),
    st.floats(0, 1e6, allow_nan=False),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.builds(timedelta, hours=st.integers(0, 1000)),
)
_LITERAL = st.one_of(
    st.builds(lambda v: Literal(v, Pos(1, 1)), _SCALAR),
    st.builds(lambda v: Literal(tuple(v), Pos(1, 1)), st.lists(_SCALAR, max_size=3)),
)


def _trees():
    leaves = st.one_of(_NAME, _LITERAL)

    def extend(inner):
        p = Pos(1, 1)
        return st.one_of(
            st.builds(lambda op, a, b: Compare(op, a, b, p), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
                      inner, inner),
            st.builds(lambda op, a, b: Membership(op, a, b, p), st.sampled_from(["in", "not in"]), inner, inner),
            st.builds(lambda a, b: Contains(a, b, p), inner, inner),
            st.builds(lambda a, pat: Matches(a, pat, p), inner, st.sampled_from(["^a", "近期|最近", "\\d+", "x'y\"z"])),
            st.builds(lambda op, xs: BoolOp(op, tuple(xs), p), st.sampled_from(["and", "or"]),
                      st.lists(inner, min_size=2, max_size=3)),
            st.builds(lambda a: Not(a, p), inner),
            st.builds(lambda op, a, b: Arith(op, a, b, p), st.sampled_from(["+", "-", "*", "/"]), inner, inner),
            st.builds(lambda a: Neg(a, p), inner),
            st.builds(lambda n, xs: Call(n, tuple(xs), p), st.sampled_from(["f", "days_since"]),
                      st.lists(inner, max_size=2)),
        )

    return st.recursive(leaves, extend, max_leaves=12)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _literal_text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_literal_text, value)) + "]"
    return repr(value)


def unparse(node) -> str:
    """Fully parenthesised source text of a tree (test helper)."""
    if isinstance(node, Literal):
        return _literal_text(node.value)
    if isinstance(node, Name):
        text = node.root
        for key in node.path:
            text += f".{key}" if re.fullmatch(r"[A-Za-z_]\w*", key) else f"[{_quote(key)}]"
        return text
    if isinstance(node, Compare):
        return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
    if isinstance(node, Membership):
        return f"({unparse(node.item)} {node.op} {unparse(node.container)})"
    if isinstance(node, Contains):
        return f"({unparse(node.container)} contains {unparse(node.item)})"
    if isinstance(node, Matches):
        return f"({unparse(node.subject)} matches {_quote(node.pattern)})"
    if isinstance(node, BoolOp):
        return "(" + f" {node.op} ".join(map(unparse, node.operands)) + ")"
    if isinstance(node, Not):
        return f"(not {unparse(node.operand)})"
    if isinstance(node, Arith):
        return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
    if isinstance(node, Neg):
        return f"(-{unparse(node.operand)})"
    if isinstance(node, Call):
        return f"{node.name}(" + ", ".join(map(unparse, node.args)) + ")"
    raise AssertionError(node)


def _normalise(shape_):
    """Negated numeric literals are folded by the parser; fold them in the expected shape too."""
    if isinstance(shape_, tuple) and shape_ and shape_[0] == "neg":
        inner = _normalise(shape_[1])
        if inner[0] == "lit" and isinstance(inner[1], (int, float, timedelta)) and not isinstance(inner[1], bool):
            return ("lit", -inner[1])
        return ("neg", inner)
    if isinstance(shape_, tuple) and shape_ and shape_[0] == "lit":
        return shape_
    if isinstance(shape_, tuple):
        return tuple(_normalise(x) for x in shape_)
    return shape_


@settings(max_examples=400, deadline=None)
@given(_trees())
def test_round_trip(tree):
    text = unparse(tree)
    assert strip(parse_expression(text)) == _normalise(strip(tree))
