"""The durable backend and its guards: every shape it emits stays inside durable-rules' measured limits."""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from rulecrm.backends import available_backends, get_backend
from rulecrm.errors import RulecrmError
from rulecrm.expr.context import EvalContext
from rulecrm.expr.parser import parse_expression
from rulecrm.rulefile.model import Rule, Source

pytestmark = pytest.mark.skipif("durable" not in available_backends(), reason="durable-rules not importable")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def backends():
    made = []

    def make(rules, **options):
        durable = get_backend("durable")(rules, **options)
        made.append(durable)
        return durable, get_backend("python")(rules)

    yield make
    for durable in made:
        durable.close()


def rule(index, when=None, on="order.placed"):
    return Rule(
        id=f"r{index}",
        index=index,
        source=Source("rules.yaml", index + 1, 1),
        on=on,
        when=parse_expression(when) if isinstance(when, str) else when,
    )


def ctx(event=None, customer_id="c-1", **customer):
    return EvalContext(event=event or {}, customer={"id": customer_id, **customer})


def ids(rules):
    return [r.id for r in rules]


def assert_same(durable, python, contexts, trigger="order.placed"):
    for context in contexts:
        assert ids(durable.match(trigger, context)) == ids(python.match(trigger, context)), context


def patterns(durable):
    for ruleset in durable.definitions.values():
        for name, body in ruleset.items():
            (pattern,) = body["all"]
            yield name, pattern["m"]


def test_matches_like_python(backends):
    durable, python = backends(
        [
            rule(0, "event.rating <= 2"),
            rule(1, "event.category == 'tea' and event.amount >= 100"),
            rule(2, "event.text matches '近期|最近'"),
            rule(3),
            rule(4, "customer.order_count >= 2", on=None),
        ]
    )
    contexts = [
        ctx({"rating": 1, "category": "tea", "amount": 128.0, "text": "近期要买"}),
        ctx({"rating": 3, "category": "tea", "amount": 99}),
        ctx({"rating": "1", "category": "coffee"}),
        ctx(),
    ]
    assert ids(durable.match("order.placed", contexts[0])) == ["r0", "r1", "r2", "r3"]
    assert_same(durable, python, contexts)
    assert ids(durable.match(None, ctx(order_count=3))) == ["r4"]
    assert durable.match(None, ctx(order_count=1)) == []
    assert durable.match("never.seen", ctx()) == []


def test_every_pattern_has_the_discriminator_and_no_nested_or(backends):
    # A pattern without an equality on a type field matches the session state and re-fires forever;
    # `$or` nested in `$and` skips the tests after it (wrong answers): DNF instead.
    durable, python = backends(
        [
            rule(0, "(event.a == 1 or event.b == 2) and event.c > 3"),
            rule(1, "not (event.a == 1 or event.b < 2)"),
            rule(2, "event.a not in [1, 2, 'x']"),
        ]
    )
    seen = set()
    for name, pattern in patterns(durable):
        text = json.dumps(pattern)
        assert "$or" not in text
        tests = pattern["$and"] if "$and" in pattern else [pattern]
        assert tests[0] == {"t": "rulecrm"}
        assert len(tests) <= 32
        seen.add(name)
    assert "close" in seen and len(seen) > 4  # one durable rule per disjunct
    values = [{}, {"a": 1}, {"b": 2, "c": 4}, {"a": 1, "c": 4}, {"b": 1}, {"a": "x"}, {"a": True}, {"a": 2.0}]
    assert_same(durable, python, [ctx(v) for v in values])


def test_type_encoding_keeps_durable_comparisons_exact(backends):
    # durable compares "99" < 100 lexicographically and treats true as 1.
    durable, python = backends(
        [
            rule(0, "event.v < 100"),
            rule(1, "event.v == 1"),
            rule(2, "event.v == true"),
            rule(3, "event.v != 1"),
            rule(4, "event.v > 'a'"),
            rule(5, "event.v == 2h"),
        ]
    )
    values = ["99", "abc", True, False, 1, 1.0, -0.0, 0.1 + 0.2, 7200, "2h", None, [1], {"x": 1}]
    assert ids(durable.match("order.placed", ctx({"v": "99"}))) == []
    assert ids(durable.match("order.placed", ctx({"v": "abc"}))) == ["r4"]
    assert ids(durable.match("order.placed", ctx({"v": True}))) == ["r2"]
    assert_same(durable, python, [ctx({"v": v}) for v in values])


