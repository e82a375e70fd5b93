"""Events: the validated value every input line becomes, its canonical JSON and synthetic ids."""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

import attrs
import orjson

from rulecrm.engine.birthdays import parse_birthday
from rulecrm.errors import EventError
from rulecrm.schema import BUILTIN_EVENT_TYPES
from rulecrm.suggest import did_you_mean
from rulecrm.timeutil import get_zone, isoformat, parse_duration, parse_timestamp, zone_names

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


# Input limits. A value that passes validation must be processable end to end, so everything the
# engine could not store, compare or do arithmetic on is refused here, with the field named.
MAX_NUMBER = 2**53 - 1  # the largest integer a float (and a JSON reader in any language) holds exactly
MAX_DEPTH = 32  # nesting of objects and arrays inside `data`
# Event times: with delays of at most 100 years (bounded at `check`), quiet-hour windows, calendar
# periods and birthdays, every instant the engine derives from these stays far inside datetime's range.
EARLIEST_AT = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_AT = datetime(2200, 1, 1, tzinfo=timezone.utc)


def check_text(value: str, path: str) -> None:
    """A string the store and every channel can carry: valid Unicode (no lone surrogates), no NUL."""
    if "\x00" in value:
        raise EventError(f"{path}: text must not contain the NUL character (\\u0000)", field=path)
    if value.isascii():
        return  # no surrogate is ASCII: most text needs no encoding to tell
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EventError(
            f"{path}: text is not valid Unicode (a lone surrogate \\u{ord(value[exc.start]):04x} at "
            f"character {exc.start + 1}); encode the text as UTF-8 before writing it", field=path,
        ) from None


def _check_values(value: Any, path: str) -> None:
    """Numbers finite and in range, strings (keys too) valid Unicode, nesting bounded; iteratively,
    so the input's own depth cannot exhaust the stack."""
    stack = [(value, path, 0, path)]
    while stack:
        value, path, depth, top = stack.pop()  # top: the data field this value is inside
        if isinstance(value, str):
            check_text(value, path)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, float) and not math.isfinite(value):
            raise EventError(f"{path}: expected a finite number, found {value!r}", field=path)
        elif isinstance(value, (int, float)) and abs(value) > MAX_NUMBER:
            shown = f"{value:.3g}" if isinstance(value, float) or value.bit_length() > 200 else str(value)
            raise EventError(
                f"{path}: number out of range, found {shown}; numbers must lie within ±{MAX_NUMBER} "
                "(send identifiers and other long digit strings as strings)", field=path,
            )
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise EventError(f"{top}: nested deeper than {MAX_DEPTH} levels; flatten the data", field=top)
            if isinstance(value, dict):
                for key, item in value.items():
                    if not _plain(key):
                        check_text(key, f"{path} key")
                    # `_plain(item)` written out for the exact types JSON gives (this runs on every
                    # field of every event); anything else gets the full check below
                    kind = type(item)
                    if kind is str:
                        if "\x00" not in item and item.isascii():
                            continue
                    elif kind is int or kind is float:
                        if -MAX_NUMBER <= item <= MAX_NUMBER:
                            continue
                    elif item is None or kind is bool:
                        continue
                    # only what may fail gets its path built
                    stack.append((item, f"{path}.{key}", depth + 1, top if depth else f"{path}.{key}"))
            else:
                stack.extend((item, f"{path}[{index}]", depth + 1, top) for index, item in enumerate(value)
                             if not _plain(item))


def _plain(value: Any) -> bool:
    """A scalar that passes every check of `_check_values` as it is: the usual case, told cheaply."""
    if isinstance(value, str):
        return "\x00" not in value and value.isascii()
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return -MAX_NUMBER <= value <= MAX_NUMBER  # false for NaN and infinities too
    return False


