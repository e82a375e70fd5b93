"""The time-ordered reader: sorted input streamed without temporary files, unsorted input sorted in
compact runs, no temporary file left behind when reading stops, and numbered lines in and out."""
from __future__ import annotations

import gc
import itertools
import json
import os
import random
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import attrs
import pytest

from rulecrm.errors import SourceError
from rulecrm.events import Event
from rulecrm.sources import reader
from rulecrm.sources.reader import Rejected, read_event_lines, read_events
from rulecrm.timeutil import fixed_offset

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def line(n, minutes=None, **data):
    """An order at T0 + `minutes` (default n); every third one without an id, so it gets a synthetic one."""
    obj = {"type": "order.placed", "customer_id": f"c{n % 7}",
           "at": (T0 + timedelta(minutes=n if minutes is None else minutes)).isoformat(),
           "data": {"order_id": f"o{n}", "amount": 10.5 + n, "note": "x" * (n % 40), **data}}
    if n % 3:
        obj["id"] = f"o{n}"
    return json.dumps(obj)


def events_of(results):
    return [(n, item) for n, item in results if isinstance(item, Event)]


def reference(lines):
    """What every reading must give: the events sorted in memory in one chunk."""
    return events_of(read_event_lines(list(enumerate(lines, start=1)), default_tz=UTC, presorted=False))


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The directory every temporary file of the reader goes to."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def write(path, lines):
    path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")
    return path


def du(directory) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(directory) for name in names)


