"""Differential property test: the durable and python backends match the same rules on every input."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulecrm.backends import available_backends, get_backend
from rulecrm.expr.ast import Arith, BoolOp, Compare, Contains, Literal, Matches, Membership, Name, Not, Pos
from rulecrm.expr.context import EvalContext
from rulecrm.rulefile.model import Rule, Source

pytestmark = pytest.mark.skipif("durable" not in available_backends(), reason="durable-rules not importable")

P = Pos(1, 1)
NAMES = [
    ("event", ("a",)),
    ("event", ("b",)),
    ("event", ("x", "y")),
    ("customer", ("c",)),
    ("customer", ("tier level",)),  # a path part that cannot be a readable message key
    ("cycle", ()),
]
UTC = timezone.utc
# Patterns Python's re takes exponential time on (against EVIL_TEXT): both backends run them on RE2.
PATTERNS = ["a", "^b", "\\d", "中|文", "(a+)+$", "(x+x+)+y", "^(a|aa)*$", "(?i)A+!"]
EVIL_TEXT = "a" * 40 + "!"
TRIGGERS = ("order.placed", None)

# Values and literals share a pool so that generated comparisons often hit.
pool_numbers = st.sampled_from([0, 1, 2, -1, 0.0, -0.0, 1.0, 1.5, 2.5, 0.1, 0.30000000000000004, 0.3, 100, 99])
pool_strings = st.sampled_from(["", "a", "b", "ab", "a b", "a!", "A", "é", "中文", "$x", "true", "1", "a\"b", "a\\b",
                                EVIL_TEXT])
pool_durations = st.sampled_from([timedelta(0), timedelta(hours=2), timedelta(days=30), timedelta(seconds=-1)])
pool = st.one_of(pool_numbers, pool_strings, st.booleans(), pool_durations)

odd_values = st.one_of(
    st.integers(),
    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2**64, 2**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e16, 1e20, 1e-7, 5e-324, float("nan"), float("inf"), -float("inf")]),
    st.text(max_size=6),
    st.sampled_from(["\ud800", "x" * 5000, " ", "\n", "\x00", "😀", "ｱ"]),
    st.timedeltas(),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(),  # naive: a family of its own in the compiler
    st.lists(pool, max_size=2),
    st.dictionaries(st.sampled_from(["y", "z"]), pool, max_size=2),
    st.none(),
)
values = st.one_of(pool, pool, pool, odd_values)

literal_values = st.one_of(
    pool,
    pool,
    pool,
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e20, 1e-7, 2**53 + 1, " b", "a\n", None]),
)


def names():
    return st.sampled_from(NAMES).map(lambda n: Name(n[0], n[1], P))


def literals():
    return literal_values.map(lambda v: Literal(v, P))


def list_literals():
    return st.lists(st.one_of(pool, literal_values), max_size=5).map(lambda vs: Literal(tuple(vs), P))


ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])

translatable = st.one_of(
    st.builds(lambda n, op, v: Compare(op, n, v, P), names(), ops, literals()),
    st.builds(lambda n, op, v: Compare(op, v, n, P), names(), ops, literals()),
    st.builds(lambda n, neg, v: Membership("not in" if neg else "in", n, v, P),
              names(), st.booleans(), list_literals()),
    st.builds(lambda n, v: Contains(v, n, P), names(), list_literals()),
    names(),
    st.sampled_from([True, False, None, 1, "x"]).map(lambda v: Literal(v, P)),
    st.builds(lambda a, op, b: Compare(op, a, b, P), literals(), ops, literals()),
)
leaves = st.one_of(
    translatable,
    translatable,
    translatable,
    st.builds(lambda n, v: Membership("in", n, Literal(v, P), P), names(), st.sampled_from(["abc", 5, None])),
    st.builds(lambda n, pat: Matches(n, pat, P), names(), st.sampled_from(PATTERNS)),
    st.builds(lambda a, op, b: Compare(op, a, b, P), names(), ops, names()),
    st.builds(lambda n, op, v: Compare(op, Arith("+", n, Literal(1, P), P), v, P), names(), ops, literals()),
)


def _tree(children):
    return st.one_of(
        st.builds(lambda op, xs: BoolOp(op, tuple(xs), P), st.sampled_from(["and", "or"]),
                  st.lists(children, min_size=2, max_size=3)),
        children.map(lambda x: Not(x, P)),
    )


conditions = st.recursive(leaves, _tree, max_leaves=8)
durable_conditions = st.recursive(translatable, _tree, max_leaves=6)  # nothing left to Python


def _set(mapping, path, value):
    for key in path[:-1]:
        mapping = mapping.setdefault(key, {})
        if not isinstance(mapping, dict):
            return
    mapping[path[-1]] = value


@st.composite
def contexts(draw):
    event, customer, cycle = {}, {"id": draw(st.sampled_from(["c-1", "c-2", "客户", ""]))}, None
    for root, path in NAMES:
        if not draw(st.booleans()):
            continue
        value = draw(values)
        if root == "cycle":
            cycle = value
        else:
            _set(event if root == "event" else customer, path, value)
    return EvalContext(event=event, customer=customer, cycle=cycle)


@st.composite
def rule_sets(draw, conditions=conditions):
    conds = draw(st.lists(st.one_of(conditions, conditions, conditions, st.none()), min_size=1, max_size=6))
    return [
        Rule(
            id=f"r{i}",
            index=i,
            source=Source("rules.yaml", i + 1, 1),
            on=draw(st.sampled_from(TRIGGERS)),
            when=cond,
            enabled=draw(st.sampled_from([True, True, True, False])),
        )
        for i, cond in enumerate(conds)
    ]


def assert_agree(rules, ctxs):
    python = get_backend("python")(rules)
    durable = get_backend("durable")(rules)
    try:
        for ctx in ctxs:
            for trigger in TRIGGERS:
                expected = [r.id for r in python.match(trigger, ctx)]
                got = [r.id for r in durable.match(trigger, ctx)]
                assert got == expected, (trigger, ctx)
    finally:
        durable.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rule_sets(), st.lists(contexts(), min_size=1, max_size=4))
def test_backends_agree_on_generated_rules_and_contexts(rules, ctxs):
    assert_agree(rules, ctxs)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rule_sets(conditions=durable_conditions), st.lists(contexts(), min_size=1, max_size=4))
def test_backends_agree_on_conditions_durable_decides_alone(rules, ctxs):
    assert_agree(rules, ctxs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(names(), ops, st.one_of(pool, literal_values)), min_size=1, max_size=40),
       st.lists(contexts(), min_size=1, max_size=4))
def test_backends_agree_on_many_flat_comparisons(triples, ctxs):
    # Many small rules on few fields: exercises pattern sharing, deduplication and shard limits.
    rules = [
        Rule(id=f"r{i}", index=i, source=Source("rules.yaml", i + 1, 1), on="order.placed",
             when=Compare(op, n, Literal(v, P), P))
        for i, (n, op, v) in enumerate(triples)
    ]
    assert_agree(rules, ctxs)


def _neighbours(value) -> list:
    """The value and values just around it: the edges where a comparison with it changes its answer."""
    if isinstance(value, bool) or value is None:
        return [value]
    if isinstance(value, (int, float)):
        return [value, value - 1, value + 1, value - 0.5, value + 0.5, float(value)]
    if isinstance(value, str):
        return [value, value + "a", value[:-1], value + " "]
    if isinstance(value, timedelta):
        return [value, value - timedelta(seconds=1), value + timedelta(seconds=1)]
    return [value]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(names(), ops, st.one_of(pool, literal_values)), min_size=1, max_size=12), st.data())
def test_backends_agree_along_a_long_stream_of_contexts(triples, data):
    # One durable backend answers many contexts, most of them from the fact classes it remembers; the
    # values sit on and around the rules' constants, where a class ends, and each must still be
    # decided as python decides it.
    rules = [
        Rule(id=f"r{i}", index=i, source=Source("rules.yaml", i + 1, 1), on="order.placed",
             when=Compare(op, n, Literal(v, P), P))
        for i, (n, op, v) in enumerate(triples)
    ]
    near = st.sampled_from([near for _n, _op, v in triples for near in _neighbours(v)])
    ctxs = []
    for _ in range(data.draw(st.integers(10, 30))):
        event, customer, cycle = {}, {"id": "c-1"}, None
        for root, path in NAMES:
            if data.draw(st.integers(0, 3)) == 0:
                continue  # absent
            value = data.draw(st.one_of(near, near, near, values))
            if root == "cycle":
                cycle = value
            else:
                _set(event if root == "event" else customer, path, value)
        ctxs.append(EvalContext(event=event, customer=customer, cycle=cycle))
    assert_agree(rules, ctxs)


@pytest.mark.parametrize(
    "value",
    [2**53 + 1, 2**64, float("nan"), float("inf"), 1e16, 1e-7, -0.0, "\ud800", "x" * 5000, "a b", True,
     datetime(2026, 1, 1)],
)
def test_backends_agree_on_values_durable_cannot_see_exactly(value):
    conds = [
        Compare("==", Name("event", ("a",), P), Literal(1, P), P),
        Compare("!=", Name("event", ("a",), P), Literal(1, P), P),
        Not(Compare("<", Name("event", ("a",), P), Literal(2, P), P), P),
        Compare(">", Name("event", ("a",), P), Literal("a", P), P),
        Membership("not in", Name("event", ("a",), P), Literal((1, "a"), P), P),
        Not(Membership("not in", Name("event", ("a",), P), Literal((1, "a"), P), P), P),
    ]
    rules = [Rule(id=f"r{i}", index=i, source=Source("r.yaml", 1, 1), on="order.placed", when=c)
             for i, c in enumerate(conds)]
    assert_agree(rules, [EvalContext(event={"a": value}, customer={"id": "c"})])
