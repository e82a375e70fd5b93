"""The python matching backend: grouping by trigger, rule order, enabled flags, functions."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rulecrm.backends import available_backends, default_backend_name, get_backend
from rulecrm.backends.base import conjunction, conjuncts
from rulecrm.backends.python import PythonBackend
from rulecrm.errors import RulecrmError
from rulecrm.expr.context import EvalContext
from rulecrm.expr.parser import parse_expression
from rulecrm.rulefile.model import Rule, Source


def rule(index, when=None, on="order.placed", enabled=True):
    return Rule(
        id=f"r{index}",
        index=index,
        source=Source("rules.yaml", index + 1, 1),
        on=on,
        when=parse_expression(when) if when else None,
        enabled=enabled,
    )


def ctx(event=None, customer=None, functions=None):
    return EvalContext(event=event or {}, customer=customer or {"id": "c-1"}, functions=functions or {})


def ids(rules):
    return [r.id for r in rules]


def test_matches_rules_of_the_trigger_in_index_order():
    rules = [rule(3, "event.amount > 10"), rule(1, "event.amount > 100"), rule(2, on="review.created"), rule(0)]
    backend = PythonBackend(rules)
    assert ids(backend.match("order.placed", ctx({"amount": 128.0}))) == ["r0", "r1", "r3"]
    assert ids(backend.match("order.placed", ctx({"amount": 50}))) == ["r0", "r3"]
    assert ids(backend.match("review.created", ctx())) == ["r2"]
    assert backend.match("unknown.type", ctx()) == []


def test_profile_rules_have_trigger_none():
    backend = PythonBackend([rule(0, "customer.order_count >= 2", on=None), rule(1, on="order.placed")])
    assert ids(backend.match(None, ctx(customer={"id": "c", "order_count": 2}))) == ["r0"]
    assert backend.match(None, ctx(customer={"id": "c", "order_count": 1})) == []


def test_disabled_rules_never_match():
    backend = PythonBackend([rule(0, enabled=False), rule(1)])
    assert ids(backend.match("order.placed", ctx())) == ["r1"]


def test_missing_values_and_type_mismatches_are_false():
    backend = PythonBackend([rule(0, "event.rating <= 2"), rule(1, "not (event.rating <= 2)")])
    assert ids(backend.match("order.placed", ctx({}))) == ["r1"]
    assert ids(backend.match("order.placed", ctx({"rating": "1"}))) == ["r1"]
    assert ids(backend.match("order.placed", ctx({"rating": 1}))) == ["r0"]


def test_functions_are_bound_at_construction():
    backend = PythonBackend([rule(0, "double(event.n) == 4")], functions={"double": lambda x: 2 * x})
    assert ids(backend.match("order.placed", ctx({"n": 2}))) == ["r0"]


def test_conjuncts_flatten_nested_and_only():
    node = parse_expression("event.a == 1 and (event.b == 2 and event.c == 3) and (event.d == 4 or event.e == 5)")
    parts = conjuncts(node)
    assert len(parts) == 4
    assert conjuncts(None) == [] and conjunction([]) is None and conjunction(parts[:1]) is parts[0]
    assert conjuncts(conjunction(parts)) == parts


def test_registry():
    assert get_backend("python") is PythonBackend
    assert "python" in available_backends()
    # durable wherever it imports: its B1 time is within 1.5x python's (SPEC §10, bench/README.md)
    assert default_backend_name() == ("durable" if "durable" in available_backends() else "python")
    with pytest.raises(RulecrmError, match="unknown matching backend"):
        get_backend("drools")


def test_durable_unavailable_is_a_clear_error(monkeypatch):
    import rulecrm.backends as backends

    monkeypatch.setattr(backends, "_import_durable", lambda: None)
    assert backends.default_backend_name() == "python"
    assert backends.available_backends() == ("python",)
    with pytest.raises(RulecrmError, match="--backend python"):
        backends.get_backend("durable")


def test_the_python_backend_does_not_import_durable_rules():
    code = (
        "import sys, rulecrm.backends as b;"
        "b.get_backend('python');"
        "assert not any(m.startswith(('durable', 'durable_rules_engine')) for m in sys.modules), sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hot_path_is_fast():
    import time

    rules = [rule(i, f"event.amount > {i} and event.sku in ['a', 'b']") for i in range(20)]
    backend = PythonBackend(rules)
    context = ctx({"amount": 10, "sku": "a"})
    started = time.perf_counter()
    for _ in range(2000):
        backend.match("order.placed", context)
    per_call = (time.perf_counter() - started) / 2000
    assert per_call < 1e-3  # tens of thousands of calls per second for a realistic rule count
