"""Values the engine could not process are refused at validation, with the field named; the limits themselves pass."""
from __future__ import annotations

import json
from datetime import timezone

import pytest

from rulecrm.errors import EventError
from rulecrm.events import MAX_NUMBER, parse_event_line


def line(data=None, **envelope):
    obj = {"type": "chat.received", "customer_id": "c-1", "at": "2026-03-01T10:00:00+08:00", "data": data or {}}
    obj.update(envelope)
    return json.dumps(obj, ensure_ascii=False)


def upsert(**data):
    return line(data, type="customer.upserted")


def refused(text):
    with pytest.raises(EventError) as caught:
        parse_event_line(text, default_tz=timezone.utc)
    return caught.value


@pytest.mark.parametrize("text, field, words", [
    (line({"n": 10**30}), "data.n", "out of range"),
    (line({"n": -(MAX_NUMBER + 1)}), "data.n", "out of range"),
    (line({"n": 1e300}), "data.n", "out of range"),
    (line({"nested": {"deep": [1, 2, 1e20]}}), "data.nested.deep[2]", "out of range"),
    (line(type="order.placed", data={"sku": "x", "amount": 1e17}), "data.amount", "out of range"),
    (line().replace('"data": {}', '"data": {"n": 1e999}'), "data.n", "finite"),
    (line().replace('"data": {}', '"data": {"t": "a\\ud800b"}'), "data.t", "lone surrogate"),
    (line().replace('"data": {}', '"data": {"\\udfff": 1}'), "data key", "lone surrogate"),
    (line().replace('"c-1"', '"c\\u0000"'), "customer_id", "NUL"),
    (line().replace('"chat.received"', '"chat\\ud83d"'), "type", "lone surrogate"),
    (line().replace('"data": {}', '"data": {}, "id": "o\\udc80"'), "id", "lone surrogate"),
    (line({"text": "hi\u0000"}), "data.text", "NUL"),
    (line(at="9999-12-31T23:59:59-23:59"), "at", "outside the supported range"),
    (line(at="0001-01-01T00:00:00+23:59"), "at", "outside the supported range"),
    (line(at="1900-01-01T00:00:00+14:00"), "at", "outside the supported range"),
    (line(at="2200-01-01T00:00:00Z"), "at", "outside the supported range"),
    (line({"a": json.loads("[" * 33 + "1" + "]" * 33)}), "data.a", "nested deeper"),
    # deeper than Python's recursion limit, within what the fast JSON decoder accepts
    (line().replace('"data": {}', '"data": {"a": ' + "[" * 1020 + "]" * 1020 + "}"), "data.a", "nested deeper"),
    (upsert(birthday="1990-02-29"), "data.birthday", "does not exist"),
    (upsert(birthday="2031-01-01"), "data.birthday", "not a possible birthday"),
    (upsert(birthday="1850-06-01"), "data.birthday", "not a possible birthday"),
    (upsert(birthday="02-30"), "data.birthday", "expected a date"),
    (upsert(birthday="1990-13-01"), "data.birthday", "expected a date"),
    (upsert(birthday="tomorrow"), "data.birthday", "expected a date"),
    (upsert(timezone="Asia/Shangai"), "data.timezone", "did you mean 'Asia/Shanghai'"),
    (upsert(timezone="../../etc/passwd"), "data.timezone", "unknown time zone"),
    (upsert(timezone="+08:00"), "data.timezone", "unknown time zone"),
])
def test_unprocessable_values_are_refused_with_the_field_named(text, field, words):
    error = refused(text)
    assert error.field == field
    assert words in str(error)
    assert str(error).startswith(field)


@pytest.mark.parametrize("text", [
    line({"n": MAX_NUMBER, "m": -MAX_NUMBER, "f": 9.007e15, "g": 1e-300}),
    line(at="1900-01-01T00:00:00Z"),
    line(at="2199-12-31T23:59:59Z"),
    line({"a": json.loads("[" * 31 + "]" * 31)}),
    upsert(birthday="02-29", timezone="America/New_York"),
    upsert(birthday="--02-29"),
    upsert(birthday="2000-02-29"),
    upsert(birthday="2026-03-01"),  # born the day of the event
    upsert(birthday="", timezone=""),  # empty: "not given"
    line({"text": "😀 近期 \u2028 ok"}),
])
def test_values_at_the_limits_are_accepted(text):
    parse_event_line(text, default_tz=timezone.utc)


def test_an_over_long_integer_literal_is_a_json_error_not_a_crash():
    error = refused(line().replace('"data": {}', '"data": {"n": 1' + "0" * 5000 + "}"))
    assert "not valid JSON" in str(error)
