"""The `shop`, `products` and `lifecycle` sections."""
from __future__ import annotations

import re
from datetime import time

from rulecrm.rulefile.declared import Declared
from rulecrm.rulefile.fields import (
    INVALID,
    Fields,
    boolean,
    choice,
    duration,
    integer,
    mapping,
    names,
    number,
    sequence,
    text,
    type_error,
)
from rulecrm.rulefile.model import NOTIFY_KINDS, Lifecycle, Product, Shop
from rulecrm.rulefile.report import Report
from rulecrm.rulefile.yamlpos import Map, Scalar
from rulecrm.suggest import did_you_mean
from rulecrm.timeutil import format_duration, get_zone, is_zone_name, zone_names

SHOP_KEYS = ("timezone", "quiet_hours", "quiet_kinds")
PRODUCT_KEYS = ("sku", "name", "category", "cycle", "learn_cycle", "learn_min_orders", "price")
LIFECYCLE_KEYS = ("growing_orders", "mature_orders", "dormant_after", "churned_after")
PRODUCT_REQUIRED = ("sku",)
PRODUCT_MINIMUMS = {"learn_min_orders": 2, "price": 0}
LIFECYCLE_MINIMUMS = {"growing_orders": 1, "mature_orders": 1}
QUIET_HOURS = re.compile(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*")


def read_zone(report: Report, node, *, label: str):
    """An IANA time zone name; returns (name, ZoneInfo) or INVALID."""
    name = text(report, node, label=label)
    if name is INVALID:
        return INVALID
    if is_zone_name(name):
        try:
            return name, get_zone(name)
        except (ValueError, OSError):
            pass
    zones = zone_names()  # every name, for the hint
    by_lower = {zone.lower(): zone for zone in zones}
    hint = f"did you mean {by_lower[name.lower()]!r}?" if name.lower() in by_lower else did_you_mean(name, zones)
    report.error(node, f"unknown time zone {name!r}", expected="an IANA time zone such as Asia/Shanghai",
                 found=repr(name), hint=hint)
    return INVALID


def read_quiet_hours(report: Report, node, *, label: str):
    """`"HH:MM-HH:MM"` -> (start, end); the window may wrap midnight but not be empty."""
    expected = 'a window "HH:MM-HH:MM" such as "22:00-08:00"'
    match = QUIET_HOURS.fullmatch(node.text) if isinstance(node, Scalar) and node.kind == "string" else None
    if match is None:
        return type_error(report, node, label, expected)
    start = time(int(match.group(1)), int(match.group(2)))
    end = time(int(match.group(3)), int(match.group(4)))
    if start == end:
        report.error(node, "quiet hours start and end at the same time", expected=expected,
                     found=repr(node.text), hint='give two different times, e.g. "22:00-08:00"')
        return INVALID
    return start, end


def read_kinds(report: Report, node, *, label: str):
    """A list of notify kinds (marketing, service, transactional)."""
    values = names(report, node, label=label, item=choice, choices=NOTIFY_KINDS, what="kind")
    return INVALID if values is INVALID else frozenset(values)


def read_shop(report: Report, key: Scalar, node, declared: Declared) -> None:
    declared.claim(report, "section", "shop", key)
    if mapping(report, node, label="shop") is INVALID:
        return
    fields = Fields(report, node, SHOP_KEYS, what="shop")
    zone = fields.get("timezone", read_zone, ("UTC", get_zone("UTC")))
    quiet = fields.get("quiet_hours", read_quiet_hours)
    kinds = fields.get("quiet_kinds", read_kinds, frozenset({"marketing"}))
    if declared.shop is None and INVALID not in (zone, quiet, kinds):
        declared.shop = Shop(zone[0], zone[1], quiet, kinds)


def read_products(report: Report, key: Scalar, node, declared: Declared) -> None:
    if sequence(report, node, label="products") is INVALID:
        return
    for item in node.items:
        if mapping(report, item, label="products item") is INVALID:
            continue
        fields = Fields(report, item, PRODUCT_KEYS, what="product", required=PRODUCT_REQUIRED)
        sku = fields.get("sku", text)
        product = Product(
            sku=sku,
            name=fields.get("name", text),
            category=fields.get("category", text),
            cycle=fields.get("cycle", duration, positive=True),
            learn_cycle=fields.get("learn_cycle", boolean, False),
            learn_min_orders=fields.get("learn_min_orders", integer, 3, minimum=PRODUCT_MINIMUMS["learn_min_orders"]),
            price=fields.get("price", number, minimum=PRODUCT_MINIMUMS["price"]),
        )
        if sku and declared.claim(report, "product", sku, fields.value("sku")):
            declared.products[sku] = product


def read_lifecycle(report: Report, key: Scalar, node, declared: Declared) -> None:
    first = declared.claim(report, "section", "lifecycle", key)
    if mapping(report, node, label="lifecycle") is INVALID:
        return
    fields = Fields(report, node, LIFECYCLE_KEYS, what="lifecycle")
    default = Lifecycle()
    values = {
        "growing_orders": fields.get("growing_orders", integer, default.growing_orders,
                                     minimum=LIFECYCLE_MINIMUMS["growing_orders"]),
        "mature_orders": fields.get("mature_orders", integer, default.mature_orders,
                                    minimum=LIFECYCLE_MINIMUMS["mature_orders"]),
        "dormant_after": fields.get("dormant_after", duration, default.dormant_after, positive=True),
        "churned_after": fields.get("churned_after", duration, default.churned_after, positive=True),
    }
    _ordered(report, fields, node, values, "growing_orders", "mature_orders")
    _ordered(report, fields, node, values, "dormant_after", "churned_after")
    if first and INVALID not in values.values():
        declared.lifecycle = Lifecycle(**values)


def _ordered(report: Report, fields: Fields, node: Map, values: dict, low: str, high: str) -> None:
    if values[low] is INVALID or values[high] is INVALID or values[high] > values[low]:
        return
    at = fields.value(high) if high in fields else fields.value(low) if low in fields else node
    report.error(at, f"`{high}` must be greater than `{low}`",
                 expected=f"{high} > {low}", found=f"{high} {_show(values[high])}, {low} {_show(values[low])}")


def _show(value) -> str:
    return str(value) if isinstance(value, int) else format_duration(value)
