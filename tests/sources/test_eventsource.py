"""Tests for reading event files in event-time order with bounded memory."""
from __future__ import annotations

import io
import json
import os
import random
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from rulecrm.events import Event
from rulecrm.sources import reader
from rulecrm.sources.reader import Rejected, _ExternalSorter, _OccurrenceCounter, instant_key, read_events

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def line(customer="c1", minutes=0, type_="chat.received", id_=None, **data):
    obj = {"type": type_, "customer_id": customer, "at": (T0 + timedelta(minutes=minutes)).isoformat(), "data": data}
    if id_ is not None:
        obj["id"] = id_
    return json.dumps(obj)


def read(lines, **kwargs):
    kwargs.setdefault("default_tz", UTC)
    return list(read_events(io.StringIO("\n".join(lines) + "\n"), **kwargs))


def events_of(results):
    return [(n, item) for n, item in results if isinstance(item, Event)]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 50_000])
def test_events_come_in_time_order_ties_in_file_order(chunk_size):
    lines = [
        line(minutes=5, id_="a"),
        line(minutes=1, id_="b"),
        line(minutes=5, id_="c"),
        line(minutes=0, id_="d"),
        line(minutes=1, id_="e"),
    ]
    results = read(lines, chunk_size=chunk_size)
    assert [(n, e.id) for n, e in results] == [(4, "d"), (2, "b"), (5, "e"), (1, "a"), (3, "c")]


def test_offsets_are_compared_as_instants():
    lines = [
        json.dumps({"id": "x", "type": "t", "customer_id": "c", "at": "2026-03-01T09:00:00+08:00"}),  # 01:00Z
        json.dumps({"id": "y", "type": "t", "customer_id": "c", "at": "2026-03-01T00:30:00"}),  # naive: UTC
    ]
    assert [e.id for _, e in read(lines)] == ["y", "x"]


def test_rejections_and_blank_lines():
    lines = [line(id_="ok1"), "", "   ", "{not json", '{"type": "t"}', line(id_="ok2", minutes=-1)]
    results = read(lines)
    rejected = [(n, r) for n, r in results if isinstance(r, Rejected)]
    assert [n for n, _ in rejected] == [4, 5]
    assert rejected[0][1] == Rejected(4, "{not json", rejected[0][1].error)
    assert "not valid JSON" in rejected[0][1].error
    assert "customer_id" in rejected[1][1].error
    assert [(n, e.id) for n, e in events_of(results)] == [(6, "ok2"), (1, "ok1")]
    assert len(results) == 4  # blank lines are skipped, everything else is accounted for


def test_reads_paths_and_binary_streams_with_bad_utf8(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line(id_="a").encode() + b"\r\n" + b'{"x": "\xff"}\n'
                     + line(id_="b", text="茶").encode())
    results = list(read_events(path, default_tz=UTC))
    assert [(n, type(item).__name__) for n, item in results] == [(2, "Rejected"), (1, "Event"), (3, "Event")]
    assert "UTF-8" in results[0][1].error
    assert results[0][1].raw == '{"x": "\\xff"}'  # the bad byte kept as an escape, to be fixed by hand
    assert results[2][1].data == {"text": "茶"}
    assert list(read_events(str(path), default_tz=UTC)) == results


def test_synthetic_ids_number_identical_events():
    duplicate = line(minutes=3, text="hi")
    lines = [duplicate, line(minutes=3, text="other"), duplicate, line(minutes=1, id_="given"), duplicate]
    first = read(lines)
    ids = [e.id for _, e in first]
    assert ids[0] == "given"
    by_line = {n: e.id for n, e in first}
    assert len({by_line[1], by_line[3], by_line[5]}) == 3
    assert all(i.startswith("auto-") for n, i in by_line.items() if n != 4)
    # the same file again, or sorted with tiny chunks, gives the same ids
    assert read(lines) == first
    assert read(lines, chunk_size=1) == first
    # the occurrence number, not the line number, makes the id: a line inserted elsewhere changes nothing
    shifted = read([line(minutes=9, id_="new")] + lines)
    assert {e.id for _, e in shifted} - {"new"} == set(ids)


