"""The customer profile: facts derived from events, and the mapping rules read as `customer.<field>`."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rulecrm.schema import ITEM_LIFECYCLES
from rulecrm.timeutil import parse_timestamp

_PROFILE_KEYS = ("name", "phone", "email", "wecom_id", "owner", "birthday", "timezone", "source", "channel")
_TIMESTAMP_KEYS = ("first_order_at", "last_order_at", "last_delivered_at", "first_seen_at")


def _new_per_key() -> dict[str, Any]:
    return {"order_count": 0, "total_spent": 0.0, "last_order_at": None, "last_order": None}


class Profile:
    """Mutable per-customer state. `mapping()` is rebuilt only after a change (it is read on every rule)."""

    __slots__ = (
        "id", "fields", "attributes", "order_count", "total_spent", "refund_count",
        "first_order_at", "last_order_at", "last_order", "last_delivered_at", "first_seen_at",
        "by_sku", "by_category", "tags", "stage", "opted_out", "is_contact",
        "open_reviews", "open_complaints", "order_times", "sends", "true_rules", "settled", "_mapping",
    )

    def __init__(self, customer_id: str):
        self.id = customer_id
        self.fields: dict[str, Any] = {}
        self.attributes: dict[str, Any] = {}
        self.order_count = 0
        self.total_spent = 0.0
        self.refund_count = 0
        self.first_order_at: datetime | None = None
        self.last_order_at: datetime | None = None
        self.last_order: dict | None = None
        self.last_delivered_at: datetime | None = None
        self.first_seen_at: datetime | None = None
        self.by_sku: dict[str, dict] = {}
        self.by_category: dict[str, dict] = {}
        self.tags: set[str] = set()
        self.stage = "new"
        self.opted_out = False
        self.is_contact = False
        self.open_reviews: set[str] = set()
        self.open_complaints: set[str] = set()
        self.order_times: dict[str, list[float]] = {}  # sku -> epoch of each order (learn_cycle skus only)
        self.sends: list[tuple[int, str, str | None]] = []  # (epoch µs, kind, channel), pruned to the caps horizon
        self.true_rules: set[str] = set()  # profile rules whose condition held at the last evaluation
        # In memory only: the profile rules reached a fixpoint at their last evaluation and nothing they
        # read has changed since (see Engine._run_profile_rules); a profile read from the store is not.
        self.settled = False
        self._mapping: dict | None = None

    # -- reading -------------------------------------------------------------------------
    def changed(self) -> None:
        self._mapping = None

    def release(self) -> None:
        """Forget the cached mapping once the customer's evaluation is over: the next event changes
        the profile anyway, and keeping it would cost every resident customer ~1.5 KB."""
        self._mapping = None

    def mapping(self) -> dict[str, Any]:
        if self._mapping is None:
            self._mapping = {
                "id": self.id,
                **self.fields,
                "attributes": self.attributes,
                "order_count": self.order_count,
                "total_spent": self.total_spent,
                "refund_count": self.refund_count,
                "first_order_at": self.first_order_at,
                "last_order_at": self.last_order_at,
                "last_order": self.last_order,
                "last_delivered_at": self.last_delivered_at,
                "first_seen_at": self.first_seen_at,
                "sku": self.by_sku,
                "category": self.by_category,
                "tags": frozenset(self.tags),
                "stage": self.stage,
                "opted_out": self.opted_out,
                "is_contact": self.is_contact,
                "open_reviews": len(self.open_reviews),
                "open_complaints": len(self.open_complaints),
            }
        return self._mapping

    # -- built-in effects of events -------------------------------------------------------
    def apply(self, event, *, learn_skus=frozenset()) -> frozenset[str]:
        """Apply a built-in event type's effect; returns the fields of `mapping()` it changed (empty: none)."""
        if self.first_seen_at is None:
            # not reported: a new profile's rules are evaluated at its first change anyway (`settled`)
            self.first_seen_at = event.at
        handler = _EFFECTS.get(event.type)
        changed = handler(self, event, learn_skus) if handler else _NOTHING
        if changed:
            self._mapping = None
        return changed

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = {
            "id": self.id, "fields": self.fields, "attributes": self.attributes,
            "order_count": self.order_count, "total_spent": self.total_spent,
            "refund_count": self.refund_count, "last_order": self.last_order,
            "by_sku": _dump_per_key(self.by_sku), "by_category": _dump_per_key(self.by_category),
            "tags": sorted(self.tags), "stage": self.stage, "opted_out": self.opted_out,
            "is_contact": self.is_contact, "open_reviews": sorted(self.open_reviews),
            "open_complaints": sorted(self.open_complaints), "order_times": self.order_times,
            "sends": self.sends, "true_rules": sorted(self.true_rules),
        }
        for key in _TIMESTAMP_KEYS:
            value = getattr(self, key)
            data[key] = value.isoformat() if value else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        profile = cls(data["id"])
        for key in ("fields", "attributes", "order_count", "total_spent", "refund_count",
                    "last_order", "stage", "opted_out", "is_contact", "order_times"):
            setattr(profile, key, data[key])
        profile.by_sku = _load_per_key(data["by_sku"])
        profile.by_category = _load_per_key(data["by_category"])
        profile.tags = set(data["tags"])
        profile.open_reviews = set(data["open_reviews"])
        profile.open_complaints = set(data["open_complaints"])
        profile.sends = [tuple(s) for s in data["sends"]]
        profile.true_rules = set(data["true_rules"])
        for key in _TIMESTAMP_KEYS:
            value = data[key]
            setattr(profile, key, parse_timestamp(value, timezone.utc) if value else None)
        return profile


