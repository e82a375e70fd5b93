"""Reading JSONL events in event-time order with bounded memory.

Two entry points yield the same stream: (line_no, Event) in (instant, line) order, and
(line_no, Rejected) for every line that is not a valid event; blank lines are skipped.

`read_events(path_or_stream, *, default_tz, chunk_size=50_000)` reads a file: a path, a binary or
text stream, or any iterable of lines. Bytes are decoded as UTF-8 (a line that is not is rejected)
and a byte-order mark on the first line is dropped; `numbered_lines` does that part.

`read_event_lines(lines, *, default_tz, chunk_size=50_000, presorted=None)` takes lines already
split and decoded, with the line numbers they come with (a partitioned replay hands over one piece
of a file this way and keeps the file's numbers). `lines` is an iterable of `(line_no, text)` or
`(line_no, text, problem)`: text without its line ending, and `problem` None or a decoding error
that rejects the line. Line numbers must increase along the input: they order events of one
instant. `lines` may also be a zero-argument callable returning a fresh iterable of the same lines
at each call, so that the input can be read twice. `presorted=True` says the lines are in time
order already; `False` that they must be sorted; `None` finds out when it can read twice, and
sorts otherwise. `read_events` is this with a re-reader for a regular file, and a single pass for
streams and pipes.

How the order is made, holding at most `chunk_size` events in memory:

* Input that fits in one chunk is read once and sorted in memory.
* Larger input that can be read twice is scanned first, for the `at` instants only (orjson and the
  timestamp parser of `parse_event_line`; a tenth to a quarter of the cost of parsing). When they
  never decrease, the rest is read again and streamed in line order, one event at a time: no sort,
  no temporary file. An event out of order in that reading (the file changed in between, or
  `presorted=True` was wrong) raises SourceError instead of coming out in the wrong order.
* Anything else is sorted externally: sorted chunks go to compressed run files in a private
  temporary directory (`rulecrm-sort-*`), merged at most `_FAN_IN` at a time, the smallest first,
  each deleted once merged; the directory stays well below the size of the input.

Rejected lines come out as they are met, events once their place is certain: at once when
streaming, after the last line when sorting. Events without an id get `synthetic_id(event, n)`, n
counting identical events of one instant in line order. The temporary files (sort runs, and the
`rulecrm-ids-*` spill of that count) are removed when the reading ends, is closed or collected, or
an exception (KeyboardInterrupt included) passes through it.
"""
from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import os
import sqlite3
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from operator import itemgetter

import attrs
import orjson

from rulecrm.errors import EventError, SourceError
from rulecrm.events import Event, content_digest, parse_event_line, synthetic_id
from rulecrm.timeutil import parse_timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_ORDER = itemgetter(0, 1)  # (UTC microseconds, line number): unique per record
_BATCH = 256  # at most this many records per compressed block in a run file
_FAN_IN = 64  # run files merged at once (keeps open files and merge memory bounded)
_COMPRESSION = 1  # zlib level: runs shrink to a fraction of the input at little cost in time
_COUNTER_LIMIT = 100_000  # distinct id-less events at one instant kept in memory before spilling

Record = tuple[int, int, Event]  # (instant key, line number, event)


@attrs.frozen
class Rejected:
    """An input line that is not a valid event: its line number, text and what was wrong."""

    line_no: int
    raw: str
    error: str


# (instant key or None for a rejected line, line number, what the line is)
Parsed = tuple["int | None", int, "Event | Rejected"]
Lines = Iterable[tuple] | Callable[[], Iterable[tuple]]


def instant_key(at: datetime) -> int:
    """The exact UTC instant of an aware datetime, in integer microseconds since the epoch."""
    return (at - _EPOCH) // _MICROSECOND


def read_events(path_or_stream, *, default_tz, chunk_size: int = 50_000) -> Iterator[tuple[int, Event | Rejected]]:
    """Yield (line_no, Event) in (instant, line) order and (line_no, Rejected) for bad lines as met.

    A regular file given by its path is read twice when larger than a chunk, so that a file already
    in time order is streamed without sorting; a stream or a pipe is read once (see the module).
    """
    if _is_regular_file(path_or_stream):
        lines = functools.partial(numbered_lines, path_or_stream)
    else:
        lines = numbered_lines(path_or_stream)
    yield from read_event_lines(lines, default_tz=default_tz, chunk_size=chunk_size)


def read_event_lines(lines: Lines, *, default_tz, chunk_size: int = 50_000,
                     presorted: bool | None = None) -> Iterator[tuple[int, Event | Rejected]]:
    """The stream of `read_events` for lines already numbered (see the module).

    `lines`: (line_no, text) or (line_no, text, problem) items, or a callable returning a fresh
    iterable of them at each call, so that the input can be checked for order before it is read.
    `presorted`: True when the lines are known to be in time order, False to sort them anyway, None
    to find out when `lines` is a callable (and sort otherwise).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if presorted is None and callable(lines):
        yield from _read_finding_order(lines, default_tz, chunk_size)
        return
    with _opened(lines) as source:
        records = _parsed(source, default_tz)
        if presorted:
            yield from _assign_ids(_in_checked_order(records))
        else:
            yield from _sorted_externally(records, chunk_size)


def decode_line(raw: bytes) -> tuple[str, str | None]:
    """A line's text and what is wrong with its encoding (None: valid UTF-8)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        # bad bytes kept as \xNN, as the sources do, so that the dead letter shows them
        return raw.decode("utf-8", errors="backslashreplace"), f"not valid UTF-8 (byte {exc.start + 1} of the line)"