def test_values_durable_cannot_compare_exactly_are_decided_in_python(backends):
    durable, python = backends([rule(0, "event.v > 1"), rule(1, "not (event.v < 1)"), rule(2, "event.v != 0")])
    odd = [2**53 + 1, -(2**64), float("nan"), float("inf"), 1e16, 5e-324, 1e-7]
    assert_same(durable, python, [ctx({"v": v}) for v in odd])
    assert ids(durable.match("order.placed", ctx({"v": 2**64}))) == ["r0", "r1", "r2"]
    assert ids(durable.match("order.placed", ctx({"v": float("nan")}))) == ["r1", "r2"]  # not (nan < 1)


def test_strings_are_ordered_only_when_durable_orders_them_like_python(backends):
    durable, python = backends([rule(0, "event.s < 'b'"), rule(1, "event.s >= 'a!'"), rule(2, "event.s == 'a b'")])
    texts = ["", "a", "a b", "a!", "a\"", "a\\", "a\n", "b", "中文", "😀", "\ud800", "x" * 5000, "$lt"]
    assert_same(durable, python, [ctx({"s": t}) for t in texts])


def test_odd_names_get_hash_distinct_keys(backends):
    durable, python = backends(
        [rule(0, name_equals(("tier level", "x.y"), 1)), rule(1, name_equals(("$s",), 2)), rule(2, "event.id == 3")]
    )
    (ruleset,) = durable.definitions.values()
    keys = set(re.findall(r'"([nsbdt]_[^"]*)"', json.dumps(ruleset)))
    assert all(re.fullmatch(r"[nsbdt]__?[A-Za-z0-9_]+", k) for k in keys), keys
    contexts = [ctx({"tier level": {"x.y": 1}, "$s": 2, "id": 3}), ctx({"tier level": {"x": {"y": 1}}})]
    assert_same(durable, python, contexts)
    assert ids(durable.match("order.placed", contexts[0])) == ["r0", "r1", "r2"]


def name_equals(path, value):
    from rulecrm.expr.ast import Compare, Literal, Name, Pos

    return Compare("==", Name("event", path, Pos(1, 1)), Literal(value, Pos(1, 1)), Pos(1, 1))


def test_large_memberships_stay_python_residuals(backends):
    # 40 values would be 40 durable rules; above the disjunct cap the conjunct stays in Python.
    values = ", ".join(f"'s{i}'" for i in range(40))
    durable, python = backends([rule(0, f"event.sku in [{values}] and event.n > 1")])
    names = [name for name, _ in patterns(durable)]
    assert len(names) == 2  # event.n > 1, plus the catch-all
    assert_same(durable, python, [ctx({"sku": f"s{i}", "n": n}) for i in (0, 39, 40) for n in (0, 2)])


def test_identical_patterns_are_shared(backends):
    # 256 rules with an identical pattern segfault durable-rules (257+: error 108).
    durable, python = backends([rule(i, "event.rating <= 2") for i in range(300)]
                               + [rule(300 + i, "event.text matches 'x'") for i in range(300)])
    assert len(list(patterns(durable))) == 2
    assert ids(durable.match("order.placed", ctx({"rating": 1, "text": "x"}))) == [f"r{i}" for i in range(600)]
    assert_same(durable, python, [ctx({"rating": 3, "text": "x"}), ctx({"rating": 2})])


def test_wide_rulesets_are_sharded(backends):
    # 64 alpha nodes pending at once overflow handleAlpha's stack (error 303); 512 children of one
    # node hang findAlpha; rulesets are kept to ~200 rules.
    rules = [rule(i, f"event.n > {i}") for i in range(150)]
    rules += [rule(150 + i, f"event.sku == 's{i}'") for i in range(600)]
    rules += [rule(750 + i, f"event.k{i} == {i}") for i in range(300)]
    durable, python = backends(rules)
    assert len(durable.definitions) > 4
    for ruleset in durable.definitions.values():
        assert len(ruleset) <= 201
    everything = {"n": 1000, "sku": "s7", **{f"k{i}": i for i in range(300)}}
    assert len(durable.match("order.placed", ctx(everything))) == 150 + 1 + 300
    assert_same(durable, python, [ctx(everything), ctx({"n": 75, "sku": "s599"}), ctx()])