def sorted_lines(count):
    lines = [line(n, minutes=n // 3) for n in range(count)]  # ties of three: kept in line order
    lines[5] = "{not json"
    lines[17] = ""
    lines[40] = json.dumps({"type": "t", "customer_id": "c", "at": "yesterday"})
    return lines


def test_a_sorted_file_is_streamed_in_line_order_without_any_temporary_file(tmp_path, private_tmp):
    lines = sorted_lines(300)
    path = write(tmp_path / "sorted.jsonl", lines)
    results = []
    for item in read_events(path, default_tz=UTC, chunk_size=10):
        assert list(private_tmp.iterdir()) == []
        results.append(item)
    assert list(private_tmp.iterdir()) == []
    # one pass in line order: the rejected lines of the first chunk first, then everything as met
    assert [n for n, item in results if isinstance(item, Rejected)] == [6, 41]
    assert [n for n, _ in results if n > 41] == list(range(42, 301))
    assert events_of(results) == reference(lines)


def test_sorted_input_is_streamed_not_held(private_tmp):
    lines = [(n, line(n)) for n in range(1, 1001)]
    pulled = []

    def reread():
        pulled.append(0)
        for numbered in lines:
            pulled[-1] += 1
            yield numbered

    for line_no, _event in read_event_lines(reread, default_tz=UTC, chunk_size=10):
        if line_no > 10:  # past the first chunk: the second reading is only just ahead
            assert pulled[-1] - line_no <= 1
    assert len(pulled) == 2 and list(private_tmp.iterdir()) == []


def test_input_that_fits_in_one_chunk_is_read_once():
    calls = []

    def reread():
        calls.append(1)
        return [(n, line(n, minutes=-n)) for n in range(1, 6)]

    results = list(read_event_lines(reread, default_tz=UTC))
    assert [n for n, _ in results] == [5, 4, 3, 2, 1] and len(calls) == 1


def test_an_unsorted_file_is_sorted_in_runs_smaller_than_the_input(tmp_path, private_tmp, monkeypatch):
    lines = sorted_lines(3000)
    random.Random(3).shuffle(lines)
    path = write(tmp_path / "shuffled.jsonl", lines)
    size = os.path.getsize(path)
    peak = 0
    write_run = reader._write_run

    def measured_write_run(*args, **kwargs):  # a merge's output is complete, its inputs still there
        nonlocal peak
        write_run(*args, **kwargs)
        peak = max(peak, du(private_tmp))

    monkeypatch.setattr(reader, "_write_run", measured_write_run)
    created = []
    monkeypatch.setattr(reader, "_ExternalSorter", recording(reader._ExternalSorter, created))
    results = []
    for item in read_events(path, default_tz=UTC, chunk_size=20):
        peak = max(peak, du(private_tmp))
        results.append(item)
    assert created[0].runs_created > 150  # 150 runs, merged in more than one round
    assert 0 < peak <= size / 2, f"{peak} bytes of runs for a {size}-byte input"
    assert list(private_tmp.iterdir()) == []
    assert events_of(results) == reference(lines)
    keys = [(reader.instant_key(event.at), n) for n, event in events_of(results)]
    assert keys == sorted(keys)


def recording(cls, instances):
    def make(*args, **kwargs):
        instance = cls(*args, **kwargs)
        instances.append(instance)
        return instance

    return make


def test_run_files_keep_every_field_of_an_event():
    # the fields an event is made of (a cache such as the JSON text is not one of them)
    assert [field.name for field in attrs.fields(Event) if field.init] == ["type", "customer_id", "at", "data", "id"], \
        "a new Event field must be written to run files: see reader._encode_block"
    lmt = datetime(1900, 1, 1, 12, tzinfo=ZoneInfo("Asia/Shanghai"))  # local mean time: +08:05:43
    ats = [T0, T0.astimezone(timezone(timedelta(hours=-3, minutes=-30))), fixed_offset(lmt),
           T0 + timedelta(microseconds=7)]
    records = [(reader.instant_key(at), n, Event(type="t", customer_id="c", at=at, id=None if n % 2 else f"e{n}",
                                                   data={"a": [1, 2.5, -0.0, None, True, "茶"], "b": {"c": 2**53 - 1}}))
               for n, at in enumerate(ats)]
    decoded = reader._decode_block(reader._encode_block(records))
    assert decoded == records
    assert [event.to_json() for _, _, event in decoded] == [event.to_json() for _, _, event in records]


@pytest.mark.parametrize("chunk_size", [5, 50_000])
def test_closing_the_reading_early_removes_its_temporary_files(tmp_path, private_tmp, chunk_size):
    lines = [line(n, minutes=-n) for n in range(200)]
    results = read_events(write(tmp_path / "in.jsonl", lines), default_tz=UTC, chunk_size=chunk_size)
    next(results)
    assert bool(list(private_tmp.iterdir())) == (chunk_size == 5)
    results.close()
    assert list(private_tmp.iterdir()) == []


def test_an_exception_in_the_consumer_removes_the_temporary_files(tmp_path, private_tmp):
    path = write(tmp_path / "in.jsonl", [line(n, minutes=-n) for n in range(200)])
    with pytest.raises(KeyboardInterrupt):
        for count, _item in enumerate(read_events(path, default_tz=UTC, chunk_size=5), start=1):
            assert list(private_tmp.iterdir()) != []
            if count == 10:
                raise KeyboardInterrupt
    assert list(private_tmp.iterdir()) == []


class Stop(BaseException):
    """Like the signal exception of a replay: not an Exception, so nothing on the way catches it."""


def test_a_base_exception_thrown_into_the_reading_removes_the_temporary_files(tmp_path, private_tmp):
    results = read_events(write(tmp_path / "in.jsonl", [line(n, minutes=-n) for n in range(200)]),
                          default_tz=UTC, chunk_size=5)
    next(results)
    with pytest.raises(Stop):
        results.throw(Stop())
    assert list(private_tmp.iterdir()) == []


def test_a_reading_dropped_unfinished_is_cleaned_up_when_collected(tmp_path, private_tmp):
    results = read_events(write(tmp_path / "in.jsonl", [line(n, minutes=-n) for n in range(200)]),
                          default_tz=UTC, chunk_size=5)
    next(results)
    del results
    gc.collect()
    assert list(private_tmp.iterdir()) == []


def test_stopping_while_synthetic_ids_are_counted_on_disk_removes_the_counter(private_tmp, monkeypatch):
    monkeypatch.setattr(reader, "_COUNTER_LIMIT", 5)
    same_instant = [json.dumps({"type": "t", "customer_id": "c", "at": T0.isoformat(), "data": {"n": n % 9}})
                    for n in range(60)]
    taken = 0
    for _item in read_event_lines(list(enumerate(same_instant, start=1)), default_tz=UTC, chunk_size=7):
        taken += 1
        if any(p.name.startswith("rulecrm-ids-") for p in private_tmp.iterdir()):
            break  # the counter has spilled to disk
    assert taken < 60
    assert list(private_tmp.iterdir()) == []


def test_numbered_lines_keep_their_numbers_and_problems(private_tmp):
    piece = [(10, line(10, minutes=5)), (12, line(12, minutes=1)), (13, ""), (20, "{bad"),
             (31, '{"x": "\\xff"}', "not valid UTF-8 (byte 7 of the line)"), (40, line(40, minutes=1), None)]
    results = list(read_event_lines(piece, default_tz=UTC, chunk_size=2))
    assert [(n, type(item).__name__) for n, item in results] == [
        (20, "Rejected"), (31, "Rejected"), (12, "Event"), (40, "Event"), (10, "Event")]
    assert results[1][1] == Rejected(31, '{"x": "\\xff"}', "not valid UTF-8 (byte 7 of the line)")
    # the same lines as a re-reader, and said to be sorted once put in order
    assert events_of(read_event_lines(lambda: iter(piece), default_tz=UTC, chunk_size=2)) == events_of(results)
    in_order = [piece[1], piece[5], piece[0]]
    assert events_of(read_event_lines(in_order, default_tz=UTC, chunk_size=1, presorted=True)) == events_of(results)
    assert list(private_tmp.iterdir()) == []


def test_lines_said_to_be_sorted_that_are_not_stop_the_reading():
    lines = [(1, line(1, minutes=5)), (2, line(2, minutes=6)), (3, line(3, minutes=1))]
    results = read_event_lines(lines, default_tz=UTC, presorted=True)
    assert [n for n, _ in itertools.islice(results, 2)] == [1, 2]
    with pytest.raises(SourceError, match="line 3 is earlier than line 2"):
        next(results)


def test_a_file_changed_between_the_scan_and_the_reading_is_not_applied_out_of_order():
    readings = [[(n, line(n)) for n in range(1, 30)]]
    readings.append(readings[0][:20] + [(21, line(21, minutes=-1))] + readings[0][21:])
    results = read_event_lines(lambda: iter(readings.pop(0)), default_tz=UTC, chunk_size=5)
    with pytest.raises(SourceError, match="line 21 is earlier than line 20"):
        for _ in results:
            pass


def test_the_scan_reads_times_without_offset_in_the_shops_zone(tmp_path, private_tmp):
    midnight = json.dumps({"id": "x", "type": "t", "customer_id": "c", "at": "2026-03-01T00:00:00Z"})
    nine_local = json.dumps({"id": "a", "type": "t", "customer_id": "c", "at": "2026-03-01T09:00:00"})
    ten_in_shanghai = json.dumps({"id": "b", "type": "t", "customer_id": "c", "at": "2026-03-01T10:00:00+08:00"})
    path = write(tmp_path / "in.jsonl", [midnight, nine_local, ten_in_shanghai])  # the first chunk is one line

    def read(default_tz):
        ids, sorted_on_disk = [], False
        for _, event in read_events(path, default_tz=default_tz, chunk_size=1):
            ids.append(event.id)
            sorted_on_disk |= bool(list(private_tmp.iterdir()))
        return ids, sorted_on_disk

    assert read(timezone(timedelta(hours=8))) == (["x", "a", "b"], False)  # 01:00Z, then 02:00Z: streamed
    assert read(UTC) == (["x", "b", "a"], True)  # 09:00Z, then 02:00Z: sorted


def test_the_scan_sees_local_times_that_go_back_across_a_clock_change():
    # 02:30 does not exist in New York on 2026-03-08; read before the change it is 07:30Z, after 03:00 EDT (07:00Z)
    new_york = ZoneInfo("America/New_York")
    lines = [json.dumps({"id": str(n), "type": "t", "customer_id": "c", "at": at})
             for n, at in enumerate(["2026-03-08T01:00:00", "2026-03-08T02:30:00", "2026-03-08T03:00:00"])]
    results = read_event_lines(lambda: enumerate(lines, start=1), default_tz=new_york, chunk_size=1)
    assert [e.id for _, e in results] == ["0", "2", "1"]


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_line_the_quick_scan_cannot_read_is_read_by_the_parser(private_tmp, monkeypatch, shuffled):
    def unreadable(at, default_tz):
        raise ValueError("not for the quick path")

    monkeypatch.setattr(reader, "_parsed_timestamp", unreadable)
    lines = [line(n) for n in range(30)]
    if shuffled:
        lines[20] = line(20, minutes=-1)
    results = list(read_event_lines(lambda: enumerate(lines, start=1), default_tz=UTC, chunk_size=3))
    assert events_of(results) == reference(lines)
    assert bool(list(private_tmp.iterdir())) is False  # removed at the end, or never made
    assert (results[0][0] == 21) is shuffled


def test_a_pipe_given_by_path_is_read_once_and_sorted(tmp_path):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    lines = [line(n, minutes=-n) for n in range(50)]
    results = []
    # opening the pipe a second time would wait for a writer forever: read in a thread that may hang
    reading = threading.Thread(target=lambda: results.extend(read_events(fifo, default_tz=UTC, chunk_size=4)),
                               daemon=True)
    reading.start()
    write(fifo, lines)
    reading.join(timeout=30)
    assert not reading.is_alive(), "the pipe was opened again"
    assert events_of(results) == reference(lines)
