"""Templates: parsing fields and braces, positioned errors, rendering and checks."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.errors import ExpressionError
from rulecrm.expr.ast import Name, Pos
from rulecrm.expr.checker import Scope
from rulecrm.expr.context import EvalContext
from rulecrm.templates import Template, check_template, parse_template

AT = datetime(2026, 3, 1, 10, 15, tzinfo=timezone(timedelta(hours=8)))
CTX = EvalContext(
    event={"rating": 2, "text": "太慢了", "at": AT, "amount": 128.0, "flag": True, "none": None},
    customer={
        "name": "王小明",
        "last_order": {"sku": "tea-xqg", "amount": 128.0},
        "sku": {"tea-xqg": {"order_count": 3}},
        "opted_out": False,
        "tags": frozenset({"vip"}),
    },
    product={"name": "小青柑普洱", "cycle": timedelta(days=30)},
    cycle=timedelta(days=1, hours=12),
)


def render(text, ctx=CTX) -> str:
    return parse_template(text).render(ctx)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain text", "plain text"),
        ("", ""),
        ("差评 {event.rating}★: {event.text}", "差评 2★: 太慢了"),
        ("生日快乐, {customer.name}!", "生日快乐, 王小明!"),
        ("{customer.name} 已沉睡, 上次购买 {customer.last_order.sku}", "王小明 已沉睡, 上次购买 tea-xqg"),
        ('{customer.sku["tea-xqg"].order_count} 次', "3 次"),
        ("{event.at}", "2026-03-01T10:15:00+08:00"),
        ("{event.at:%Y-%m-%d %H:%M}", "2026-03-01 10:15"),
        ("{cycle}", "1d12h"),
        ("{product.cycle}", "30d"),
        ("{event.flag}/{customer.opted_out}", "true/false"),
        ("¥{event.amount:.2f}", "¥128.00"),
        ("¥{event.amount}", "¥128.0"),
        ("[{event.rating:>3}]", "[  2]"),
        ("{event.text:%Y}", "太慢了"),
        ("<{event.missing}><{event.none}><{customer.name.first}>", "<><><>"),
        ("{{literal}} and }} and {{", "{literal} and } and {"),
        ("{{{customer.name}}}", "{王小明}"),
        ("{ customer.name }", "王小明"),
        ("{product.name}", "小青柑普洱"),
    ],
)
def test_render(text, expected):
    assert render(text) == expected


def test_names_and_text():
    template = parse_template("Hi {customer.name}, {event.at:%H:%M} {cycle}", line=4, column=15)
    assert template.text == "Hi {customer.name}, {event.at:%H:%M} {cycle}"
    assert template.names == (
        Name("customer", ("name",), Pos(4, 19)),
        Name("event", ("at",), Pos(4, 36)),
        Name("cycle", (), Pos(4, 53)),
    )
    assert isinstance(template, Template)


def test_positions_across_lines():
    template = parse_template("line one\n  {customer.name}", line=2, column=7)
    assert template.names[0].pos == Pos(3, 4)


def test_missing_context_renders_empty():
    assert render("[{customer.name}]", EvalContext()) == "[]"


@pytest.mark.parametrize(
    "text, line, column, fragment",
    [
        ("Hi {customer.name", 1, 4, "unclosed '{'"),
        ("Hi {", 1, 4, "unclosed '{'"),
        ("Hi }", 1, 4, "unmatched '}'"),
        ("Hi {}", 1, 5, "expected a name"),
        ("Hi {custmer.name}", 1, 5, "unknown name 'custmer'"),
        ("Hi {name}", 1, 5, "unknown name 'name'"),
        ("Hi {customer.name.}", 1, 19, "expected a field name"),
        ("Hi {customer.name + 1}", 1, 19, "expected '}' or ':format'"),
        ("Hi {customer.name:{x}}", 1, 19, "cannot contain '{'"),
        ("Hi {customer.name:abc", 1, 4, "unclosed '{'"),
        ("x\ny {event}", 2, 9, "expected '.' and a field"),
        ("{event.at:99999}", 1, 11, "too large"),
        ('{customer.sku["a}', 1, 15, "unterminated string"),
        ("{f(1)}", 1, 2, "unknown name 'f'"),
    ],
)
def test_errors(text, line, column, fragment):
    with pytest.raises(ExpressionError) as info:
        parse_template(text)
    err = info.value
    assert fragment in err.message
    assert (err.line, err.column) == (line, column)


def test_misspelled_root_hint():
    with pytest.raises(ExpressionError) as info:
        parse_template("Hi {custmer.name}", line=9, column=20)
    assert info.value.hint == "did you mean 'customer'?"
    assert (info.value.line, info.value.column) == (9, 24)


def test_templates_reach_only_mappings():
    class Secret:
        password = "hunter2"

        def __str__(self):
            return "<secret>"

    ctx = EvalContext(event={"obj": Secret(), "text": "{event.obj.password}"})
    assert render("{event.obj.password}", ctx) == ""
    assert render("{event.obj.__class__}", ctx) == ""
    assert render("{event.text}", ctx) == "{event.obj.password}"


def test_check_template():
    scope = Scope("review.created", skus=frozenset({"tea-xqg"}))
    template = parse_template("{event.ratng} {customer.nme} {event.text} {customer.sku[\"tea-xgq\"].order_count}")
    found = check_template(template, scope=scope)
    assert [issue.hint for issue in found] == [
        "did you mean 'rating'?",
        "did you mean 'name'?",
        "did you mean 'tea-xqg'?",
    ]
    assert all(issue.severity == "error" for issue in found)
    assert check_template(parse_template("{event.rating}"), scope=Scope(None))[0].severity == "error"
    assert check_template(parse_template("{customer.name} {cycle}"), scope=Scope(None)) == []


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list("{}:.[]\"'ab x\n") + ["customer", "event", "name", "近"]), max_size=30).map("".join))
def test_fuzz_parse_only_expression_errors(text):
    try:
        template = parse_template(text)
    except ExpressionError:
        return
    assert isinstance(template.render(CTX), str)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=40))
def test_text_without_braces_renders_as_is(text):
    assert render(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_escaped_braces_round_trip(text):
    escaped = text.replace("{", "{{").replace("}", "}}")
    assert render(escaped) == text
