"""Tests for event parsing, validation, canonical JSON and synthetic ids."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulecrm import events
from rulecrm.errors import EventError
from rulecrm.events import Event, content_digest, parse_event_line, synthetic_id

SHANGHAI = ZoneInfo("Asia/Shanghai")


def parse(obj, tz=SHANGHAI):
    return parse_event_line(json.dumps(obj), default_tz=tz)


def base(**changes):
    obj = {"type": "order.placed", "customer_id": "c-42", "at": "2026-03-01T10:15:00+08:00", "data": {"amount": 128.0}}
    obj.update(changes)
    return obj


def rejected(obj_or_line) -> EventError:
    line = obj_or_line if isinstance(obj_or_line, str) else json.dumps(obj_or_line)
    with pytest.raises(EventError) as excinfo:
        parse_event_line(line, default_tz=SHANGHAI)
    return excinfo.value


def test_spec_example_parses():
    line = (
        '{"id": "o-1001", "type": "order.placed", "customer_id": "c-42", "at": "2026-03-01T10:15:00+08:00", '
        '"data": {"order_id": "o-1001", "sku": "tea-xqg", "category": "tea", "amount": 128.0, "platform": "tmall"}}'
    )
    event = parse_event_line(line, default_tz=timezone.utc)
    assert event.id == "o-1001"
    assert event.type == "order.placed"
    assert event.customer_id == "c-42"
    assert event.at == datetime(2026, 3, 1, 2, 15, tzinfo=timezone.utc)
    assert event.data["sku"] == "tea-xqg"


def test_naive_timestamp_is_read_in_the_default_zone():
    event = parse(base(at="2026-03-01T10:15:00"))
    assert event.at.utcoffset() == timedelta(hours=8)
    assert event.at == datetime(2026, 3, 1, 2, 15, tzinfo=timezone.utc)
    assert parse(base(at="2026-03-01T10:15:00Z")).at == datetime(2026, 3, 1, 10, 15, tzinfo=timezone.utc)


def test_integer_ids_become_decimal_strings():
    event = parse(base(customer_id=42, id=1001))
    assert event.customer_id == "42"
    assert event.id == "1001"


def test_optional_parts_may_be_missing_or_null():
    event = parse({"type": "custom.thing", "customer_id": "c", "at": "2026-01-01T00:00:00Z"})
    assert event.data == {}
    assert event.id is None
    assert parse(base(id=None, data=None)).data == {}


def test_as_mapping_exposes_data_and_envelope():
    event = parse(base(id="e1", data={"amount": 5, "type": "shadowed"}))
    mapping = event.as_mapping()
    assert mapping == {"amount": 5, "type": "order.placed", "at": event.at, "customer_id": "c-42", "id": "e1"}


def test_to_json_is_canonical_and_round_trips():
    event = parse(base(at="2026-03-01T10:15:00", data={"b": 1, "a": "茶"}))
    text = event.to_json()
    assert text == (
        '{"at":"2026-03-01T10:15:00+08:00","customer_id":"c-42","data":{"a":"茶","b":1},"type":"order.placed"}'
    )
    assert parse_event_line(text, default_tz=timezone.utc) == event
    with_id = parse(base(id="x"))
    assert json.loads(with_id.to_json())["id"] == "x"


def test_events_are_hashable_values():
    assert parse(base(id="x")) == parse(base(id="x"))
    assert hash(parse(base(id="x"))) == hash(parse(base(id="x")))
    assert parse(base(id="x")) != parse(base(id="y"))


def test_an_event_made_without_the_validators_is_the_validated_one():
    at = datetime(2026, 3, 1, 10, 15, tzinfo=SHANGHAI)
    for event_id in ("stage.changed|c-42|2026-03-01T10:15:00+08:00|dormant", None):
        checked = Event(type="stage.changed", customer_id="c-42", at=at, data={"from": "growing", "to": "dormant"},
                        id=event_id)
        made = Event.made("stage.changed", "c-42", at, {"from": "growing", "to": "dormant"}, event_id)
        assert made == checked and hash(made) == hash(checked)
        assert {field.name: getattr(made, field.name) for field in attrs.fields(Event)} == {
            field.name: getattr(checked, field.name) for field in attrs.fields(Event)}
        assert made.to_json() == checked.to_json()
        assert made.as_mapping() == checked.as_mapping()


def test_event_requires_an_aware_timestamp():
    with pytest.raises(ValueError, match="time-zone-aware"):
        Event(type="x", customer_id="c", at=datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "line, field, fragment",
    [
        ("not json", None, "not valid JSON"),
        ("[1, 2]", None, "expected a JSON object, found an array"),
        ('"text"', None, "expected a JSON object"),
        ('{"type": "x", "type": "y", "customer_id": "c", "at": "2026-01-01"}', None, "duplicate key 'type'"),
        ('{"type": "order.placed", "customer_id": "c", "at": "2026-01-01", "data": {"amount": NaN}}', None, "NaN"),
        ('{"type": "order.placed", "customer_id": "c", "at": "2026-01-01", "data": {"amount": 1e999}}', "data",
         "finite"),
        ('{"type": "x", "customer_id": "c", "at": "2026-01-01", "data": {"v": [Infinity]}}', None, "Infinity"),
    ],
)
def test_malformed_lines(line, field, fragment):
    error = rejected(line)
    assert fragment in error.message
    if field:
        assert error.field.startswith(field)


@pytest.mark.parametrize(
    "changes, field, fragment",
    [
        ({"type": None}, "type", "type: expected a non-empty string"),
        ({"type": ""}, "type", "non-empty string"),
        ({"type": 3}, "type", "found 3 (number)"),
        ({"customer_id": None}, "customer_id", "customer_id: expected a non-empty string"),
        ({"customer_id": ""}, "customer_id", "non-empty"),
        ({"customer_id": 1.5}, "customer_id", "found 1.5"),
        ({"customer_id": True}, "customer_id", "boolean"),
        ({"id": ["a"]}, "id", "id: expected a non-empty string"),
        ({"at": None}, "at", "at: expected an ISO 8601"),
        ({"at": "yesterday"}, "at", "found 'yesterday'"),
        ({"at": 1700000000}, "at", "found int"),
        ({"data": [1]}, "data", "data: expected an object"),
        ({"custmer_id": "c"}, "custmer_id", "did you mean 'customer_id'?"),
        ({"amount": 5}, "amount", "put custom fields inside \"data\""),
    ],
)
def test_invalid_envelopes(changes, field, fragment):
    obj = base()
    for key, value in changes.items():
        if key in obj and value is None and key != "id":
            del obj[key]
        else:
            obj[key] = value
    error = rejected(obj)
    assert error.field == field
    assert fragment in error.message


@pytest.mark.parametrize(
    "type_, data, field, fragment",
    [
        ("order.placed", {"amount": "128"}, "data.amount", "expects a number, found '128' (string)"),
        ("order.placed", {"amount": True}, "data.amount", "expects a number"),
        ("order.placed", {"sku": 7}, "data.sku", "expects a string"),
        ("order.placed", {"amount": -1}, "data.amount", "cannot be negative"),
        ("review.created", {}, "data.rating", "integer rating from 1 to 5, found nothing"),
        ("review.created", {"rating": 0}, "data.rating", "found 0"),
        ("review.created", {"rating": 6}, "data.rating", "found 6"),
        ("review.created", {"rating": 4.5}, "data.rating", "found 4.5"),
        ("review.created", {"rating": "5"}, "data.rating", "expects a number"),
        ("customer.upserted", {"attributes": "vip"}, "data.attributes", "expects an object"),
        ("chat.received", {"text": None, "from": 5}, "data.from", "expects a string"),
    ],
)
def test_builtin_field_types(type_, data, field, fragment):
    error = rejected(base(type=type_, data=data))
    assert error.field == field
    assert fragment in error.message


def test_builtin_types_accept_valid_and_unknown_fields():
    assert parse(base(type="review.created", data={"rating": 1, "text": "差", "extra": [1]})).data["rating"] == 1
    assert parse(base(type="order.refunded", data={"amount": -5})).data["amount"] == -5
    assert parse(base(type="order.placed", data={"amount": 0, "sku": None})).data["amount"] == 0
    assert parse(base(type="shop.custom", data={"amount": "any"})).data["amount"] == "any"


def test_synthetic_ids_are_deterministic_and_depend_on_content_and_occurrence():
    event = parse(base())
    same = parse(base(at="2026-03-01T10:15:00"))  # the same content written another way
    other = parse(base(data={"amount": 129.0}))
    assert content_digest(event) == content_digest(same)
    assert synthetic_id(event, 1) == synthetic_id(same, 1)
    assert synthetic_id(event, 1) != synthetic_id(event, 2)
    assert synthetic_id(event, 1) != synthetic_id(other, 1)
    assert synthetic_id(event, 1).startswith("auto-")
    assert synthetic_id(parse(base(id="given")), 1) == synthetic_id(event, 1)  # the id is not content
    with pytest.raises(ValueError):
        synthetic_id(event, 0)


# -- the orjson fast path of parse_event_line ------------------------------------------------

@pytest.mark.parametrize("line, fragment", [
    ('{"type": "x", "customer_id": "c", "at": "2026-01-01", "data": {"a": 1, "a" : 2}}', "duplicate key 'a'"),
    ('{"type": "x", "customer_id": "c", "at": "2026-01-01", "data": {"a": 1,\t"a"\n:2}}', "duplicate key 'a'"),
    ('{"type": "x", "customer_id": "c", "at": "2026-01-01", "data": [{"b": 1}, {"b": 2, "b": 3}]}',
     "duplicate key 'b'"),
    ('{"type": "x", "customer_id": "c", "at": "2026-01-01", "data": {"n": 12345678901234567890123}}', "n"),
])
def test_the_fast_decoder_leaves_duplicates_and_huge_integers_to_the_checks(line, fragment):
    with pytest.raises(EventError, match=fragment):
        parse_event_line(line, default_tz=timezone.utc)


def test_a_value_with_a_quote_and_a_colon_is_read_whole():
    line = ('{"type": "chat.received", "customer_id": "c", "at": "2026-01-01", '
            '"data": {"text": "he said \\":\\" twice"}}')
    assert parse_event_line(line, default_tz=timezone.utc).data == {"text": 'he said ":" twice'}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@given(value=JSON_VALUES, duplicate=st.booleans(), spaced=st.booleans())
def test_the_fast_decoder_agrees_with_the_standard_one(value, duplicate, spaced):
    """Whatever orjson's result, it is taken only when it equals what the checked standard decoder gives."""
    text = json.dumps({"v": value}, ensure_ascii=False, separators=(", ", " : ") if spaced else (",", ":"))
    if duplicate:
        text = text[:-1] + ', "v": 0}'
    try:
        expected = json.loads(text, object_pairs_hook=events._unique_keys, parse_constant=events._reject_constant)
    except ValueError:
        expected = events._UNDECIDED  # the standard decoder refuses it: the fast path must not take it
    fast = events._decode_without_duplicates(text)
    if fast is not events._UNDECIDED:
        assert fast == expected and json.dumps(fast) == json.dumps(expected)


