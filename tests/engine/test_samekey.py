"""`same` values: one key for replacing and for cancelling timers, agreeing with the reference model."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from reference_model import same_value

from rulecrm.engine.samekey import same_key

SCALARS = (st.none() | st.booleans() | st.integers(-3, 3) | st.integers(-3, 3).map(float)
           | st.sampled_from([0.5, -0.0, 1e16, 10**16, 2**53 + 1, float(2**53)])
           | st.sampled_from(["1", "1.0", "true", ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2), max_leaves=6)


@settings(max_examples=400, derandomize=True, database=None)
@given(VALUES, VALUES)
def test_same_key_is_the_models_equality(a, b):
    assert (same_key(a) == same_key(b)) == (same_value(a) == same_value(b))


@settings(max_examples=200, derandomize=True, database=None)
@given(VALUES)
def test_same_key_of_json_text_is_the_key_of_the_value(value):
    """What a restart reads back from the state file has the key the trigger had."""
    assert same_key(json.loads(json.dumps(value))) == same_key(value)


def test_numbers_by_value_kinds_apart():
    assert same_key(1) == same_key(1.0) == same_key(-0.0 + 1) == "1"
    assert same_key(True) == "true" != same_key(1)
    assert same_key("1") == '"1"' != same_key(1)
    assert same_key({"b": [1.0], "a": None}) == same_key({"a": None, "b": [1]}) == '{"a": null, "b": [1]}'
    assert same_key(None) is None


def test_keys_of_plain_values_are_their_json_text():
    """Timers stored before normalisation keep their keys unless a float was integral."""
    for value in ["tea", "小青柑", 7, 2.5, [1, "a"], {"k": {"x": False}}]:
        assert same_key(value) == json.dumps(value, sort_keys=True)


def test_deep_and_huge_values_do_not_raise():
    deep: list = []
    for _ in range(50_000):
        deep = [deep]
    assert same_key(deep) == "[" * 50_001 + "]" * 50_001
    assert same_key(10**5000).startswith("0x")
    assert same_key(float(10**300)) == str(int(float(10**300)))
