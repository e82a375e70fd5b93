"""YAML with positions: nodes, duplicate keys, merges, tags and syntax errors."""
from __future__ import annotations

import pytest

from rulecrm.rulefile.yamlpos import Map, Scalar, Seq, compose, decode, describe


def only_document(text):
    parsed = compose(text, "f.yaml")
    assert len(parsed.documents) == 1
    return parsed.documents[0], list(parsed.diagnostics)


def test_scalars_keep_text_kind_and_position():
    root, problems = only_document("a: 22:00\nb: 'x'\non: yes\nsku: 001\n")
    assert problems == []
    values = {key.text: value for key, value in root.pairs}
    assert set(values) == {"a", "b", "on", "sku"}
    assert (values["a"].text, values["a"].kind, values["a"].line, values["a"].column) == ("22:00", "integer", 1, 4)
    assert (values["b"].text, values["b"].style, values["b"].column) == ("x", "'", 4)
    assert values["on"].kind == "boolean"
    assert values["sku"].text == "001"


def test_columns_count_characters_not_bytes():
    root, _ = only_document("名字: 小青柑 x\nb: [1, \"中\"]\n")
    (_, name), (_, items) = root.pairs
    assert name.column == 5
    assert [item.column for item in items.items] == [5, 8]


def test_duplicate_key_is_reported_at_the_second_and_the_first_kept():
    root, problems = only_document("a: 1\nb: 2\na: 3\n")
    assert [(d.line, d.column) for d in problems] == [(3, 1)]
    assert "duplicate key 'a'" in problems[0].message and "line 1, column 1" in problems[0].message
    assert [(key.text, value.text) for key, value in root.pairs] == [("a", "1"), ("b", "2")]


def test_merge_keys_apply_and_explicit_keys_win():
    root, problems = only_document("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n")
    assert problems == []
    item = dict((key.text, value) for key, value in root.pairs)["item"]
    assert {key.text: value.text for key, value in item.pairs} == {"y": "3", "x": "1"}


def test_syntax_error_is_one_diagnostic_at_the_problem_mark():
    parsed = compose("a: [1, 2\nb: 3\n", "f.yaml")
    assert parsed.broken
    assert len(parsed.diagnostics) == 1
    problem = parsed.diagnostics[0]
    assert problem.message.startswith("invalid YAML")
    assert problem.line >= 1 and problem.column >= 1


def test_tab_indentation_error_position():
    parsed = compose("a:\n  b: 1\n\tc: 2\n", "f.yaml")
    assert [(d.line, d.column) for d in parsed.diagnostics] == [(3, 1)]


def test_control_character_is_a_positioned_error():
    parsed = compose("a: 1\nb: x\x00y\n", "f.yaml")
    assert [(d.line, d.column) for d in parsed.diagnostics] == [(2, 5)]


def test_unknown_tags_and_aliases_are_errors_not_crashes():
    parsed = compose("a: !python/object 1\nb: *nope\nc: &r [*r]\nd: !!int abc\n", "f.yaml")
    assert [d.line for d in parsed.diagnostics] == [1, 2, 3, 4]
    assert not parsed.broken


def test_non_scalar_keys_are_errors():
    parsed = compose("? [a, b]\n: 1\n", "f.yaml")
    assert [(d.line, d.message) for d in parsed.diagnostics] == [(1, "a mapping key must be a plain name")]


@pytest.mark.parametrize("text, where", [
    ("[" * 5000 + "]" * 5000, (1, 201)),
    ("- " * 3000 + "x", (1, 401)),
    ("a:\n" + "".join("  " * n + "k:\n" for n in range(1, 400)) + "  " * 400 + "x: 1\n", (201, 401)),
])
def test_deep_nesting_is_a_positioned_error_not_a_crash(text, where):
    parsed = compose(text, "f.yaml")
    assert parsed.broken
    [problem] = parsed.diagnostics
    assert "nested deeper than 200 levels" in problem.message
    assert (problem.line, problem.column) == where


def test_nesting_up_to_the_limit_is_read():
    parsed = compose("- " * 199 + "x", "f.yaml")
    assert not parsed.diagnostics
    node, depth = parsed.documents[0], 0
    while isinstance(node, Seq):
        node, depth = node.items[0], depth + 1
    assert (depth, node.value) == (199, "x")


def test_empty_and_multiple_documents():
    assert compose("", "f.yaml").documents == ()
    parsed = compose("---\n---\na: 1\n", "f.yaml")
    assert parsed.documents[0].kind == "null"
    assert isinstance(parsed.documents[1], Map)


def test_decode_reports_the_bad_byte():
    text, problem = decode("a: 1\nb: é\n".encode("latin-1"), "f.yaml")
    assert text is None
    assert (problem.line, problem.column) == (2, 4)
    assert decode(b"\xef\xbb\xbfa: 1", "f.yaml") == ("a: 1", None)


def test_describe_names_yaml_types():
    root, _ = only_document("a: {x: 1}\nb: [1]\nc: hi\nd: 3\ne: ~\n")
    kinds = [describe(value) for _, value in root.pairs]
    assert kinds == ["a mapping", "a list", "string 'hi'", "integer 3", "null"]
    assert isinstance(root.pairs[0][0], Scalar)