@pytest.mark.parametrize("data, fragment", [
    ({"text": "a\x00b"}, "data.text: text must not contain the NUL character"),
    ({"items": ["ok", "bad\x00"]}, r"data.items\[1\]: text must not contain the NUL"),
    ({"k\x00": 1}, "data key: text must not contain the NUL"),
    ({"note": {"deep": "\ud800"}}, "data.note.deep: text is not valid Unicode"),
    ({"\udc00": 1}, "data key: text is not valid Unicode"),
    ({"n": [1, 2**60]}, r"data.n\[1\]: number out of range"),
])
def test_every_string_and_number_inside_data_is_checked(data, fragment):
    with pytest.raises(EventError, match=fragment):
        Event.from_dict(base(data=data), default_tz=SHANGHAI)


@given(text=st.text(max_size=200))
def test_any_line_is_an_event_or_an_event_error(text):
    """Whatever the text, parsing ends in an Event or an EventError: never another exception."""
    try:
        parse_event_line(text, default_tz=timezone.utc)
    except EventError:
        pass


@pytest.mark.parametrize("depth", [33, 500, 990, 1000, 1020, 1023, 1024, 1025, 3000])
@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"k": ', "}")])
def test_nesting_past_the_recursion_limit_is_an_event_error(depth, opening, closing):
    line = ('{"type": "x", "customer_id": "c", "at": "2026-01-01", "data": {"a": '
            + opening * depth + "1" + closing * depth + "}}")
    with pytest.raises(EventError, match="nested deeper|not valid JSON"):
        parse_event_line(line, default_tz=timezone.utc)