def check_instant(value: datetime, path: str) -> None:
    """An instant the engine can compute with (see EARLIEST_AT and LATEST_AT)."""
    if not EARLIEST_AT <= value < LATEST_AT:
        raise EventError(
            f"{path}: {value.isoformat()} is outside the supported range "
            f"{EARLIEST_AT.year}-01-01 to {LATEST_AT.year - 1}-12-31", field=path,
        )


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
            check_instant(parse_timestamp(value, timezone.utc), "")
        except (ValueError, EventError):
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
    "timestamp": f"an ISO 8601 timestamp string between {EARLIEST_AT.year} and {LATEST_AT.year - 1}",
    "duration": "a duration such as 30d",
}


def _check_builtin_data(type_: str, data: dict, at: datetime) -> None:
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
    if type_ == "customer.upserted":
        _check_profile_data(data, at)
    if type_ == "order.placed":
        amount = data.get("amount")
        if amount is not None and amount < 0:
            raise EventError(
                f"data.amount: an order.placed amount cannot be negative, found {amount!r}; "
                "send refunds as order.refunded",
                field="data.amount",
            )


def _check_profile_data(data: dict, at: datetime) -> None:
    """A birthday that exists and is not after the event; a time zone the engine knows."""
    birthday = data.get("birthday")
    if isinstance(birthday, str) and birthday.strip():
        parsed = parse_birthday(birthday)
        if parsed is None:
            raise EventError(
                f"data.birthday: expected a date such as 1990-05-17 or 05-17, found {_describe(birthday)}",
                field="data.birthday",
            )
        year, month, day = parsed
        if year is not None:
            try:
                born = date(year, month, day)
            except ValueError:
                raise EventError(f"data.birthday: {birthday.strip()} does not exist (no such day that year)",
                                 field="data.birthday") from None
            if year < EARLIEST_AT.year or born > at.date():
                raise EventError(
                    f"data.birthday: {born.isoformat()} is not a possible birthday on {at.date().isoformat()} "
                    f"(it must lie between {EARLIEST_AT.year}-01-01 and the event's date)", field="data.birthday",
                )
    zone = data.get("timezone")
    if isinstance(zone, str) and zone.strip():
        try:
            get_zone(zone)
        except ValueError:
            hint = did_you_mean(zone, sorted(zone_names()))
            raise EventError(
                f"data.timezone: unknown time zone {zone!r}; use an IANA name such as Asia/Shanghai"
                + (f"; {hint}" if hint else ""), field="data.timezone",
            ) from None


def _identifier(obj: Mapping, key: str, *, required: bool) -> str | None:
    """A non-empty string field; an integer is accepted and written in decimal."""
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        check_text(value, key)
        return value
    found = "nothing" if value is None else _describe(value)
    raise EventError(f"{key}: expected a non-empty string (or an integer), found {found}", field=key)


_new_object, _set_field = object.__new__, object.__setattr__  # how a frozen attrs class sets its fields


@attrs.frozen
class Event:
    """One thing that happened to a customer, validated; `data` is a plain dict treated as read-only."""

    type: str = attrs.field(validator=attrs.validators.instance_of(str))
    customer_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    at: datetime = attrs.field()
    data: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    id: str | None = None
    # `to_json`'s text, made once: the engine stores it, and the http source compares it with the
    # stored text to tell that the event was applied
    _json: str | None = attrs.field(default=None, init=False, eq=False, hash=False, repr=False)

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
        if self._json is None:
            text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False)
            object.__setattr__(self, "_json", text)
        return self._json

    @classmethod
    def made(cls, type: str, customer_id: str, at: datetime, data: Mapping[str, Any], id: str | None) -> Event:
        """An event whose fields are valid by construction (rulecrm made it, or it copies a validated
        event's), built without the validators: about half the cost of building one (1.0 µs of 2.0 µs),
        paid at every lifecycle transition (`stage.changed`) and for every event of a sort's run file."""
        event = _new_object(cls)
        _set_field(event, "type", type)
        _set_field(event, "customer_id", customer_id)
        _set_field(event, "at", at)
        _set_field(event, "data", data)
        _set_field(event, "id", id)
        _set_field(event, "_json", None)
        return event

    @classmethod
    def from_stored(cls, obj: dict) -> Event:
        """An event rulecrm wrote itself (`to_dict`) after validating it: read back without checking again."""
        return cls(type=obj["type"], customer_id=obj["customer_id"], at=parse_timestamp(obj["at"], timezone.utc),
                   data=obj["data"], id=obj.get("id"))

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
        check_text(type_, "type")
        customer_id = _identifier(obj, "customer_id", required=True)
        event_id = _identifier(obj, "id", required=False)
        if "at" not in obj or obj["at"] is None:
            raise EventError("at: expected an ISO 8601 timestamp such as 2026-03-01T10:15:00+08:00, found nothing",
                             field="at")
        try:
            at = parse_timestamp(obj["at"], default_tz)
        except ValueError as exc:
            raise EventError(f"at: {exc}", field="at") from None
        check_instant(at, "at")
        data = obj.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise EventError(f"data: expected an object, found {_describe(data)}", field="data")
        _check_values(data, "data")
        _check_builtin_data(type_, data, at)
        return cls(type=type_, customer_id=customer_id, at=at, data=data, id=event_id)


