"""Templates: parsing fields and braces, positioned errors, rendering and checks."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulecrm.engine.profile import Profile
from rulecrm.errors import ExpressionError
from rulecrm.events import Event
from rulecrm.expr.ast import Name, Pos
from rulecrm.expr.checker import Scope
from rulecrm.expr.context import EvalContext
from rulecrm.expr.templates import Template, TemplateError, check_template, parse_template, read_template, render_value
from rulecrm.rulefile.loader import check_rules
from rulecrm.schema import BUILTIN_EVENT_TYPES, CUSTOMER_FIELDS, EVENT_ENVELOPE_FIELDS, PER_KEY_FIELDS, PRODUCT_FIELDS
from rulecrm.timeutil import get_zone

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
        ("{event.at}", "2026-03-01 10:15"),
        ("{event.at:%Y-%m-%d %H:%M}", "2026-03-01 10:15"),
        ("{cycle}", "1d 12h"),
        ("{product.cycle}", "30d"),
        ("{event.flag}/{customer.opted_out}", "true/false"),
        ("¥{event.amount:.2f}", "¥128.00"),
        ("¥{event.amount}", "¥128"),
        ("{customer.tags}", "vip"),
        ("{customer.last_order}", "sku: tea-xqg, amount: 128"),
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
        ("Hi {customer.name", 1, 4, "unclosed brace"),
        ("Hi {", 1, 4, "unclosed brace"),
        ("Hi }", 1, 4, "unmatched '}'"),
        ("Hi {}", 1, 5, "empty field"),
        ("Hi {custmer.name}", 1, 5, "unknown name 'custmer'"),
        ("Hi {name}", 1, 5, "unknown name 'name'"),
        ("Hi {customer.name.}", 1, 19, "expected a field name"),
        ("Hi {customer.name + 1}", 1, 19, "expected '}' or ':format'"),
        ("Hi {customer.name:{x}}", 1, 19, "cannot contain '{'"),
        ("Hi {customer.name:abc", 1, 4, "unclosed brace"),
        ("{event.at:.99999f}", 1, 12, "precision 99999 is too large"),
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
@given(st.lists(st.sampled_from(list("{}:.[]\"'ab x\n%") + ["customer", "event", "name", "近", ".2f", "%Y", "at",
                                                            "amount", "tags", "1", "99999", "\\", "+"]),
                max_size=30).map("".join))
def test_fuzz_parse_check_and_render_never_raise(text):
    template, errors = read_template(text, line=2, column=5)
    lines = text.count("\n")
    for error in errors:
        assert 2 <= error.line <= 2 + lines and error.column >= 1 and error.message
    for issue in check_template(template, scope=Scope("order.placed")):
        assert 2 <= issue.line <= 2 + lines and issue.column >= 1 and issue.message
    assert isinstance(template.render(CTX, SHANGHAI), str)
    if not errors:
        assert parse_template(text) == template


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=40))
def test_text_without_braces_renders_as_is(text):
    assert render(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_escaped_braces_round_trip(text):
    escaped = text.replace("{", "{{").replace("}", "}}")
    assert render(escaped) == text


# -- every error at once ----------------------------------------------------------------------------
def test_every_syntax_error_is_reported_at_once():
    text = "Hi {customer.name, {event.at:99999} } {} {custmer.id} {event.text}"
    with pytest.raises(TemplateError) as info:
        parse_template(text, line=3, column=10)
    found = [(e.line, e.column, e.message) for e in info.value.errors]
    col = {part: text.index(part) + 10 for part in ("{customer", "99999", "} {}", "}", "custmer")}
    assert found == [
        (3, col["{customer"], "unclosed brace: this '{' has no matching '}'"),
        (3, col["99999"], "format width 99999 is too large"),
        (3, col["} {}"], "unmatched '}' in template"),
        (3, col["} {}"] + 3, "empty field '{}' in template"),
        (3, col["custmer"], "unknown name 'custmer'"),
    ]
    # the exception itself is the first error, for callers that show one
    assert (info.value.line, info.value.column) == (3, col["{customer"])


def test_unclosed_brace_points_at_the_brace_and_says_how_to_fix_it():
    text = "总额 {customer.total_spent 元, 谢谢 {customer.name}"
    with pytest.raises(TemplateError) as info:
        parse_template(text)
    [error] = info.value.errors
    assert (error.line, error.column) == (1, 4)
    assert error.message.startswith("unclosed brace")
    assert error.found == f"another '{{' at line 1, column {text.rindex('{') + 1}"
    assert error.hint == "close it with } or write {{ for a literal brace"


# -- formats against field types --------------------------------------------------------------------
@pytest.mark.parametrize(
    "event_type, text, fragment, at",
    [
        ("order.placed", "{event.amount:.2f} {event.amount:,d} {event.amount:>8} {event.amount:.0%}", None, None),
        ("order.placed", "{event.sku:>10} {event.sku:.3} {event.at:%Y-%m-%d %H:%M} {event.at:%a %z}", None, None),
        ("order.placed", "{cycle:>6} {customer.tags:<20} {customer.opted_out:^7}", None, None),
        ("order.placed", "{event.sku:.2f}", "a number format on event.sku, which is a string", ".2f"),
        ("order.placed", "{event.amount:%Y}", "'%Y' is not a number format", "%Y"),
        ("order.placed", "{event.at:.2f}", "no % directive in the format of event.at", ".2f"),
        ("order.placed", "{event.at:%Y-%Q}", "unknown directive %Q", "%Q"),
        ("order.placed", "{event.at:%d/%-m}", "unknown directive %-", "%-"),
        ("order.placed", "{event.at:%Y %}", "a lone '%' at the end", "%}"),
        ("order.placed", "{customer.tags:.2f}", "a number format on customer.tags, which is a tag set", ".2f"),
        ("order.placed", "{cycle:d}", "a number format on cycle, which is a duration", "d}"),
        ("order.placed", "{customer.opted_out:d}", "a number format on customer.opted_out", "d}"),
        ("order.placed", "{customer.name:x!}", "'x!' is not a valid format on customer.name", "x!"),
        # unknown types (custom fields, attributes) are checked when rendered; nonsense is refused now
        ("order.placed", "{event.coupon:.2f} {customer.attributes.level:%Y} {event.coupon:>4}", None, None),
        ("ticket.opened", "{event.ref:.2q}", "'.2q' is not a valid format", ".2q"),
    ],
)
def test_formats_are_checked_against_the_field_type(event_type, text, fragment, at):
    issues = [i for i in check_template(parse_template(text, line=5, column=3), scope=Scope(event_type))
              if i.is_error]
    if fragment is None:
        assert issues == []
        return
    [issue] = issues
    assert fragment in issue.message
    assert (issue.line, issue.column) == (5, 3 + text.index(at))
    assert issue.expected and issue.found


# -- human forms ------------------------------------------------------------------------------------
UTC = timezone.utc
SHANGHAI = get_zone("Asia/Shanghai")


@pytest.mark.parametrize(
    "value, zone, expected",
    [
        (None, None, ""),
        (True, None, "true"),
        (False, None, "false"),
        (frozenset(), None, ""),
        (frozenset({"vip", "repeat-buyer", "high-intent"}), None, "high-intent, repeat-buyer, vip"),
        ([], None, ""),
        (["x"], None, "x"),
        (["x", 2, None, True], None, "x, 2, , true"),
        ({}, None, ""),
        ({"a": 1}, None, "a: 1"),
        ({"a": [1, 2.5], "b": {"c": True}, "d": frozenset({"y", "x"})}, None, "a: [1, 2.5], b: {c: true}, d: [x, y]"),
        ({"at": datetime(2026, 3, 1, 2, 15, tzinfo=UTC)}, SHANGHAI, "at: 2026-03-01 10:15"),
        (datetime(2026, 3, 1, 2, 15, 59, tzinfo=UTC), SHANGHAI, "2026-03-01 10:15"),
        (datetime(2026, 3, 1, 2, 15, tzinfo=UTC), None, "2026-03-01 02:15"),
        (datetime(2026, 3, 1, 10, 15, tzinfo=timezone(timedelta(hours=8))), get_zone("America/New_York"),
         "2026-02-28 21:15"),
        (timedelta(days=3, hours=4), None, "3d 4h"),
        (timedelta(0), None, "0s"),
        (timedelta(minutes=1, seconds=30), None, "1m 30s"),
        (timedelta(hours=-2), None, "-2h"),
        (timedelta(milliseconds=1500), None, "1s 500ms"),
        (128.0, None, "128"),
        (0.1 + 0.2, None, "0.3"),
        (-0.0, None, "0"),
        (2.5, None, "2.5"),
        (1e20, None, "1e+20"),
        (1e-9, None, "1e-09"),
        ("text {not a field}", None, "text {not a field}"),
    ],
)
def test_human_forms(value, zone, expected):
    assert render_value(value, None, zone) == expected


def test_huge_integers_render_without_hitting_the_int_to_text_limit():
    assert render_value(10**5000) == "1.000000e+5000"


def test_collections_are_bounded():
    deep: list = ["x"]
    for _ in range(5000):
        deep = [deep]
    assert render_value(deep) == "[[…]]"
    shown = render_value(list(range(150)))
    assert shown.startswith("0, 1, 2") and shown.endswith("98, 99, …")


@pytest.mark.parametrize(
    "value, spec, expected",
    [
        (128.0, ".2f", "128.00"),
        (128.0, "d", "128"),  # an integral float takes an integer format
        (2.5, "d", "2.5"),  # ... a fractional one is shown without it
        ("12.5", ".2f", "12.5"),  # a custom field holding text: the number format is left out
        (5, "%Y", "5"),
        (True, ">6", "  true"),
        (frozenset({"b", "a"}), ">6", "  a, b"),
        (timedelta(hours=2), "<4|", "2h"),
        (datetime(2026, 3, 1, 2, 15, tzinfo=UTC), "%H:%M %z", "10:15 +0800"),
        (datetime(2026, 3, 1, 2, 15, tzinfo=UTC), ">17", " 2026-03-01 10:15"),
        (None, ".2f", ""),
        ("tea", "%Y", "tea"),
    ],
)
def test_a_format_that_does_not_fit_the_value_is_left_out(value, spec, expected):
    assert render_value(value, spec, SHANGHAI) == expected


# Anything that looks like Python's own spelling of a value.
REPR = re.compile(r"frozenset\(|set\(|datetime\.|timedelta\(|\{'|\['|'\]|'\}|\bNone\b|\bTrue\b|\bFalse\b"
                  r"|object at 0x|Decimal\(|\(\)")
SAFE_TEXT = st.text(alphabet="abcxyz019-_ 小青柑", max_size=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53 + 1, 2**53 - 1) | st.floats(-9e15, 9e15)
    | SAFE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SAFE_TEXT, inner, max_size=4),
    max_leaves=12,
)
AT_TIMES = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2090, 1, 1),
                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]))
SPECS = st.sampled_from([None, ".2f", "d", ",", ">8", "<3", "^5", ".3", "%Y-%m-%d %H:%M", "%a", "x", ".0%", "s",
                         "%", "+", "#x", "0>4"])


# Built-in fields get values of their type (anything else is refused by validation); custom fields
# and attributes get any JSON.
SPECIAL = {"rating": st.integers(1, 5), "birthday": st.sampled_from(["1990-05-17", "02-29"]),
           "timezone": st.sampled_from(["Asia/Shanghai", "America/New_York"])}


def _data_for(event_type):
    fields = {name: SPECIAL.get(name, _typed(kind)) for name, kind in BUILTIN_EVENT_TYPES.get(event_type, {}).items()}
    required = {"rating": fields.pop("rating")} if event_type == "review.created" else {}
    return st.fixed_dictionaries(required, optional={**fields, "custom": JSON,
                                                     "attributes": st.dictionaries(SAFE_TEXT, JSON)})


def _typed(kind):
    return {"number": st.integers(0, 500) | st.floats(0, 1e6), "string": SAFE_TEXT, "bool": st.booleans(),
            "tags": st.lists(SAFE_TEXT, max_size=3), "mapping": st.dictionaries(SAFE_TEXT, JSON, max_size=3),
            "timestamp": st.just("2026-03-01T10:15:00+08:00"), "duration": st.just("3d")}.get(kind, JSON)


def _event(kind, data, at):
    return Event.from_dict({"type": kind, "customer_id": "c1", "at": at.isoformat(), "data": data}, default_tz=UTC)


EVENTS = st.sampled_from(sorted(BUILTIN_EVENT_TYPES) + ["ticket.opened"]).flatmap(
    lambda kind: st.builds(lambda data, at: _event(kind, data, at), _data_for(kind), AT_TIMES))


def _every_name(event: Event, profile: Profile) -> list[str]:
    names = [f"customer.{f}" for f in CUSTOMER_FIELDS] + [f"product.{f}" for f in PRODUCT_FIELDS] + ["cycle"]
    names += [f"event.{f}" for f in {*EVENT_ENVELOPE_FIELDS, *event.data, "missing"}
              if f.isidentifier() and f not in ("and", "or", "not", "in")]
    for table, key in (("sku", profile.by_sku), ("category", profile.by_category)):
        names += [f'customer.{table}["{k}"].{f}' for k in key if '"' not in k and "\\\\" not in k
                  for f in PER_KEY_FIELDS]
    return names


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.lists(EVENTS, min_size=1, max_size=6), st.data())
def test_any_field_renders_in_human_form_and_never_raises(events, data):
    profile = Profile("c1")
    for event in events:
        profile.apply(event, learn_skus=frozenset())
    event = events[-1]
    ctx = EvalContext(event=event.as_mapping(), customer=profile.mapping(),
                      product={"sku": "tea", "name": "Tea", "cycle": timedelta(days=30), "learn_cycle": True},
                      cycle=timedelta(days=27, hours=5))
    zone = data.draw(st.sampled_from([None, SHANGHAI, get_zone("America/New_York"), UTC]))
    for name in _every_name(event, profile):
        spec = data.draw(SPECS)
        field = "{" + name + (f":{spec}" if spec is not None else "") + "}"
        shown = parse_template(field).render(ctx, zone)
        assert isinstance(shown, str)
        assert not REPR.search(shown), (field, shown)


# -- positions inside YAML scalars -------------------------------------------------------------------
def _diagnostics(tmp_path, rules: str):
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    _ruleset, diagnostics = check_rules(path)
    return rules.splitlines(), [d for d in diagnostics if d.is_error]


def _at(lines, line_number: int, fragment: str, nth: int = 0) -> tuple[int, int]:
    text = lines[line_number - 1]
    column = -1
    for _ in range(nth + 1):
        column = text.index(fragment, column + 1)
    return line_number, column + 1


@pytest.mark.parametrize(
    "scalar, line, fragment",
    [
        (r'"say \"hi\" {customer.nme}"', 4, "customer.nme"),
        (r'"caf\u00e9 \t {customer.nme}"', 4, "customer.nme"),
        ("'it''s {customer.nme}'", 4, "customer.nme"),
        ("plain {customer.nme} text", 4, "customer.nme"),
        ('"first line\n        second {customer.nme}"', 5, "customer.nme"),
        ('"escaped \\\n        break {customer.nme}"', 5, "customer.nme"),
        ("|\n        Hello,\n          {customer.nme}", 6, "customer.nme"),
        (">\n        Hello\n\n        {customer.nme}", 7, "customer.nme"),
    ],
)
def test_errors_point_at_the_exact_character_inside_the_yaml_scalar(tmp_path, scalar, line, fragment):
    lines, errors = _diagnostics(tmp_path, "rules:\n  - id: x\n    notify:\n" f"      template: {scalar}\n"
                                 "      to: customer\n")
    [error] = errors
    assert "nme" in error.message
    assert (error.line, error.column) == _at(lines, line, fragment)


def test_a_rule_file_reports_every_error_of_a_template(tmp_path):
    rules = (
        "rules:\n"
        "  - id: x\n"
        "    on: order.placed\n"
        '    notify: {to: customer, template: "¥{event.amount:.2f} {event.sku:.2f} at {event.at:%H:%Q} '
        '{customer.nmae} {customer.name + 1} {x} } {customer.name"}\n'
    )
    lines, errors = _diagnostics(tmp_path, rules)
    found = sorted(((e.line, e.column), e.message) for e in errors)
    assert found == sorted([
        (_at(lines, 4, "+ 1}"), "expected '}' or ':format' after the name, found '+'"),
        (_at(lines, 4, "x}"), "unknown name 'x'"),
        (_at(lines, 4, "} {customer.name\""), "unmatched '}' in template"),
        (_at(lines, 4, "{customer.name\""), "unclosed brace: this '{' has no matching '}'"),
        (_at(lines, 4, ".2f", nth=1), "a number format on event.sku, which is a string"),
        (_at(lines, 4, "%Q"), "unknown directive %Q in the format of event.at, a timestamp"),
        (_at(lines, 4, "customer.nmae"), "unknown customer field 'nmae'"),
    ])
    assert all(e.expected and e.found and e.hint for e in errors)


# -- in the engine -----------------------------------------------------------------------------------
LOCAL_TIME_RULES = """
shop: {timezone: Asia/Shanghai}
rules:
  - id: thanks
    on: order.placed
    notify:
      to: customer
      kind: service
      template: "{event.at} | {event.at:%H:%M %Z} | ¥{event.amount} | {event.amount:.2f} | [{customer.tags}] | {event.coupon:.2f}"
"""  # noqa: E501


@pytest.mark.parametrize("backend", ["python", "durable"])
def test_messages_show_local_time_and_survive_formats_that_do_not_fit(tmp_path, backend):
    from helpers import ev, run

    events = [
        ev("customer.upserted", "c1", "2026-03-01T00:00:00Z", id="u1", timezone="America/New_York"),
        ev("order.placed", "c1", "2026-03-01T15:15:00Z", id="o1", sku="tea", amount=128.0, coupon="SPRING"),
        ev("order.placed", "c2", "2026-03-01T15:15:00Z", id="o2", sku="tea", amount=99.5, coupon=3),
    ]
    actions, _ = run(tmp_path, LOCAL_TIME_RULES, events, backend=backend)
    assert {a["customer_id"]: a["message"] for a in actions} == {
        "c1": "2026-03-01 10:15 | 10:15 EST | ¥128 | 128.00 | [] | SPRING",  # the customer's zone
        "c2": "2026-03-01 23:15 | 23:15 CST | ¥99.5 | 99.50 | [] | 3.00",  # else the shop's
    }