def _dump_per_key(table):
    return {
        k: {**v, "last_order_at": v["last_order_at"].isoformat() if v["last_order_at"] else None}
        for k, v in table.items()
    }


def _load_per_key(table):
    return {
        k: {**v, "last_order_at": parse_timestamp(v["last_order_at"], timezone.utc) if v["last_order_at"] else None}
        for k, v in table.items()
    }


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


# Each effect returns the fields of `Profile.mapping()` it may have changed: the engine re-evaluates
# the profile rules only when they read one of them.
def _upserted(profile, event, _learn):
    changed = set()
    for key, value in event.data.items():
        if key in _PROFILE_KEYS:
            if value is None:
                profile.fields.pop(key, None)
            else:
                profile.fields[key] = value
            changed.add(key)
        elif key == "attributes" and isinstance(value, dict):
            profile.attributes.update(value)
            changed.add("attributes")
        else:
            profile.attributes[key] = value
            changed.add("attributes")
    return frozenset(changed) or _UPSERTED_NOTHING


def _contact_added(profile, event, _learn):
    profile.is_contact = True
    for key in ("wecom_id", "owner", "source"):
        if isinstance(event.data.get(key), str):
            profile.fields[key] = event.data[key]
    return _CONTACT_ADDED


def _contact_removed(profile, event, _learn):
    profile.is_contact = False
    return _CONTACT


def _order_placed(profile, event, learn_skus):
    data = event.data
    amount = _number(data.get("amount")) or 0
    profile.order_count += 1
    profile.total_spent += amount
    if profile.first_order_at is None:
        profile.first_order_at = event.at
    profile.last_order_at = event.at
    profile.last_order = dict(data)
    for table, key in ((profile.by_sku, data.get("sku")), (profile.by_category, data.get("category"))):
        if isinstance(key, str):
            entry = table.get(key) or table.setdefault(key, _new_per_key())
            entry["order_count"] += 1
            entry["total_spent"] += amount
            entry["last_order_at"] = event.at
            entry["last_order"] = profile.last_order
    sku = data.get("sku")
    if sku in learn_skus:
        profile.order_times.setdefault(sku, []).append(event.at.timestamp())
    return _ORDER_PLACED


def _order_delivered(profile, event, _learn):
    profile.last_delivered_at = event.at
    return _DELIVERED


def _order_refunded(profile, event, _learn):
    profile.refund_count += 1
    profile.total_spent -= _number(event.data.get("amount")) or 0
    return _REFUNDED


def _id_set_effect(attr, field, add):
    changed = frozenset({attr})  # `mapping()` shows the set's size under the same name

    def effect(profile, event, _learn):
        key = event.data.get(field)
        if not isinstance(key, str):
            return _NOTHING
        (getattr(profile, attr).add if add else getattr(profile, attr).discard)(key)
        return changed
    return effect


def _opted(value):
    def effect(profile, event, _learn):
        profile.opted_out = value
        return _OPTED
    return effect


_NOTHING: frozenset[str] = frozenset()
_ORDER_PLACED = frozenset({
    "order_count", "total_spent", "first_order_at", "last_order_at", "last_order", "sku", "category",
})
_UPSERTED_NOTHING = frozenset({"attributes"})  # an upsert with no data still counts as a change, as it always has
_CONTACT = frozenset({"is_contact"})
_CONTACT_ADDED = frozenset({"is_contact", "wecom_id", "owner", "source"})
_DELIVERED = frozenset({"last_delivered_at"})
_REFUNDED = frozenset({"refund_count", "total_spent"})
_OPTED = frozenset({"opted_out"})


_EFFECTS = {
    "customer.upserted": _upserted,
    "contact.added": _contact_added,
    "contact.removed": _contact_removed,
    "order.placed": _order_placed,
    "order.delivered": _order_delivered,
    "order.refunded": _order_refunded,
    "customer.opted_out": _opted(True),
    "customer.opted_in": _opted(False),
}
_OPEN_ITEMS = {"review.created": "open_reviews", "complaint.opened": "open_complaints"}
for _opening, (_field, _closing) in ITEM_LIFECYCLES.items():
    _EFFECTS[_opening] = _id_set_effect(_OPEN_ITEMS[_opening], _field, True)
    _EFFECTS[_closing] = _id_set_effect(_OPEN_ITEMS[_opening], _field, False)
