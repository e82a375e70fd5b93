"""Converters from the real data in tests/data to event JSONL, for benchmarks and end-to-end tests.

Timestamps are written without an offset, as in the sources: they are read in the shop's time zone.
`src`/`dst` may be paths or open text streams; every converter returns the number of events written.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

REVIEWS_FILE = "olist_order_reviews_dataset.csv"
ORDERS_FILE = "olist_orders_dataset.csv"
ITEMS_FILE = "olist_order_items_dataset.csv"
PRODUCTS_FILE = "olist_products_dataset.csv"
CATEGORIES_FILE = "product_category_name_translation.csv"


@contextlib.contextmanager
def _output(dst):
    """A writable text stream for a path (created) or an already open stream (left open)."""
    if isinstance(dst, (str, os.PathLike)):
        with open(dst, "w", encoding="utf-8", newline="\n") as stream:
            yield stream
    else:
        yield dst


def _write(stream, event: dict) -> None:
    stream.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")


def _csv_rows(path: Path) -> Iterator[dict]:
    with open(path, newline="", encoding="utf-8-sig") as stream:
        yield from csv.DictReader(stream)


def _iso(text: str) -> str:
    """'2018-01-18 21:46:59' -> '2018-01-18T21:46:59' (naive: read in the shop's zone)."""
    return text.strip().replace(" ", "T", 1)


def cdnow_events(src, dst) -> int:
    """CDNOW_master.txt -> order.placed events in file order; ids are "cdnow-<line number in src>"."""
    count = 0
    source = open(src, encoding="ascii") if isinstance(src, (str, os.PathLike)) else contextlib.nullcontext(src)
    with source as lines, _output(dst) as out:
        for line_no, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or not fields[0].isdigit():
                continue  # blank line or the header
            customer_id, day, cds, dollars = fields
            event_id = f"cdnow-{line_no}"
            _write(
                out,
                {
                    "id": event_id,
                    "type": "order.placed",
                    "customer_id": customer_id,
                    "at": f"{day[:4]}-{day[4:6]}-{day[6:8]}T00:00:00",
                    "data": {
                        "order_id": event_id,
                        "sku": "cd",
                        "category": "music",
                        "quantity": int(cds),
                        "amount": float(dollars),
                    },
                },
            )
            count += 1
    return count


def olist_review_events(src_dir, dst) -> int:
    """Olist reviews -> review.created (and review.handled when the seller answered) per review row.

    The sample has no customer ids for reviews, so the customer is "olist-<order_id>". A review id
    can appear on several orders, so event ids name both.
    """
    count = 0
    with _output(dst) as out:
        for row in _csv_rows(Path(src_dir) / REVIEWS_FILE):
            review_id, order_id = row["review_id"], row["order_id"]
            customer_id = f"olist-{order_id}"
            parts = [row["review_comment_title"].strip(), row["review_comment_message"].strip()]
            _write(
                out,
                {
                    "id": f"olist-review-{review_id}-{order_id}",
                    "type": "review.created",
                    "customer_id": customer_id,
                    "at": _iso(row["review_creation_date"]),
                    "data": {
                        "review_id": review_id,
                        "order_id": order_id,
                        "rating": int(row["review_score"]),
                        "text": " - ".join(part for part in parts if part),
                    },
                },
            )
            count += 1
            if row["review_answer_timestamp"].strip():
                _write(
                    out,
                    {
                        "id": f"olist-review-handled-{review_id}-{order_id}",
                        "type": "review.handled",
                        "customer_id": customer_id,
                        "at": _iso(row["review_answer_timestamp"]),
                        "data": {"review_id": review_id, "order_id": order_id, "by": "seller"},
                    },
                )
                count += 1
    return count


def _order_items(src_dir: Path) -> dict[str, dict]:
    """Per order: amount, quantity, first item's sku and its English category (when the files have them)."""
    if not (src_dir / ITEMS_FILE).exists():
        return {}
    categories = {}
    if (src_dir / CATEGORIES_FILE).exists():
        categories = {
            row["product_category_name"]: row["product_category_name_english"]
            for row in _csv_rows(src_dir / CATEGORIES_FILE)
        }
    product_category = {}
    if (src_dir / PRODUCTS_FILE).exists():
        for row in _csv_rows(src_dir / PRODUCTS_FILE):
            name = row["product_category_name"]
            if name:
                product_category[row["product_id"]] = categories.get(name, name)
    orders: dict[str, dict] = {}
    for row in _csv_rows(src_dir / ITEMS_FILE):
        summary = orders.setdefault(row["order_id"], {"amount": 0.0, "quantity": 0, "first": None})
        summary["amount"] = round(summary["amount"] + float(row["price"]), 2)
        summary["quantity"] += 1
        item_no = int(row["order_item_id"])
        if summary["first"] is None or item_no < summary["first"][0]:
            summary["first"] = (item_no, row["product_id"])
    result = {}
    for order_id, summary in orders.items():
        sku = summary["first"][1]
        data = {"sku": sku, "amount": summary["amount"], "quantity": summary["quantity"]}
        if sku in product_category:
            data["category"] = product_category[sku]
        result[order_id] = data
    return result


def olist_order_events(src_dir, dst) -> int:
    """Olist orders -> order.placed at purchase time and order.delivered when delivered to the customer."""
    src_dir = Path(src_dir)
    items = _order_items(src_dir)
    count = 0
    with _output(dst) as out:
        for row in _csv_rows(src_dir / ORDERS_FILE):
            order_id, customer_id = row["order_id"], row["customer_id"]
            data = {"order_id": order_id, "platform": "olist", "status": row["order_status"], **items.get(order_id, {})}
            _write(
                out,
                {
                    "id": f"olist-order-{order_id}",
                    "type": "order.placed",
                    "customer_id": customer_id,
                    "at": _iso(row["order_purchase_timestamp"]),
                    "data": data,
                },
            )
            count += 1
            if row["order_delivered_customer_date"].strip():
                _write(
                    out,
                    {
                        "id": f"olist-delivered-{order_id}",
                        "type": "order.delivered",
                        "customer_id": customer_id,
                        "at": _iso(row["order_delivered_customer_date"]),
                        "data": {"order_id": order_id},
                    },
                )
                count += 1
    return count
