"""The validated, immutable form of a rules directory: what the engine and the backends consume."""
from __future__ import annotations

from datetime import time, timedelta, tzinfo
from typing import Any

import attrs

NOTIFY_KINDS = ("marketing", "service", "transactional")


@attrs.frozen
class Source:
    """Where a rule-file item was written (for messages and `explain`)."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@attrs.frozen
class Shop:
    timezone_name: str = "UTC"
    timezone: tzinfo = attrs.field(default=None)
    quiet_hours: tuple[time, time] | None = None  # (start, end) local; may wrap midnight
    quiet_kinds: frozenset[str] = frozenset({"marketing"})


@attrs.frozen
class Product:
    sku: str
    name: str | None = None
    category: str | None = None
    cycle: timedelta | None = None
    learn_cycle: bool = False
    learn_min_orders: int = 3
    price: float | None = None

    def as_mapping(self) -> dict[str, Any]:
        """What `product.<field>` and `{product.<field>}` can read."""
        return {
            "sku": self.sku,
            "name": self.name,
            "category": self.category,
            "cycle": self.cycle,
            "learn_cycle": self.learn_cycle,
            "learn_min_orders": self.learn_min_orders,
            "price": self.price,
        }


@attrs.frozen
class Channel:
    """A named channel instance; `settings` are the remaining keys (validated by the type's plugin)."""

    name: str
    type: str
    settings: tuple[tuple[str, Any], ...] = ()
    source: Source | None = None

    def setting(self, key, default=None):
        return dict(self.settings).get(key, default)


@attrs.frozen
class Contact:
    name: str
    channel: str
    address: str
    source: Source | None = None


@attrs.frozen
class Cap:
    """A frequency cap. For window "calendar", `period` is "day", "week" or "month"."""

    id: str
    kinds: frozenset[str] = frozenset({"marketing"})
    max: int = 1
    per: timedelta | None = None  # rolling windows
    window: str = "rolling"  # "rolling" | "calendar"
    period: str | None = None  # calendar windows: "day" | "week" | "month"
    on_cap: str = "suppress"  # "suppress" | "defer"
    channels: frozenset[str] | None = None  # only sends on these channels count and are capped
    per_channel: bool = False  # count each channel separately
    source: Source | None = None


@attrs.frozen
class Lifecycle:
    growing_orders: int = 2
    mature_orders: int = 5
    dormant_after: timedelta = timedelta(days=90)
    churned_after: timedelta = timedelta(days=180)


@attrs.frozen
class Unless:
    """`unless: <event type> [same <field>]`."""

    event_type: str
    same: str | None = None


@attrs.frozen
class Notify:
    """`to` is "customer", "owner" or a contact name; channel/kind None means "use the default"."""

    to: str
    channel: str | None = None
    kind: str | None = None
    template: Any = None  # rulecrm.expr.templates.Template or None
    source: Source | None = None

    def resolved_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        return "marketing" if self.to == "customer" else "service"


@attrs.frozen
class Step:
    after: Any  # expression tree of a duration
    notify: Notify
    source: Source | None = None


@attrs.frozen
class Escalation:
    unless: Unless | None
    steps: tuple[Step, ...]


@attrs.frozen
class Rule:
    id: str
    index: int  # global order: files in name order, rules in file order; ties among timers use it
    source: Source
    on: str | None = None  # event type; None: profile rule
    description: str | None = None
    when: Any = None  # expression tree or None (always true)
    after: Any = None  # expression tree of a duration, or None
    unless: Unless | None = None
    tag: str | None = None
    untag: Any = False  # False, True, or an expression tree (explicit untag condition)
    notify: Notify | None = None
    escalate: Escalation | None = None
    recheck: Any = None  # expression tree or None
    at: time | None = None  # birthday rules: local time of day
    enabled: bool = True

    @property
    def is_profile_rule(self) -> bool:
        return self.on is None


@attrs.frozen
class RuleSet:
    shop: Shop
    products: tuple[Product, ...] = ()
    channels: tuple[Channel, ...] = ()
    contacts: tuple[Contact, ...] = ()
    caps: tuple[Cap, ...] = ()
    lifecycle: Lifecycle = Lifecycle()
    rules: tuple[Rule, ...] = ()  # enabled and disabled, in global order
    files: tuple[str, ...] = ()
    warnings: tuple = ()  # Diagnostic warnings found while loading

    def product(self, sku):
        return self._products_by_sku().get(sku)

    def channel(self, name):
        return {c.name: c for c in self.channels}.get(name)

    def contact(self, name):
        return {c.name: c for c in self.contacts}.get(name)

    def _products_by_sku(self):
        return {p.sku: p for p in self.products}

    @property
    def active_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)