_UNDECIDED = object()
_ORJSON_EXACT = 2.0**63
_KEY_END = re.compile(r'"\s*:')


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number; use a finite number or null")


def _unique_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _count_keys(value) -> int:
    """The keys of every object in a decoded value; -1 when it holds a float as large as 2^63, which is
    how orjson reads an integer past 64 bits (the standard decoder keeps it exact). Iterative: orjson
    accepts nesting deeper than Python's recursion limit."""
    # orjson makes exact dicts, lists and floats (no subclasses): `type(...) is` tells them apart, and
    # only containers go on the stack, since most values are scalars (this runs on every input line)
    total = 0
    stack = [[value]]  # the value as an array's item, so that a scalar at the top is looked at too
    while stack:
        item = stack.pop()
        if type(item) is dict:
            total += len(item)
            item = item.values()
        for inner in item:
            kind = type(inner)
            if kind is dict or kind is list:
                stack.append(inner)
            elif kind is float and not -_ORJSON_EXACT < inner < _ORJSON_EXACT:
                return -1
    return total


def _decode_without_duplicates(line: str):
    """The line's JSON through orjson, or _UNDECIDED when the standard decoder must judge it.

    orjson keeps the last of duplicate keys silently, so its result is taken only when the text
    cannot hold any: every key ends with a quote and a colon (whitespace between), so a text with
    no more such ends than orjson's result has keys has no key twice. Anything orjson refuses
    (NaN, integers past 64 bits, lone surrogates) also goes to the standard decoder, for its
    checks and messages.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _UNDECIDED
    if _count_keys(obj) != len(_KEY_END.findall(line)):
        return _UNDECIDED  # a duplicate key, a value holding a quote and a colon, or a huge integer
    return obj


def parse_event_line(line: str, *, default_tz) -> Event:
    """One JSONL line to an Event; raises EventError (not JSON, wrong shape, bad field)."""
    obj = _decode_without_duplicates(line)
    if obj is not _UNDECIDED:
        return Event.from_dict(obj, default_tz=default_tz)
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


def id_conflict(event_id: str | None) -> str:
    """The error of an event whose id was applied before with other content."""
    return (f"id {event_id!r} was already used by a different event, so this one was not applied; "
            "give it an id of its own (or resend the original event unchanged)")


def fingerprint(event: Event) -> str:
    """What makes two events with one id the same event: type, customer, instant and data.

    The instant, not its spelling: the same time written with another offset is the same event.
    """
    body = orjson.dumps([event.type, event.customer_id, event.at.timestamp(), event.data],
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def synthetic_id(event: Event, occurrence: int, *, digest: str | None = None) -> str:
    """Deterministic id for an id-less event: its content plus its occurrence number (1, 2, ...)."""
    if occurrence < 1:
        raise ValueError("occurrence numbers start at 1")
    digest = digest or content_digest(event)
    mixed = hashlib.sha256(f"{digest}:{occurrence}".encode("ascii")).hexdigest()
    return SYNTHETIC_ID_PREFIX + mixed[:32]