def test_long_conjunctions_keep_at_most_32_expressions_per_pattern(backends):
    when = " and ".join(f"event.k{i} > 0" for i in range(45))
    durable, python = backends([rule(0, when)])
    for _, pattern in patterns(durable):
        assert len(pattern.get("$and", [pattern])) <= 32
    full = {f"k{i}": 1 for i in range(45)}
    assert_same(durable, python, [ctx(full), ctx({**full, "k44": 0}), ctx({**full, "k0": 0})])


def test_two_thousand_customers_through_one_instance(backends, monkeypatch):
    # 1,024 sessions per ruleset: the 1,025th raises MemoryError. Sessions are deleted after each call.
    # nothing remembered, so that every fact is a round trip (a fact of a class seen before is not)
    durable, python = backends([rule(0, "event.n > 5"), rule(1, "event.s matches 'a'"), rule(2, on=None)],
                               remembered_values=0)
    asserted = count_round_trips(durable, monkeypatch)
    for i in range(2000):
        context = ctx({"n": i, "s": "a" if i % 3 else "b"}, customer_id=f"c-{i}")
        assert ids(durable.match("order.placed", context)) == ids(python.match("order.placed", context))
        assert ids(durable.match(None, context)) == ["r2"]
    assert len(asserted) == 2000


def count_round_trips(durable, monkeypatch) -> list:
    asserted = []
    assert_fact = durable._host.assert_fact
    monkeypatch.setattr(durable._host, "assert_fact", lambda *args: asserted.append(args) or assert_fact(*args))
    return asserted


def test_a_fact_seen_before_makes_no_round_trip(backends, monkeypatch):
    """A fact's outcome depends on its values alone: the same values again are answered from memory."""
    durable, python = backends([rule(0, "event.n > 5"), rule(1, "event.n > 5 and customer.vip == true")])
    asserted = count_round_trips(durable, monkeypatch)
    contexts = [
        ctx({"n": 9}, customer_id="c-1"), ctx({"n": 9}, customer_id="c-2"),  # same values, other customer
        ctx({"n": 9, "other": "x"}, customer_id="c-3"),  # a field no rule reads is not part of the fact
        ctx({"n": 1}), ctx({"n": 9}, vip=True), ctx({"n": 9}, vip=True), ctx({"n": 9}, vip=1),
    ]
    assert_same(durable, python, contexts)
    # distinct facts: n=9; n=1; n=9 with vip true. The number 1 is not a value `vip == true` can see
    # (only booleans are sent under that key), so n=9 with vip=1 is the fact n=9 again.
    assert len(asserted) == 3
    assert_same(durable, python, contexts)
    assert len(asserted) == 3


def test_values_on_the_same_side_of_every_constant_are_one_fact_class(backends, monkeypatch):
    """Every test compares a value with a constant: values between the same two constants pass the
    same tests, so they make one round trip; a value equal to a constant is a class of its own."""
    durable, python = backends([rule(0, "event.n > 5"), rule(1, "event.n <= 9.5 and event.s == 'b'")])
    asserted = count_round_trips(durable, monkeypatch)
    above = [ctx({"n": n, "s": "b"}) for n in (6, 7, 9, 8.25)]  # between 5 and 9.5
    assert_same(durable, python, above)
    assert len(asserted) == 1
    edges = [ctx({"n": n, "s": "b"}) for n in (5, 5.0, 9.5, 10, 1e3, 4, -3)]  # 5 and 5.0 are one value
    assert_same(durable, python, edges)
    assert len(asserted) == 1 + 4  # 5; 9.5; above 9.5; below 5
    strings = [ctx({"n": 7, "s": s}) for s in ("a", "", "c", "zz", "b")]  # below "b", above it, "b" itself
    assert_same(durable, python, strings)
    assert len(asserted) == 5 + 2
    assert_same(durable, python, [ctx({"n": 7}), ctx({"n": 7, "s": 1}), ctx({"n": 7, "s": True})])
    assert len(asserted) == 7 + 1  # no string under the key: whatever else `s` is, the class is "absent"