def numbered_lines(path_or_stream) -> Iterator[tuple[int, str, str | None]]:
    """(line_no, text without line ending, problem) for every physical line; bytes are decoded as UTF-8."""
    if isinstance(path_or_stream, (str, os.PathLike)):
        with open(path_or_stream, "rb") as stream:
            yield from numbered_lines(stream)
        return
    for line_no, line in enumerate(path_or_stream, start=1):
        problem = None
        if isinstance(line, bytes):
            line, problem = decode_line(line)
        line = line.rstrip("\r\n")
        if line_no == 1 and line.startswith("\ufeff"):
            line = line[1:]
        yield line_no, line, problem


def _is_regular_file(path_or_stream) -> bool:
    """A path that can be read again from the start (not a pipe such as /dev/stdin or <(zcat ...))."""
    if not isinstance(path_or_stream, (str, os.PathLike)):
        return False
    try:
        return stat.S_ISREG(os.stat(path_or_stream).st_mode)
    except OSError:
        return False  # opening it reports the error


@contextlib.contextmanager
def _opened(lines: Lines) -> Iterator[Iterator[tuple]]:
    """An iterator over the lines; one made here by calling a re-reader is closed on leaving."""
    if not callable(lines):
        yield iter(lines)
        return
    source = iter(lines())
    try:
        yield source
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # an open file behind it


def _parse(line: tuple, default_tz) -> Parsed | None:
    """One numbered line as a record, or None for a blank line."""
    line_no, text, *problem = line
    if problem and problem[0] is not None:
        return None, line_no, Rejected(line_no, text, problem[0])
    if not text.strip():
        return None
    try:
        event = parse_event_line(text, default_tz=default_tz)
    except EventError as exc:
        return None, line_no, Rejected(line_no, text, exc.message)
    return instant_key(event.at), line_no, event


def _parsed(lines: Iterable[tuple], default_tz) -> Iterator[Parsed]:
    for line in lines:
        record = _parse(line, default_tz)
        if record is not None:
            yield record


def _read_finding_order(reread: Callable[[], Iterable[tuple]], default_tz,
                        chunk_size: int) -> Iterator[tuple[int, Event | Rejected]]:
    """Sort in memory what fits in a chunk; otherwise scan the rest, then stream it or sort it."""
    first: list[Record] = []
    taken = 0  # lines read by the first pass; the second one starts after them
    with _opened(reread) as source:
        for line in source:
            taken += 1
            record = _parse(line, default_tz)
            if record is None:
                continue
            if isinstance(record[2], Rejected):
                yield record[1], record[2]
                continue
            first.append(record)
            if len(first) == chunk_size:
                break
        else:
            yield from _assign_ids(sorted(first, key=_ORDER))
            return
        in_order = _never_decreasing(first) and _scan_in_order(source, first[-1][2].at, default_tz)
    with _opened(reread) as source:
        rest = _parsed(itertools.islice(source, taken, None), default_tz)
        # chain keeps its arguments while it runs; a list iterator lets the first chunk go once passed on
        records = itertools.chain(iter(first), rest)
        del first
        if in_order:
            yield from _assign_ids(_in_checked_order(records))
        else:
            yield from _sorted_externally(records, chunk_size)


def _never_decreasing(records: list[Record]) -> bool:
    return all(a[0] <= b[0] for a, b in itertools.pairwise(records))


def _scan_in_order(lines: Iterable[tuple], previous: datetime, default_tz) -> bool:
    """Whether every event's instant is at least the one of the event before (ties are in order).

    Lines that are not events do not count: they are rejected whatever their place.
    """
    for line in lines:
        if len(line) > 2 and line[2] is not None:
            continue  # a decoding problem
        at = _scanned_at(line[1], default_tz)
        if at is None:
            continue
        if at < previous:  # aware datetimes compare as instants
            return False
        previous = at
    return True


def _scanned_at(text: str, default_tz) -> datetime | None:
    """The `at` that `parse_event_line` gives this line, or None when it rejects the line.

    The quick path reads only `at`; a line it cannot read (not JSON, or beyond orjson, such as an
    integer id over 64 bits) goes through `parse_event_line` itself, so no event's instant is missed.
    A line that parses here but is rejected later only adds an instant: that can make the input look
    unsorted (then it is sorted), never the other way round.
    """
    try:
        return _parsed_timestamp(orjson.loads(text)["at"], default_tz)
    except (ValueError, TypeError, KeyError):  # orjson's JSONDecodeError is a ValueError
        pass
    try:
        return parse_event_line(text, default_tz=default_tz).at
    except EventError:
        return None