def test_identical_content_spelled_differently_is_the_same_event():
    naive = json.dumps({"type": "t", "customer_id": "c", "at": "2026-03-01T08:00:00"})
    explicit = json.dumps({"type": "t", "customer_id": "c", "at": "2026-03-01T08:00:00+08:00", "data": {}})
    shanghai = timezone(timedelta(hours=8))
    results = read([naive, explicit], default_tz=shanghai)
    single = read([explicit], default_tz=shanghai)
    assert results[0][1].id == single[0][1].id
    assert results[0][1].id != results[1][1].id


def test_occurrence_counter_spills_to_disk_and_resets():
    counter = _OccurrenceCounter(limit=3)
    assert [counter.next(d) for d in "abcab"] == [1, 1, 1, 2, 2]
    assert [counter.next(d) for d in "dda"] == [1, 2, 3]  # the 4th distinct digest moved it to SQLite
    assert counter._db is not None
    counter.reset()
    assert counter._db is None
    assert counter.next("a") == 1
    counter.close()


def test_many_identical_events_at_one_instant(monkeypatch):
    monkeypatch.setattr(reader, "_COUNTER_LIMIT", 5)
    lines = [line(text=str(i % 8)) for i in range(40)]
    results = read(lines, chunk_size=7)
    assert [n for n, _ in results] == list(range(1, 41))
    assert len({e.id for _, e in results}) == 40
    assert read(lines) == results


def record(key, line_no):
    return (key, line_no, Event(type="t", customer_id="c", at=T0, id=str(line_no)))


def test_sorted_input_makes_one_run_and_small_input_none():
    with _ExternalSorter(3) as sorter:
        for i in range(10):
            sorter.add(record(i // 2, i))
        assert [r[1] for r in sorter.merged()] == list(range(10))
        assert sorter.runs_created == 1
    with _ExternalSorter(100) as sorter:
        for i in range(10):
            sorter.add(record(-i, i))
        assert [r[1] for r in sorter.merged()] == list(range(9, -1, -1))
        assert sorter.runs_created == 0


def test_many_runs_are_merged_in_rounds():
    random.seed(7)
    keys = [random.randrange(50) for _ in range(500)]
    with _ExternalSorter(4, fan_in=3) as sorter:
        for i, key in enumerate(keys):
            sorter.add(record(key, i))
        merged = [(r[0], r[1]) for r in sorter.merged()]
        assert merged == sorted((key, i) for i, key in enumerate(keys))
        assert sorter.runs_created > 125
        tmpdir = sorter._tmpdir.name
    assert not os.path.exists(tmpdir)


def test_temporary_files_are_removed_when_reading_stops_early(tmp_path):
    lines = [line(minutes=-i, id_=str(i)) for i in range(20)]
    before = set(os.listdir(reader.tempfile.gettempdir()))
    results = read_events(io.StringIO("\n".join(lines)), default_tz=UTC, chunk_size=3)
    next(results)
    results.close()
    leftovers = {p for p in set(os.listdir(reader.tempfile.gettempdir())) - before if p.startswith("rulecrm-")}
    assert leftovers == set()


def test_instant_key_is_exact_to_the_microsecond():
    at = datetime(2026, 3, 1, 10, 0, 0, 1, tzinfo=UTC)
    assert instant_key(at) - instant_key(at - timedelta(microseconds=1)) == 1
    assert instant_key(datetime(1970, 1, 1, tzinfo=UTC)) == 0


@pytest.mark.slow
def test_large_unsorted_file_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    rng = random.Random(11)
    count = 200_000
    start = int(T0.timestamp())
    with open(path, "w") as out:
        for i in range(count):
            at = datetime.fromtimestamp(start + rng.randrange(0, 90 * 86400), UTC).isoformat()
            obj = {"type": "order.placed", "customer_id": f"c{rng.randrange(5000)}", "at": at,
                   "data": {"order_id": f"o{i}", "sku": "tea-xqg", "amount": 128.0, "note": "x" * 40}}
            if i % 3:
                obj["id"] = f"o{i}"
            out.write(json.dumps(obj) + "\n")
    size = os.path.getsize(path)

    tracemalloc.start()
    try:
        previous = None
        seen = 0
        for line_no, event in read_events(path, default_tz=UTC, chunk_size=5_000):
            assert isinstance(event, Event)
            key = (instant_key(event.at), line_no)
            assert previous is None or previous < key
            previous = key
            seen += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == count
    assert size > 40_000_000
    assert peak < size / 5, f"peak {peak} bytes for a {size}-byte file"