def test_remembered_facts_are_bounded_and_the_oldest_goes_first(backends, monkeypatch):
    # a budget of values: facts of two values (two fields read), so two fact classes are remembered
    durable, python = backends([rule(0, "event.n > 5 and event.m < 3")], remembered_values=4)
    asserted = count_round_trips(durable, monkeypatch)
    # n below 5, above it, below again, equal to it: the class of 5 makes the first the oldest, and it goes
    contexts = [ctx({"n": n, "m": 1}) for n in (1, 7, 1, 5)]
    assert_same(durable, python, contexts)
    assert len(asserted) == 3
    assert_same(durable, python, [ctx({"n": 7, "m": 1}), ctx({"n": 1, "m": 1})])
    assert len(asserted) == 4
    assert [len(rs.fired_for) for group in durable._rulesets.values() for rs in group] == [2]


def test_without_remembered_facts_every_fact_is_a_round_trip(backends, monkeypatch):
    durable, python = backends([rule(0, "event.n > 5")], remembered_values=0)
    asserted = count_round_trips(durable, monkeypatch)
    assert_same(durable, python, [ctx({"n": 9})] * 3)
    assert len(asserted) == 3


def test_a_failed_evaluation_is_not_remembered(backends, monkeypatch):
    durable, python = backends([rule(0, "event.n > 5")])
    original = durable._host.assert_fact
    calls = []

    def failing_once(name, message):
        calls.append(name)
        result = original(name, message)
        if len(calls) == 1:
            durable._errors.append(RuntimeError("raised in an action"))
        return result

    monkeypatch.setattr(durable._host, "assert_fact", failing_once)
    with pytest.raises(RuntimeError, match="raised in an action"):
        durable.match("order.placed", ctx({"n": 9}))
    assert_same(durable, python, [ctx({"n": 9})])
    assert len(calls) == 2



def test_close_releases_everything():
    # Every plain Host starts two timer threads and is never collected: 300 backends would grind.
    rules = [rule(i, f"event.n > {i} and event.s == 'x'") for i in range(20)]
    threads = threading.active_count()
    timings = []
    for _ in range(300):
        started = time.perf_counter()
        durable = get_backend("durable")(rules)
        durable.match("order.placed", ctx({"n": 10, "s": "x"}))
        durable.close()
        durable.close()  # idempotent
        timings.append(time.perf_counter() - started)
    assert threading.active_count() == threads
    assert sum(timings[-50:]) < 3 * sum(timings[:50]) + 0.5
    assert durable.definitions and not durable._host._ruleset_list
    with pytest.raises(RulecrmError, match="closed"):
        durable.match("order.placed", ctx())


def test_action_errors_never_escape_inside_durable(backends):
    durable, _ = backends([rule(0, "event.n > 1")])

    class Broken(list):
        def append(self, item):
            raise ValueError("boom")

    durable._hits = Broken()
    action = durable._action(0)
    action(None)  # swallowed by durable if raised here: collected instead
    assert isinstance(durable._errors[0], ValueError)

    original = durable._host.assert_fact

    def failing_action(name, message):
        result = original(name, message)
        durable._errors.append(RuntimeError("raised in an action"))
        return result

    durable._hits = []
    durable._host.assert_fact = failing_action
    with pytest.raises(RuntimeError, match="raised in an action"):
        durable.match("order.placed", ctx({"n": 2}))


def test_only_the_durable_module_imports_durable_rules():
    pattern = re.compile(r"^\s*(from|import)\s+durable(_rules_engine)?[\s.]", re.M)
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "rulecrm").rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8")) and path.name != "durable.py"
    ]
    assert offenders == []


def test_rules_decided_in_python_alone_make_no_round_trip(backends, monkeypatch):
    """A trigger whose rules have no condition durable can take never calls into durable-rules."""
    durable, python = backends([
        rule(0), rule(1, "event.amount * 2 > 10"), rule(2, "event.rating <= 2", on="review"),
    ])
    asserted = count_round_trips(durable, monkeypatch)
    contexts = [ctx({"amount": 9}), ctx({"amount": 1}), ctx({"sku": "coffee"})]
    assert_same(durable, python, contexts)
    assert ids(durable.match("order.placed", contexts[0])) == ["r0", "r1"]
    assert asserted == []
    assert ids(durable.match("review", ctx({"rating": 1}))) == ["r2"]
    assert len(asserted) == 1  # the rule durable can take still goes through it
