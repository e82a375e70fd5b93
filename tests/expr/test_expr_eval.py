"""Evaluating compiled expressions: missing values, type families, arithmetic and calls."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.errors import ExpressionError
from rulecrm.expr.compiler import compile_condition, compile_expression
from rulecrm.expr.context import MISSING, EvalContext
from rulecrm.expr.parser import parse_expression

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=timezone(timedelta(hours=8)))
T0_UTC = datetime(2026, 3, 1, 2, 15, tzinfo=timezone.utc)

EVENT = {
    "type": "review.created",
    "at": T0,
    "rating": 2,
    "score": 2.0,
    "text": "近期想买小青柑",
    "sku": "tea-xqg",
    "flag": True,
    "off": False,
    "nothing": None,
    "wait": timedelta(hours=2),
    "items": ["a", "b", 3],
    "nested": {"deep": {"value": 7}},
    "naive": datetime(2026, 3, 1, 10, 15),
}
CUSTOMER = {
    "name": "王小明",
    "order_count": 3,
    "tags": frozenset({"vip", "tea"}),
    "opted_out": False,
    "last_order_at": T0_UTC - timedelta(days=40),
    "sku": {"tea-xqg": {"order_count": 2, "last_order": {"amount": 128.0}}},
    "attributes": {"level": "gold"},
}


def ctx(**overrides) -> EvalContext:
    values = dict(event=EVENT, customer=CUSTOMER, product={"sku": "tea-xqg", "cycle": timedelta(days=30)},
                  cycle=timedelta(days=30))
    values.update(overrides)
    return EvalContext(**values)


def value(text, context=None, functions=None):
    return compile_expression(parse_expression(text), functions)(context or ctx())


def cond(text, context=None, functions=None):
    return compile_condition(parse_expression(text), functions)(context or ctx())


# -- names ----------------------------------------------------------------------------------------


def test_names_resolve():
    assert value("event.rating") == 2
    assert value("customer.name") == "王小明"
    assert value('customer.sku["tea-xqg"].order_count') == 2
    assert value('customer.sku["tea-xqg"].last_order.amount') == 128.0
    assert value("event.nested.deep.value") == 7
    assert value("product.cycle") == timedelta(days=30)
    assert value("cycle") == timedelta(days=30)


def test_missing_names():
    assert value("event.nope") is MISSING
    assert value("event.nothing") is MISSING
    assert value("event.text.length") is MISSING
    assert value('customer.sku["other"].order_count') is MISSING
    assert value("cycle", ctx(cycle=None)) is MISSING
    assert value("event.rating", ctx(event=None)) is MISSING


def test_null_literal_is_missing():
    assert value("null") is MISSING
    assert cond("event.nothing == null") is False
    assert cond("event.rating != null") is False


# -- comparisons ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("event.rating <= 2", True),
        ("event.rating < 2", False),
        ("event.rating == 2.0", True),
        ("event.score == 2", True),
        ("event.rating != 3", True),
        ("2 >= event.rating", True),
        ("event.rating == event.score", True),
        ('event.text == "近期想买小青柑"', True),
        ('event.sku < "zzz"', True),
        ("event.at == event.at", True),
        ("event.at > customer.last_order_at", True),
        ("customer.last_order_at + 40d == event.at", True),
        ("event.wait == 2h", True),
        ("event.wait > 90m", True),
        ("event.flag == true", True),
        ("event.flag != false", True),
        ("event.off == false", True),
    ],
)
def test_comparisons_within_a_family(text, expected):
    assert cond(text) is expected
    assert value(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        'event.rating == "2"',
        'event.rating != "2"',
        'event.rating <= "2"',
        "event.text > 3",
        "event.text != 3",
        "event.flag == 1",
        "event.flag != 1",
        "event.off == 0",
        "1 == true",
        "event.rating == true",
        "event.flag < true",
        "event.flag >= false",
        "event.wait == 7200",
        "event.at > 5",
        "event.at != event.wait",
        "event.naive == event.at",
        "event.naive != event.at",
        "event.naive < event.at",
        "event.items == [\"a\", \"b\", 3]",
        "customer.tags != \"vip\"",
        "event.nested == event.nested",
    ],
)
def test_comparisons_across_families_are_false(text):
    assert cond(text) is False
    assert value(text) is False


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("right", ["1", '"x"', "event.missing", "2h", "true", "null"])
def test_comparison_with_missing_is_false(op, right):
    assert cond(f"event.missing {op} {right}") is False
    assert cond(f"{right} {op} event.missing") is False


# -- membership, contains, matches ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('event.sku in ["tea-xqg", "tea-dhp"]', True),
        ('event.sku not in ["tea-xqg", "tea-dhp"]', False),
        ('event.sku not in ["x"]', True),
        ("event.rating in [1, 2]", True),
        ("event.rating in [1.0, 2.0]", True),
        ("event.score in [2]", True),
        ("event.flag in [1, 2]", False),
        ("event.flag not in [1, 2]", True),
        ("1 in [true]", False),
        ("event.rating in [true, \"2\"]", False),
        ('"vip" in customer.tags', True),
        ('"new" in customer.tags', False),
        ('"new" not in customer.tags', True),
        ('"近期" in event.text', True),
        ('"下周" not in event.text', True),
        ('"a" in event.items', True),
        ("3 in event.items", True),
        ("3.0 in event.items", True),
        ("true in event.items", False),
        ("2h in [120m]", True),
        ('customer.tags contains "vip"', True),
        ('customer.tags contains "new"', False),
        ('event.text contains "小青柑"', True),
        ('event.items contains "b"', True),
        ("event.items contains 3", True),
        ("event.items contains true", False),
        ('"abc" contains "b"', True),
        ('["a", 1] contains event.rating', False),
        ("[2] contains event.rating", True),
        ('event.text matches "近期|最近|下周"', True),
        ('event.text matches "^小"', False),
        ('event.sku matches "^tea-"', True),
        ('event.rating matches "2"', False),
        ('event.at matches "2026"', False),
        ('event.text contains 3', False),
        ("3 in event.text", False),
        ("3 not in event.text", False),
        ("event.rating in event.rating", False),
        ("event.rating not in event.rating", False),
        ("event.rating contains 2", False),
    ],
)
def test_membership(text, expected):
    assert cond(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "event.missing in [1, 2]",
        "event.missing not in [1, 2]",
        "event.rating in event.missing",
        "event.rating not in event.missing",
        "event.missing in customer.tags",
        "event.missing not in customer.tags",
        "event.missing contains 1",
        "customer.tags contains event.missing",
        "event.missing matches \"x\"",
        "null in [null]",
        "null not in [1]",
    ],
)
def test_membership_with_missing_is_false(text):
    assert cond(text) is False


# -- logic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("event.flag", True),
        ("event.off", False),
        ("event.missing", False),
        ("event.rating", False),
        ("event.text", False),
        ("customer.tags", False),
        ("not event.flag", False),
        ("not event.off", True),
        ("not event.missing", True),
        ("not event.rating", True),
        ("event.flag and event.rating == 2", True),
        ("event.flag and event.rating", False),
        ("event.rating or event.flag", True),
        ("event.rating or event.text", False),
        ("event.missing or event.rating > 1", True),
        ("not (event.missing > 1)", True),
        ("event.flag and event.flag and event.off", False),
        ("event.off or event.off or event.flag", True),
        ("true", True),
        ("false", False),
        ("1", False),
        ('"true"', False),
    ],
)
def test_truthiness(text, expected):
    assert cond(text) is expected


def test_and_or_short_circuit():
    calls = []

    def spy(x):
        calls.append(x)
        return True

    functions = {"spy": spy}
    assert cond("false and spy(1)", functions=functions) is False
    assert cond("true or spy(2)", functions=functions) is True
    assert calls == []


# -- arithmetic -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1 + 2 * 3", 7),
        ("7 / 2", 3.5),
        ("event.rating * 1.5", 3.0),
        ("-event.rating", -2),
        ("event.score - 0.5", 1.5),
        ("event.at + 2h", T0 + timedelta(hours=2)),
        ("2h + event.at", T0 + timedelta(hours=2)),
        ("event.at - 1d", T0 - timedelta(days=1)),
        ("event.at - customer.last_order_at", timedelta(days=40)),
        ("cycle - 3d", timedelta(days=27)),
        ("cycle + 12h", timedelta(days=30, hours=12)),
        ("cycle * 2", timedelta(days=60)),
        ("2 * cycle", timedelta(days=60)),
        ("cycle / 2", timedelta(days=15)),
        ("-cycle", timedelta(days=-30)),
        ("event.wait * 0.5", timedelta(hours=1)),
    ],
)
def test_arithmetic(text, expected):
    assert value(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "event.rating / 0",
        "event.rating / (event.rating - 2)",
        "cycle / 0",
        "event.missing + 1",
        "1 + event.missing",
        "cycle - event.missing",
        '"a" + "b"',
        'event.rating + "1"',
        "event.flag + 1",
        "true * 2",
        "event.at + 3",
        "event.at + event.at",
        "3 - event.at",
        "cycle / cycle",
        "cycle + 1",
        "event.at * 2",
        "2 / cycle",
        "-event.text",
        "-event.flag",
        "-event.missing",
        "event.naive + 1h - event.at",
        "event.at + 36500d * 100",
        "event.at - 36500d * 100",
        "cycle * 9007199254740991",
        "cycle * 9007199254740991 * 9007199254740991",
        "36500d * 9007199254740991 / 0.5",
        "-(cycle * 9007199254740991)",
        "event.items + 1",
    ],
)
def test_arithmetic_mismatch_is_missing(text):
    assert value(text) is MISSING


def test_arithmetic_that_overflows_never_raises():
    # Run-time values can be as large as events allow: overflow is a missing value, never an error.
    huge = ctx(event={**EVENT, "big": 1e300, "n": 10**15, "vast": 10**400, "far": timedelta(days=999_999_999)})
    for text in ("event.big * event.big", "event.big * 9007199254740991 * 9007199254740991",
                 "-(event.big * event.big)", "event.far + event.far", "event.far * event.n",
                 "event.at + event.far", "event.at - event.far", "event.far / 0.0000000000000001",
                 "-event.far - event.far", "event.vast / 2", "event.vast * 0.5", "event.vast + 0.5"):
        assert value(text, huge) is MISSING, text
    assert cond("event.big * event.big > 1", huge) is False
    assert cond("not (event.at + event.far > event.at)", huge) is True
    assert value("event.n * event.n", huge) == 10**30  # exact integers stay exact


def test_arithmetic_inside_comparisons():
    assert cond("event.at - customer.last_order_at >= cycle") is True
    assert cond("event.at - customer.last_order_at >= cycle + 11d") is False
    assert cond("event.rating / 0 == 1") is False
    assert cond("event.rating / 0 != 1") is False


# -- calls ----------------------------------------------------------------------------------------


def test_calls():
    functions = {"double": lambda x: x * 2, "boom": lambda x: 1 / 0, "none": lambda: None, "pair": lambda a, b: (a, b)}
    assert value("double(event.rating)", functions=functions) == 4
    assert value("double(event.missing)", functions=functions) is MISSING
    assert value("boom(1)", functions=functions) is MISSING
    assert value("none()", functions=functions) is MISSING
    assert value("pair(1, event.missing)", functions=functions) is MISSING
    assert value("pair(1, 2)", functions=functions) == (1, 2)
    assert value("pair(1)", functions=functions) is MISSING
    assert cond("double(event.rating) == 4", functions=functions) is True
    assert cond("boom(1) == 1", functions=functions) is False


def test_unknown_function_is_a_compile_error():
    node = parse_expression("dubble(event.rating) > 1", line=4, column=9)
    with pytest.raises(ExpressionError) as info:
        compile_expression(node, {"double": lambda x: x})
    assert (info.value.line, info.value.column) == (4, 9)
    assert info.value.hint == "did you mean 'double'?"


def test_functions_from_the_context_when_none_are_bound():
    node = parse_expression("double(2)")
    compiled = compile_expression(node)
    assert compiled(ctx(functions={"double": lambda x: x * 2})) == 4
    assert compiled(ctx()) is MISSING


def test_condition_is_exactly_true():
    assert cond("event.rating") is False
    assert compile_condition(parse_expression("event.flag"))(ctx()) is True
    assert compile_condition(parse_expression("cycle - 3d"))(ctx()) is False


def test_compiled_expression_is_reusable():
    compiled = compile_condition(parse_expression("event.rating <= 2"))
    assert compiled(ctx()) is True
    assert compiled(ctx(event={"rating": 5})) is False
    assert compiled(ctx(event={"rating": "1"})) is False
    assert compiled(ctx(event={})) is False


# -- properties -----------------------------------------------------------------------------------

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.builds(timedelta, seconds=st.integers(-(10**9), 10**9)),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.datetimes(),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.booleans()), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_OPERANDS = ["event.a", "event.b", "event.missing", "1", "2.5", '"x"', "true", "null", "2h", "[1, \"x\"]", "cycle"]
_BINARY = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "+", "-", "*", "/", "and", "or"]


@settings(max_examples=500, deadline=None)
@given(
    a=_VALUES,
    b=_VALUES,
    cycle=_VALUES,
    left=st.sampled_from(_OPERANDS),
    op=st.sampled_from(_BINARY),
    right=st.sampled_from(_OPERANDS),
)
def test_evaluation_never_raises(a, b, cycle, left, op, right):
    context = EvalContext(event={"a": a, "b": b}, cycle=cycle)
    node = parse_expression(f"{left} {op} {right}")
    compile_expression(node)(context)
    assert compile_condition(node)(context) in (True, False)
    assert compile_condition(parse_expression(f"not ({left} {op} {right})"))(context) in (True, False)


_REFERENCE_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _family(x):
    if x is None or isinstance(x, bool):
        return "bool" if x is not None else None
    if isinstance(x, (int, float)):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, timedelta):
        return "duration"
    if isinstance(x, datetime) and x.tzinfo is not None:
        return "timestamp"
    return None


def _reference_compare(op, a, b) -> bool:
    """The obviously-correct model of comparisons from the spec."""
    family = _family(a)
    if family is None or family != _family(b):
        return False
    if family == "bool" and op not in ("==", "!="):
        return False
    return _REFERENCE_OPS[op](a, b)


@settings(max_examples=500, deadline=None)
@given(a=_VALUES, b=_VALUES, op=st.sampled_from(sorted(_REFERENCE_OPS)))
def test_comparisons_match_the_reference(a, b, op):
    context = EvalContext(event={"a": a, "b": b})
    assert cond(f"event.a {op} event.b", context) is _reference_compare(op, a, b)
