"""Static checks: unknown names, impossible comparisons, wanted types and declared skus."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.errors import ExpressionError
from rulecrm.expr.checker import Issue, Scope, check_expression, infer_type
from rulecrm.expr.parser import parse_expression

REVIEW = Scope("review.created")
ORDER = Scope("order.placed", skus=frozenset({"tea-xqg", "tea-dhp", "lens-30"}))
PROFILE = Scope(None)


def issues(text, scope=REVIEW, want="bool", **origin) -> list[Issue]:
    return check_expression(parse_expression(text, **origin), scope=scope, want=want)


def only(text, scope=REVIEW, want="bool") -> Issue:
    found = issues(text, scope, want)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    "text, scope",
    [
        ("event.rating <= 2", REVIEW),
        ('event.text matches "差|烂"', REVIEW),
        ("customer.order_count >= 2", PROFILE),
        ('customer.sku["tea-xqg"].order_count >= 2', ORDER),
        ('customer.category["tea"].last_order_at < event.at - 30d', ORDER),
        ("customer.last_order.amount > 100", PROFILE),
        ('customer.attributes.level == "gold"', PROFILE),
        ("customer.attributes.vip", PROFILE),
        ('customer.tags contains "vip"', PROFILE),
        ('"vip" not in customer.tags', PROFILE),
        ('event.sku in ["tea-xqg", "tea-dhp"]', ORDER),
        ('event.sku == "tea-xqg" and product.cycle > 7d', ORDER),
        ('event.category == "tea"', ORDER),
        ("event.at - customer.last_order_at > cycle", ORDER),
        ('event.type == "order.placed"', ORDER),
        ("customer.opted_out == false and not customer.is_contact", PROFILE),
        ("event.whatever == 1", Scope("my.custom")),
        ("event.amount * 2 > customer.total_spent / 3", ORDER),
        ("-event.amount < 0", ORDER),
        ("true", PROFILE),
    ],
)
def test_clean_expressions(text, scope):
    assert issues(text, scope) == []


def test_issue_positions_are_absolute():
    issue = only("customer.order_count > 1 and customer.ordr_count > 2", PROFILE)
    assert (issue.line, issue.column) == (1, 30)
    issue = check_expression(parse_expression("event.x == 1 and\n  customer.ordr_count > 2", line=7, column=11),
                             scope=Scope("my.type"), want="bool")
    assert [(i.line, i.column) for i in issue] == [(8, 3)]


# -- names ----------------------------------------------------------------------------------------


def test_event_in_a_profile_rule():
    issue = only("event.rating <= 2", PROFILE)
    assert issue.severity == "error"
    assert "profile rule" in issue.message
    assert issue.hint


def test_misspelled_event_field_is_an_error():
    issue = only("event.ratng <= 2")
    assert issue.severity == "error"
    assert issue.hint == "did you mean 'rating'?"
    assert issue.found == "'ratng'"


def test_unknown_event_field_is_a_warning():
    issue = only("event.stars <= 2")
    assert issue.severity == "warning"
    assert "custom fields are allowed" in issue.message
    assert "review.created" in issue.message


def test_envelope_fields_are_known_everywhere():
    assert issues('event.customer_id == "c-1" and event.id != "x"', Scope("customer.opted_in")) == []
    assert issues("event.at > 5", Scope("my.type"))[0].severity == "error"


def test_unknown_event_type_fields_are_unchecked():
    assert issues('event.anything == "x" and event.more.deeply > 3', Scope("shop.custom")) == []


@pytest.mark.parametrize(
    "text, hint",
    [
        ("customer.ordr_count > 1", "did you mean 'order_count'?"),
        ("customer.tag contains 'x'", "did you mean 'tags'?"),
        ('customer.sku["tea-xqg"].order_cont > 1', "did you mean 'order_count'?"),
        ('customer.category["tea"].total_spnt > 1', "did you mean 'total_spent'?"),
    ],
)
def test_unknown_customer_field(text, hint):
    issue = only(text, ORDER)
    assert issue.severity == "error"
    assert issue.hint == hint


def test_unknown_customer_field_without_suggestion_lists_fields():
    issue = only("customer.zzzzzz > 1", PROFILE)
    assert issue.severity == "error"
    assert "order_count" in issue.hint


def test_unknown_product_field():
    issue = only("product.cycel > 3d", ORDER)
    assert issue.hint == "did you mean 'cycle'?"


def test_field_below_a_plain_value():
    issue = only("customer.stage.name == 'x'", PROFILE)
    assert "no fields" in issue.message


# -- functions ------------------------------------------------------------------------------------


def test_functions():
    scope = Scope("review.created", functions=frozenset({"days_since"}))
    assert issues("days_since(event.at) > 3", scope) == []
    issue = only("days_snce(event.at) > 3", scope)
    assert issue.severity == "error"
    assert issue.hint == "did you mean 'days_since'?"
    assert "no functions" in only("f(1) > 3").hint


# -- types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, scope, expected, found",
    [
        ('event.rating <= "2"', REVIEW, "number", "string"),
        ("event.text > 3", REVIEW, "string", "number"),
        ("customer.opted_out == 1", PROFILE, "bool", "number"),
        ("event.at > 3d", REVIEW, "timestamp", "duration"),
        ('customer.order_count matches "x"', PROFILE, "string", "number"),
        ("customer.tags contains 3", PROFILE, "string", "number"),
        ('"a" in customer.order_count', PROFILE, "a list, tags or a string", "number"),
        ('event.rating in ["1", "2"]', REVIEW, "number", "a list of string"),
        ("3 in event.text", REVIEW, "string", "number"),
        ("customer.tags == 'vip'", PROFILE, "a number, string, timestamp, duration or bool", "tags"),
        ("customer.opted_out < true", PROFILE, "== or !=", "'<'"),
        ("customer.order_count and customer.opted_out", PROFILE, "bool", "number"),
        ("not event.text", REVIEW, "bool", "string"),
        ("-event.text == 1", REVIEW, "a number or a duration", "string"),
    ],
)
def test_impossible_types(text, scope, expected, found):
    issue = only(text, scope)
    assert issue.severity == "error"
    assert issue.expected == expected
    assert issue.found == found


def test_quoted_number_hint():
    assert only('event.rating <= "2"').hint == "remove the quotes: 2"


@pytest.mark.parametrize(
    "text",
    ["event.at + 3 > event.at", 'event.text + "x" == "y"', "cycle * cycle > 1d", "customer.opted_out + 1 > 2"],
)
def test_impossible_arithmetic(text):
    found = issues(text, ORDER)
    assert found and found[0].severity == "error"
    assert "cannot compute" in found[0].message


def test_division_by_zero():
    assert "division by zero" in only("event.rating / 0 > 1").message


def test_comparison_with_null_warns():
    issue = only("customer.name == null", PROFILE)
    assert issue.severity == "warning"


# -- wanted type ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, want, found",
    [
        ("3", "bool", "number"),
        ("event.text", "bool", "string"),
        ("event.at + 1h", "bool", "timestamp"),
        ("event.rating", "duration", "number"),
        ("event.at", "duration", "timestamp"),
        ("event.rating > 3", "duration", "bool"),
    ],
)
def test_want_mismatch(text, want, found):
    issue = only(text, REVIEW, want)
    assert issue.severity == "error"
    assert (issue.expected, issue.found) == (want, found)
    assert (issue.line, issue.column) == (1, 1)


@pytest.mark.parametrize("text", ["2h", "cycle - 3d", "cycle * 2", "1d12h + 30m", "customer.attributes.delay",
                                  "product.cycle"])
def test_durations(text):
    assert issues(text, ORDER, "duration") == []


def test_infer_type():
    assert infer_type(parse_expression("cycle - 3d"), ORDER) == "duration"
    assert infer_type(parse_expression("event.at + cycle"), ORDER) == "timestamp"
    assert infer_type(parse_expression("event.at - customer.last_order_at"), ORDER) == "duration"
    assert infer_type(parse_expression("event.amount * 2"), ORDER) == "number"
    assert infer_type(parse_expression("customer.tags"), ORDER) == "tags"
    assert infer_type(parse_expression("[1]"), ORDER) == "list"
    assert infer_type(parse_expression("customer.attributes"), ORDER) == "mapping"
    assert infer_type(parse_expression("customer.attributes.x"), ORDER) == "any"
    assert infer_type(parse_expression("f(1)"), ORDER) == "any"
    assert infer_type(parse_expression("event.rating > 1"), REVIEW) == "bool"


# -- skus -----------------------------------------------------------------------------------------


def test_misspelled_sku_is_an_error():
    issue = only('event.sku == "tea-xgq"', ORDER)
    assert issue.severity == "error"
    assert issue.hint == "did you mean 'tea-xqg'?"
    assert issue.column == 14


def test_unrelated_sku_is_a_warning():
    issue = only('product.sku != "zzzzzz"', ORDER)
    assert issue.severity == "warning"


def test_sku_in_list_and_per_sku_key():
    assert only('event.sku in ["tea-xqg", "tea-dhq"]', ORDER).hint == "did you mean 'tea-dhp'?"
    assert only('customer.sku["lens-3"].order_count > 1', ORDER).hint == "did you mean 'lens-30'?"


def test_skus_unchecked_without_declared_products():
    assert issues('event.sku == "tea-xgq"', Scope("order.placed")) == []


# -- property -------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "event.rating", "event.text", "event.at", "event.sku", "event.zz", "customer.order_count",
        "customer.tags", "customer.attributes.x", "customer.sku[\"tea-xqg\"].order_count", "product.cycle",
        "cycle", "1", '"2"', "true", "null", "2h", "[1, \"a\"]", "f(event.rating)",
    ]
)
_OPS = st.sampled_from(["==", "<", "in", "not in", "contains", "+", "-", "*", "/", "and", "or"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_WORDS, _OPS), min_size=1, max_size=4), _WORDS, st.sampled_from([REVIEW, ORDER, PROFILE]))
def test_checker_never_raises(pairs, last, scope):
    text = " ".join(f"{word} {op}" for word, op in pairs) + f" {last}"
    try:
        node = parse_expression(text)
    except ExpressionError:
        return
    for want in ("bool", "duration"):
        for issue in check_expression(node, scope=scope, want=want):
            assert issue.severity in ("error", "warning")
            assert issue.line == 1 and issue.column >= 1
