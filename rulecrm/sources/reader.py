"""Reading a JSONL event file in event-time order with bounded memory (an external merge sort)."""
from __future__ import annotations

import heapq
import os
import pickle
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from operator import itemgetter

import attrs

from rulecrm.errors import EventError
from rulecrm.events import Event, content_digest, parse_event_line, synthetic_id

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_ORDER = itemgetter(0, 1)  # (UTC microseconds, line number): unique per record
_BATCH = 256  # at most this many records per pickle in a run file
_FAN_IN = 64  # run files merged at once (keeps open files and merge memory bounded)
_COUNTER_LIMIT = 100_000  # distinct id-less events at one instant kept in memory before spilling

Record = tuple[int, int, Event]  # (instant key, line number, event)


@attrs.frozen
class Rejected:
    """An input line that is not a valid event: its line number, text and what was wrong."""

    line_no: int
    raw: str
    error: str


def instant_key(at: datetime) -> int:
    """The exact UTC instant of an aware datetime, in integer microseconds since the epoch."""
    return (at - _EPOCH) // _MICROSECOND


def read_events(path_or_stream, *, default_tz, chunk_size: int = 50_000) -> Iterator[tuple[int, Event | Rejected]]:
    """Yield (line_no, Event) in (instant, line) order and (line_no, Rejected) for bad lines as met.

    Events without an id get `synthetic_id(event, n)` where n counts identical events in file order.
    At most `chunk_size` events are held in memory; larger inputs are sorted in runs spilled to
    temporary files and merged.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    with _ExternalSorter(chunk_size) as sorter:
        for line_no, text, problem in _numbered_lines(path_or_stream):
            if problem is not None:
                yield line_no, Rejected(line_no, text, problem)
                continue
            if not text.strip():
                continue
            try:
                event = parse_event_line(text, default_tz=default_tz)
            except EventError as exc:
                yield line_no, Rejected(line_no, text, exc.message)
                continue
            sorter.add((instant_key(event.at), line_no, event))
        yield from _assign_ids(sorter.merged())


def _numbered_lines(path_or_stream) -> Iterator[tuple[int, str, str | None]]:
    """(line_no, text without line ending, problem) for every physical line; bytes are decoded as UTF-8."""
    if isinstance(path_or_stream, (str, os.PathLike)):
        with open(path_or_stream, "rb") as stream:
            yield from _numbered_lines(stream)
        return
    for line_no, line in enumerate(path_or_stream, start=1):
        problem = None
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = line.decode("utf-8", errors="backslashreplace")  # bad bytes kept as \xNN, as the sources do
                problem = f"not valid UTF-8 (byte {exc.start + 1} of the line)"
        line = line.rstrip("\r\n")
        if line_no == 1 and line.startswith("\ufeff"):
            line = line[1:]
        yield line_no, line, problem


def _assign_ids(records: Iterable[Record]) -> Iterator[tuple[int, Event]]:
    """Give id-less events their synthetic id; identical events share an instant, so they are adjacent."""
    counter = _OccurrenceCounter()
    current = None
    try:
        for key, line_no, event in records:
            if event.id is None:
                if key != current:
                    counter.reset()
                    current = key
                digest = content_digest(event)
                new_id = synthetic_id(event, counter.next(digest), digest=digest)
                event = Event(type=event.type, customer_id=event.customer_id, at=event.at, data=event.data, id=new_id)
            yield line_no, event
    finally:
        counter.close()


class _OccurrenceCounter:
    """Counts digests seen at the current instant; spills to a temporary SQLite table when large."""

    def __init__(self, limit: int = _COUNTER_LIMIT):
        self._limit = limit
        self._counts: dict[str, int] = {}
        self._db: sqlite3.Connection | None = None
        self._db_path: str | None = None

    def next(self, digest: str) -> int:
        """The occurrence number (1, 2, ...) of this digest since the last reset."""
        if self._db is None:
            n = self._counts.get(digest, 0) + 1
            self._counts[digest] = n
            if len(self._counts) > self._limit:
                self._spill()
            return n
        row = self._db.execute("SELECT n FROM seen WHERE digest = ?", (digest,)).fetchone()
        n = (row[0] if row else 0) + 1
        self._db.execute("INSERT OR REPLACE INTO seen (digest, n) VALUES (?, ?)", (digest, n))
        return n

    def _spill(self) -> None:
        fd, self._db_path = tempfile.mkstemp(prefix="rulecrm-ids-", suffix=".db")
        os.close(fd)
        self._db = sqlite3.connect(self._db_path)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE seen (digest TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        self._db.executemany("INSERT INTO seen (digest, n) VALUES (?, ?)", self._counts.items())
        self._counts.clear()

    def reset(self) -> None:
        """Start counting a new instant."""
        self._counts.clear()
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            os.unlink(self._db_path)


class _ExternalSorter:
    """Sorts records by (instant, line) holding at most `chunk_size` in memory.

    Full chunks are sorted and spilled to run files; a chunk that continues the previous run (as in
    already-sorted input) is appended to it, so sorted input makes a single run. Nothing is written
    when everything fits in one chunk.
    """

    def __init__(self, chunk_size: int, *, fan_in: int = _FAN_IN):
        self._chunk_size = chunk_size
        self._fan_in = max(2, fan_in)
        # a merge holds one batch per run: keep that near one chunk in total
        self._batch = max(8, min(_BATCH, chunk_size // self._fan_in))
        self._buffer: list[Record] = []
        self._runs: list[str] = []
        self._run_end = None  # order key of the last record of the last run
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.runs_created = 0

    def __enter__(self) -> _ExternalSorter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._buffer = []
        self._runs = []
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def add(self, record: Record) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self._chunk_size:
            self._spill()

    def _new_run_path(self) -> str:
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="rulecrm-sort-")
        self.runs_created += 1
        return os.path.join(self._tmpdir.name, f"run-{self.runs_created}.pickle")

    def _spill(self) -> None:
        self._buffer.sort(key=_ORDER)
        if self._runs and self._run_end <= _ORDER(self._buffer[0]):
            _write_run(self._runs[-1], self._buffer, self._batch, append=True)
        else:
            path = self._new_run_path()
            _write_run(path, self._buffer, self._batch)
            self._runs.append(path)
        self._run_end = _ORDER(self._buffer[-1])
        self._buffer = []

    def merged(self) -> Iterator[Record]:
        """Every record added, in (instant, line) order; consumes the sorter."""
        tail = sorted(self._buffer, key=_ORDER)
        self._buffer = []
        if not self._runs:
            yield from tail
            return
        runs = self._runs
        while len(runs) + 1 > self._fan_in:
            runs = [self._merge_group(runs[i : i + self._fan_in]) for i in range(0, len(runs), self._fan_in)]
        self._runs = runs
        yield from heapq.merge(*(_read_run(path) for path in runs), tail, key=_ORDER)

    def _merge_group(self, paths: list[str]) -> str:
        if len(paths) == 1:
            return paths[0]
        path = self._new_run_path()
        _write_run(path, heapq.merge(*(_read_run(p) for p in paths), key=_ORDER), self._batch)
        for old in paths:
            os.unlink(old)
        return path


def _write_run(path: str, records: Iterable[Record], batch_size: int, *, append: bool = False) -> None:
    """Pickle records to a private run file in batches."""
    with open(path, "ab" if append else "wb", buffering=1 << 16) as out:
        batch = []
        for record in records:
            batch.append(record)
            if len(batch) == batch_size:
                pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
                batch = []
        if batch:
            pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)


def _read_run(path: str) -> Iterator[Record]:
    """The records of a run file written by _write_run (our own temporary file, never user input)."""
    with open(path, "rb", buffering=1 << 14) as stream:
        while True:
            try:
                batch = pickle.load(stream)
            except EOFError:
                return
            yield from batch
