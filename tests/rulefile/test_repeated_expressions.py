"""A condition or template repeated in a rule file is read once and moved to its other places.

Reading is a pure function of the text and its (line, column), so a moved tree must equal what
parsing the text at its new place gives, positions included (those `eq` leaves out as well), and
every diagnostic of a repeated text must point at its own place.
"""
from __future__ import annotations

import textwrap

import attrs
import pytest

from rulecrm.expr.ast import Pos, moved
from rulecrm.expr.parser import children, parse_expression
from rulecrm.expr.templates import read_template
from rulecrm.rulefile.loader import check_rules

EXPRESSIONS = [
    'customer.order_count >= 3 and customer.total_spent > 500',
    'not (event.sku in ["tea-a", "tea-b"]) or customer.tags contains "vip"',
    '-customer.total_spent + 2 * 3 / 4 - 1 < 0',
    'event.text matches "(?i)refund|退款"',
    'days_since(customer.last_order_at) > 30',
    'cycle * 1.2 + 2d - 12h',
    'customer.sku["tea-xqg"].order_count == 0 or customer.city == null or true',
]

TEMPLATES = [
    "Hi {customer.name}, your {event.sku} ships today",
    "{customer.total_spent:,.2f} spent; {{literal}} braces; {event.at:%Y-%m-%d}",
    "plain text, no field",
]


def positions(node) -> list[Pos]:
    """Every position in a tree, the ones equality ignores (a pattern's) included, in source order."""
    found = [node.pos]
    if getattr(node, "pattern_pos", None) is not None:
        found.append(node.pattern_pos)
    value = getattr(node, "value", None)
    items = value if type(node).__name__ == "Literal" and isinstance(value, tuple) else ()
    for child in (*children(node), *(item for item in items if hasattr(item, "pos"))):
        found.extend(positions(child))
    return found


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_a_moved_tree_is_the_tree_parsed_at_its_new_line(text):
    here = parse_expression(text, line=4, column=11)
    there = parse_expression(text, line=19, column=11)
    assert moved(here, 15) == there
    assert positions(moved(here, 15)) == positions(there)
    assert moved(there, -15) == here


@pytest.mark.parametrize("text", TEMPLATES)
def test_a_moved_template_is_the_template_read_at_its_new_line(text):
    here, errors_here = read_template(text, line=2, column=17)
    there, errors_there = read_template(text, line=40, column=17)
    assert errors_here == errors_there == []
    assert here.moved(38) == there
    moved_fields, fields = here.moved(38).fields, there.fields
    assert [field.spec_at for field in moved_fields] == [field.spec_at for field in fields]
    assert [attrs.astuple(field.name.pos) for field in moved_fields] == [attrs.astuple(f.name.pos) for f in fields]


def check_text(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return check_rules(path)


def test_each_place_of_a_repeated_condition_reports_its_own_position(tmp_path):
    ruleset, diagnostics = check_text(tmp_path, """\
        rules:
          - id: first
            on: order.placed
            when: customer.order_count > "three"
            tag: a
          - id: second
            on: order.placed
            when: customer.order_count > "three"
            tag: b
        """)
    assert ruleset is None
    assert [(d.line, d.column) for d in diagnostics if d.is_error] == [(4, 32), (8, 32)]  # at the `>`


def test_each_place_of_a_repeated_template_reports_its_own_position(tmp_path):
    ruleset, diagnostics = check_text(tmp_path, """\
        rules:
          - id: first
            on: order.placed
            notify: {to: customer, template: "hi {customer.nmae}"}
          - id: second
            on: order.placed
            notify: {to: customer, template: "hi {customer.nmae}"}
        """)
    found = [(d.line, d.column) for d in diagnostics if "nmae" in d.message]
    assert found == [(4, 43), (7, 43)], [d.format() for d in diagnostics]  # at the field's name


def test_a_repeated_condition_compiles_at_each_place(tmp_path):
    ruleset, diagnostics = check_text(tmp_path, """\
        rules:
          - id: first
            on: order.placed
            when: customer.order_count >= 2
            tag: a
          - id: second
            on: order.placed
            when: customer.order_count >= 2
            tag: b
        """)
    assert [d for d in diagnostics if d.is_error] == []
    first, second = (rule.when for rule in ruleset.active_rules)
    assert (first.pos, second.pos) == (Pos(4, 32), Pos(8, 32))  # a comparison is at its operator
    assert (first.left.pos, second.left.pos) == (Pos(4, 11), Pos(8, 11))