@functools.lru_cache(maxsize=1024)
def _parsed_timestamp(at: str, default_tz) -> datetime:
    # many events share a second (or a day), and a time without offset is the costly part of a scan
    return parse_timestamp(at, default_tz)


def _in_checked_order(records: Iterable[Parsed]) -> Iterator[Parsed]:
    """The records as they come, refusing an event earlier than the one before it."""
    previous_key = previous_line = None
    for record in records:
        key, line_no, _item = record
        if key is not None:
            if previous_key is not None and key < previous_key:
                raise SourceError(
                    f"line {line_no} is earlier than line {previous_line} before it, but the input was taken to be "
                    "in time order (was the file changed while it was read?)"
                )
            previous_key, previous_line = key, line_no
        yield record


def _sorted_externally(records: Iterable[Parsed], chunk_size: int) -> Iterator[tuple[int, Event | Rejected]]:
    """Rejected lines as met, then the events in (instant, line) order."""
    with _ExternalSorter(chunk_size) as sorter:
        for record in records:
            if isinstance(record[2], Rejected):
                yield record[1], record[2]
            else:
                sorter.add(record)
        yield from _assign_ids(sorter.merged())


def _assign_ids(records: Iterable[Parsed]) -> Iterator[tuple[int, Event | Rejected]]:
    """Give id-less events their synthetic id; identical events share an instant, so they are adjacent.

    Rejected lines pass through.
    """
    counter = _OccurrenceCounter()
    current = None
    try:
        for key, line_no, item in records:
            if not isinstance(item, Rejected) and item.id is None:
                if key != current:
                    counter.reset()
                    current = key
                digest = content_digest(item)
                new_id = synthetic_id(item, counter.next(digest), digest=digest)
                item = Event.made(item.type, item.customer_id, item.at, item.data, new_id)
            yield line_no, item
    finally:
        counter.close()


class _OccurrenceCounter:
    """Counts digests seen at the current instant; spills to a temporary SQLite table when large."""

    def __init__(self, limit: int | None = None):
        self._limit = _COUNTER_LIMIT if limit is None else limit
        self._counts: dict[str, int] = {}
        self._db: sqlite3.Connection | None = None
        # a directory rather than a file: it is removed at exit even if this object never is
        self._tmpdir: tempfile.TemporaryDirectory | None = None

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
        self._tmpdir = tempfile.TemporaryDirectory(prefix="rulecrm-ids-")
        self._db = sqlite3.connect(os.path.join(self._tmpdir.name, "seen.db"))
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
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


class _ExternalSorter:
    """Sorts records by (instant, line) holding at most `chunk_size` in memory.

    Full chunks are sorted and spilled to run files of compressed blocks; a chunk that continues the
    previous run (as in already-sorted input) is appended to it, so sorted input makes a single run.
    Nothing is written when everything fits in one chunk.
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
        return os.path.join(self._tmpdir.name, f"run-{self.runs_created}")

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
        # the last merge reads every run and the tail at once: first merge the smallest runs until
        # that is within the fan-in, each merge only as wide as needed (the least rewriting, and the
        # least disk: a merge holds its inputs and its output)
        last_width = self._fan_in - (1 if tail else 0)
        while len(self._runs) > last_width:
            self._runs.sort(key=os.path.getsize)
            width = min(self._fan_in, len(self._runs) - last_width + 1)
            self._runs[:width] = [self._merge_group(self._runs[:width])]
        yield from heapq.merge(*(_read_run(path) for path in self._runs), tail, key=_ORDER)

    def _merge_group(self, paths: list[str]) -> str:
        path = self._new_run_path()
        _write_run(path, heapq.merge(*(_read_run(p) for p in paths), key=_ORDER), self._batch)
        for old in paths:
            os.unlink(old)
        return path


def _write_run(path: str, records: Iterable[Record], batch_size: int, *, append: bool = False) -> None:
    """Write records to a private run file as length-prefixed compressed blocks of `batch_size`."""
    with open(path, "ab" if append else "wb", buffering=1 << 16) as out:
        for batch in _batches(records, batch_size):
            block = _encode_block(batch)
            out.write(len(block).to_bytes(4, "little"))
            out.write(block)


def _read_run(path: str) -> Iterator[Record]:
    """The records of a run file written by _write_run (our own temporary file, never user input)."""
    with open(path, "rb", buffering=1 << 14) as stream:
        while header := stream.read(4):
            yield from _decode_block(stream.read(int.from_bytes(header, "little")))


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _encode_block(records: list[Record]) -> bytes:
    """Records as compressed JSON: every field of an event came from JSON, and `at` in ISO 8601 is read
    back exactly, offset included. Twice as quick as pickling the objects; a field added to Event
    must be added here (a test compares the fields)."""
    rows = [(key, line_no, e.type, e.customer_id, e.at.isoformat(), e.data, e.id) for key, line_no, e in records]
    return zlib.compress(orjson.dumps(rows), _COMPRESSION)


def _decode_block(block: bytes) -> list[Record]:
    return [
        (key, line_no, Event.made(type_, customer_id, datetime.fromisoformat(at), data, id_))
        for key, line_no, type_, customer_id, at, data, id_ in orjson.loads(zlib.decompress(block))
    ]
