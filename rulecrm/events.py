"""Events: the validated value every input line becomes, its canonical JSON and synthetic ids."""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from rulecrm.errors import EventError
from rulecrm.schema import BUILTIN_EVENT_TYPES
from rulecrm.suggest import did_you_mean
from rulecrm.timeutil import isoformat, parse_duration, parse_timestamp

ENVELOPE_KEYS = ("type", "customer_id", "at", "id", "data")
SYNTHETIC_ID_PREFIX = "auto-"


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages: `42 (number)`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (number)"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"{text!r} (string)"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_finite(value: Any, path: str) -> None:
    """Reject NaN and infinities anywhere inside a JSON value (iteratively: nesting depth is the input's)."""
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise EventError(f"{path}: expected a finite number, found {value!r}", field=path)
        if isinstance(value, dict):
            stack.extend((item, f"{path}.{key}") for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))


def _value_matches(value: Any, kind: str) -> bool:
    """Whether a data value has the schema value type `kind` (see rulecrm.schema)."""
    if kind == "number":
        return _is_number(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "mapping":
        return isinstance(value, dict)
    if kind == "tags":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "timestamp":
        try:
            parse_timestamp(value, None)
        except ValueError:
            return False
        return True
    if kind == "duration":
        if _is_number(value):
            return True
        try:
            parse_duration(value)
        except (ValueError, AttributeError):
            return False
        return True
    return True


_EXPECTED = {
    "number": "a number",
    "string": "a string",
    "bool": "true or false",
    "mapping": "an object",
    "tags": "an array of strings",
    "timestamp": "an ISO 8601 timestamp string",
    "duration": "a duration such as 30d",
}


def _check_builtin_data(type_: str, data: dict) -> None:
    """Check the known fields of a built-in event type; unknown fields are allowed."""
    fields = BUILTIN_EVENT_TYPES.get(type_)
    if fields is None:
        return
    for name, kind in fields.items():
        value = data.get(name)
        if value is None:
            continue  # absent or explicitly null: a rule comparing it sees a missing field
        if not _value_matches(value, kind):
            raise EventError(
                f"data.{name}: a {type_} event expects {_EXPECTED.get(kind, kind)}, found {_describe(value)}",
                field=f"data.{name}",
            )
    if type_ == "review.created":
        rating = data.get("rating")
        if not (isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 5):
            found = "nothing" if rating is None else _describe(rating)
            raise EventError(
                f"data.rating: a review.created event needs an integer rating from 1 to 5, found {found}",
                field="data.rating",
            )
    if type_ == "order.placed":
        amount = data.get("amount")
        if amount is not None and amount < 0:
            raise EventError(
                f"data.amount: an order.placed amount cannot be negative, found {amount!r}; "
                "send refunds as order.refunded",
                field="data.amount",
            )


def _identifier(obj: Mapping, key: str, *, required: bool) -> str | None:
    """A non-empty string field; an integer is accepted and written in decimal."""
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    found = "nothing" if value is None else _describe(value)
    raise EventError(f"{key}: expected a non-empty string (or an integer), found {found}", field=key)


@attrs.frozen
class Event:
    """One thing that happened to a customer, validated; `data` is a plain dict treated as read-only."""

    type: str = attrs.field(validator=attrs.validators.instance_of(str))
    customer_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    at: datetime = attrs.field()
    data: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    id: str | None = None

    @at.validator
    def _aware(self, attribute, value):
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"Event.at must be a time-zone-aware datetime, found {value!r}")

    def as_mapping(self) -> dict[str, Any]:
        """What `event.<field>` reads: the data fields plus type, at, customer_id and id."""
        mapping = dict(self.data)
        mapping.update(type=self.type, at=self.at, customer_id=self.customer_id, id=self.id)
        return mapping

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this event (`at` as ISO 8601 with offset, `id` only when set)."""
        obj: dict[str, Any] = {
            "type": self.type,
            "customer_id": self.customer_id,
            "at": isoformat(self.at),
            "data": dict(self.data),
        }
        if self.id is not None:
            obj["id"] = self.id
        return obj

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no extra whitespace, `at` as ISO 8601 with offset."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, obj: Any, *, default_tz) -> Event:
        """Validate a decoded JSON object; raises EventError naming the offending field."""
        if not isinstance(obj, dict):
            raise EventError(f"expected a JSON object, found {_describe(obj)}")
        for key in obj:
            if key not in ENVELOPE_KEYS:
                hint = did_you_mean(key, ENVELOPE_KEYS)
                message = f"unknown top-level key {key!r}; allowed: {', '.join(ENVELOPE_KEYS)}"
                if hint is None:
                    message += "; put custom fields inside \"data\""
                raise EventError(f"{message}; {hint}" if hint else message, field=key)
        type_ = obj.get("type")
        if not isinstance(type_, str) or not type_.strip():
            found = "nothing" if type_ is None else _describe(type_)
            raise EventError(f"type: expected a non-empty string such as \"order.placed\", found {found}", field="type")
        customer_id = _identifier(obj, "customer_id", required=True)
        event_id = _identifier(obj, "id", required=False)
        if "at" not in obj or obj["at"] is None:
            raise EventError("at: expected an ISO 8601 timestamp such as 2026-03-01T10:15:00+08:00, found nothing", field="at")
        try:
            at = parse_timestamp(obj["at"], default_tz)
        except ValueError as exc:
            raise EventError(f"at: {exc}", field="at") from None
        data = obj.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise EventError(f"data: expected an object, found {_describe(data)}", field="data")
        _check_finite(data, "data")
        _check_builtin_data(type_, data)
        return cls(type=type_, customer_id=customer_id, at=at, data=data, id=event_id)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number; use a finite number or null")


def _unique_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def parse_event_line(line: str, *, default_tz) -> Event:
    """One JSONL line to an Event; raises EventError (not JSON, wrong shape, bad field)."""
    try:
        obj = json.loads(line, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise EventError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise EventError(f"not valid JSON: {exc}") from None
    return Event.from_dict(obj, default_tz=default_tz)


def content_digest(event: Event) -> str:
    """SHA-256 of the event's canonical JSON without its id: equal content, equal digest."""
    obj = {"type": event.type, "customer_id": event.customer_id, "at": isoformat(event.at), "data": event.data}
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def synthetic_id(event: Event, occurrence: int, *, digest: str | None = None) -> str:
    """Deterministic id for an id-less event: its content plus its occurrence number (1, 2, ...)."""
    if occurrence < 1:
        raise ValueError("occurrence numbers start at 1")
    digest = digest or content_digest(event)
    mixed = hashlib.sha256(f"{digest}:{occurrence}".encode("ascii")).hexdigest()
    return SYNTHETIC_ID_PREFIX + mixed[:32]
