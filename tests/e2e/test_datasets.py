"""Tests for the converters of the real data sets to event JSONL."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:  # `bench` is a folder of the repository, not part of the installed package
    sys.path.insert(0, REPO)

from bench.datasets import cdnow_events, olist_order_events, olist_review_events  # noqa: E402
from rulecrm.events import Event  # noqa: E402
from rulecrm.sources.reader import read_events  # noqa: E402

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def all_valid(path, tz=SAO_PAULO):
    """Every line parses as an event; returns them in file order."""
    results = sorted(read_events(path, default_tz=tz), key=lambda item: item[0])
    assert all(isinstance(item, Event) for _, item in results), [item for _, item in results
                                                                  if not isinstance(item, Event)][:3]
    return [item for _, item in results]


def test_cdnow(real_data, tmp_path):
    src = real_data / "cdnow" / "CDNOW_master.txt"
    raw = [line.split() for line in src.read_text().splitlines()[1:] if line.strip()]
    dst = tmp_path / "cdnow.jsonl"
    assert cdnow_events(src, dst) == len(raw) == 69_659
    events = all_valid(dst, ZoneInfo("UTC"))
    assert len(events) == len(raw)
    assert len({e.customer_id for e in events}) == len({row[0] for row in raw}) == 23_570
    first = json.loads(dst.read_text().splitlines()[0])
    assert first == {
        "id": "cdnow-2",
        "type": "order.placed",
        "customer_id": "00001",
        "at": "1997-01-01T00:00:00",
        "data": {"order_id": "cdnow-2", "sku": "cd", "category": "music", "quantity": 1, "amount": 11.77},
    }
    assert sum(e.data["amount"] for e in events) == pytest.approx(sum(float(row[3]) for row in raw))
    assert [e.customer_id for e in events] == [row[0] for row in raw]  # file order kept


def test_cdnow_accepts_streams():
    out = io.StringIO()
    assert cdnow_events(io.StringIO(" customer_id date n value\n 00007 19980630 2 30.50\n\n"), out) == 1
    assert json.loads(out.getvalue())["at"] == "1998-06-30T00:00:00"


def test_olist_reviews(real_data, tmp_path):
    src = real_data / "olist-sample"
    rows = csv_rows(src / "olist_order_reviews_dataset.csv")
    answered = sum(1 for row in rows if row["review_answer_timestamp"])
    dst = tmp_path / "reviews.jsonl"
    assert olist_review_events(src, dst) == len(rows) + answered
    assert len(rows) == 6_123
    events = all_valid(dst)
    created = [e for e in events if e.type == "review.created"]
    handled = [e for e in events if e.type == "review.handled"]
    assert len(created) == len(rows) and len(handled) == answered
    assert len({e.id for e in events}) == len(events)  # ids are unique even where a review id repeats
    assert [e.data["rating"] for e in created] == [int(row["review_score"]) for row in rows]
    assert all(e.customer_id == "olist-" + e.data["order_id"] for e in events)
    by_review = {(e.data["review_id"], e.data["order_id"]): e for e in created}
    assert all(h.at >= by_review[(h.data["review_id"], h.data["order_id"])].at for h in handled)
    texted = next(row for row in rows if row["review_comment_title"] and row["review_comment_message"])
    event = by_review[(texted["review_id"], texted["order_id"])]
    assert texted["review_comment_title"].strip() in event.data["text"]
    assert texted["review_comment_message"].strip() in event.data["text"]


def test_olist_orders(real_data, tmp_path):
    src = real_data / "olist-sample"
    rows = csv_rows(src / "olist_orders_dataset.csv")
    delivered = sum(1 for row in rows if row["order_delivered_customer_date"])
    dst = tmp_path / "orders.jsonl"
    assert olist_order_events(src, dst) == len(rows) + delivered
    assert len(rows) == 4_071
    events = all_valid(dst)
    placed = [e for e in events if e.type == "order.placed"]
    assert len(placed) == len(rows)
    assert sum(1 for e in events if e.type == "order.delivered") == delivered
    assert [(e.data["order_id"], e.customer_id) for e in placed] == [(r["order_id"], r["customer_id"]) for r in rows]
    items = csv_rows(src / "olist_order_items_dataset.csv")
    with_items = {row["order_id"] for row in items} & {row["order_id"] for row in rows}
    assert sum(1 for e in placed if "amount" in e.data) == len(with_items)
    one = next(e for e in placed if "amount" in e.data)
    expected = sum(float(row["price"]) for row in items if row["order_id"] == one.data["order_id"])
    assert one.data["amount"] == pytest.approx(expected)
