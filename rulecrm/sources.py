"""The event sources rulecrm ships (`jsonl` file follower, `http` receiver), as a plugin of `rulecrm_event_sources`.

A source is polled by the runner's single thread: `poll(limit)` returns what arrived as
(line_no, Event | Rejected) pairs without blocking; `commit(store)` runs inside the transaction that
applies them (a source records how far it got there, so a restart neither re-reads nor loses
input); `committed()` runs once that transaction is durable; `close()` at shutdown.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import queue
import re
import socket
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import attrs

from .errors import EventError, RulecrmError, StateError
from .events import Event, content_digest, fingerprint, id_conflict, parse_event_line, synthetic_id
from .eventsource import Rejected
from .masking import mask_personal
from .hookspecs import hookimpl

Item = tuple[int, "Event | Rejected"]
MAX_BODY = 16 * 1024 * 1024  # bytes accepted in one POST
ANSWER_TIMEOUT = 30.0  # seconds a POST waits for its events to be committed


class SourceError(RulecrmError):
    """A source cannot start (bad argument, address not allowed, port in use ...)."""


@attrs.frozen
class SourceContext:
    """What a source factory gets besides its argument."""

    default_tz: Any  # the shop's time zone, for timestamps without an offset
    allow_remote: bool = False  # `run --allow-remote`: the http source may bind a non-loopback host
    on_message: Callable[[str], None] = attrs.field(default=lambda text: None)


@attrs.frozen
class SourceType:
    """A kind of event source: `rulecrm run --source NAME:ARG` calls `factory(ARG, context)`."""

    name: str
    factory: Callable[[str, SourceContext], "Source"]
    description: str = ""


class Source(Protocol):
    name: str  # shown in messages and kept with dead letters, e.g. "jsonl:/data/events.jsonl"

    def open(self, store) -> None: ...

    def poll(self, limit: int) -> list[Item]: ...

    def commit(self, store) -> None: ...

    def committed(self) -> None: ...

    def close(self) -> None: ...


def parse_line(text: str, line_no: int, default_tz, occurrence=None) -> Event | Rejected:
    """One input line to an Event (id-less ones get a synthetic id) or a Rejected with the reason.

    `occurrence` numbers an id-less event for its synthetic id: an int, a callable given the parsed
    event (the http source counts identical contents), or None for the line number.
    """
    try:
        event = parse_event_line(text, default_tz=default_tz)
        if event.id is None:
            number = occurrence(event) if callable(occurrence) else occurrence
            event = attrs.evolve(event, id=synthetic_id(event, number or line_no))
    except EventError as exc:
        return Rejected(line_no, text, exc.message)
    except Exception as exc:  # noqa: BLE001 - last defence: no input line may stop a source
        return Rejected(line_no, text, f"cannot be read: {type(exc).__name__}: {str(exc)[:200]}")
    return event


def _undecodable(raw: bytes, exc: UnicodeDecodeError) -> tuple[str, str]:
    r"""The raw text kept for a line that is not UTF-8, and the reason.

    The bad bytes stay recoverable as `\xNN` escapes: the store keeps text, and SQLite cannot take
    the lone surrogates a `surrogateescape` decoding would leave.
    """
    return raw.decode("utf-8", errors="backslashreplace"), f"not valid UTF-8 (byte {exc.start + 1} of the line)"


HEAD_BYTES = 1024  # the start of a file, fingerprinted: tells the file read before from a reused inode
MAX_LINE = 16 * 1024 * 1024  # a longer line is rejected and skipped, not held in memory
_SIBLINGS_SCANNED = 1000  # directory entries looked at when searching for a file rotated while stopped
_OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)  # a FIFO at the path must not hang


class JsonlFollowSource:
    """Follows a JSONL file like `tail -F`; its position (file identity and byte offset) is kept in the store.

    Only complete lines (ending in a newline) are read. The file read is told apart by its identity
    (st_dev, st_ino) and a fingerprint of its first bytes:

    * the path names another file (renamed and re-created, deleted and re-created): the old file,
      still open, is read to its end until the writer has moved on (the new file has data), a last
      line without a newline included; then the new file is read from its start;
    * the file got smaller, or its first bytes changed (truncated in place, copytruncate): it is read
      again from its start;
    * the file is missing: it is waited for.

    Line numbers (in messages and dead letters) count within each file. An id-less event's synthetic
    id numbers it among all the lines read at this path (`seq`, continued across rotations), so equal
    lines in a new file are new events, and a restart gives every line the id it had.

    A restart resumes the stored file at the stored offset. When the path names another file by then
    (rotated while stopped), the stored file is looked for beside it (a name starting with the file's
    name, such as `events.jsonl.1` or `events.jsonl-20260301`, same identity and fingerprint) and its
    rest is read first; if it is gone, the lines it got after the last commit are not read, and the
    new file is read from its start. Lines between the position and a copytruncate are likewise lost
    (they are in the copy): the usual limit of copytruncate.
    """

    def __init__(self, path: str, context: SourceContext):
        if not path:
            raise SourceError("the jsonl source needs a file: --source jsonl:PATH")
        self.path = os.path.abspath(path)
        self.name = f"jsonl:{self.path}"
        self._context = context
        self._meta_key = f"source:{self.name}"
        self._file = None  # the open file being read (may no longer be the one at the path)
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) the position refers to
        self._offset = 0
        self._line_no = 0
        self._seq = 0
        self._head = (0, "")  # (length, sha256) of the file's first bytes read so far, up to HEAD_BYTES
        self._skipping = False  # inside an overlong line, discarding up to its newline
        self._legacy = False  # a position stored without identity: adopt the file at the path
        self._looked_for_rotated = False
        self._partial_at = None  # (offset, size) when an unfinished line was last met
        self._resumed_from = None  # the rotated file found beside the path at start-up, while it is read
        self._problem = None  # the last reason the path could not be opened, reported once

    # -- position ----------------------------------------------------------------------
    def open(self, store) -> None:
        saved = store.get_meta(self._meta_key) or {}
        try:
            self._offset = int(saved.get("offset", 0))
            self._line_no = int(saved.get("line_no", 0))
            self._seq = int(saved.get("seq", self._line_no))
            self._skipping = bool(saved.get("skipping", False))
            if saved.get("ino") is not None:
                self._ident = (int(saved["dev"]), int(saved["ino"]))
                self._head = (int(saved.get("head_len", 0)), str(saved.get("head", "")))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise StateError(f"the state's position for {self.name} is damaged: {str(saved)[:200]}") from None
        self._legacy = self._ident is None and self._offset > 0

    def commit(self, store) -> None:
        dev, ino = self._ident if self._ident is not None else (None, None)
        store.set_meta(self._meta_key, {
            "offset": self._offset, "line_no": self._line_no, "seq": self._seq, "dev": dev, "ino": ino,
            "head_len": self._head[0], "head": self._head[1], "skipping": self._skipping,
        })

    def committed(self) -> None:
        pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _start_over(self, ident) -> None:
        self._ident = ident
        self._offset = self._line_no = 0
        self._head = (0, "")
        self._skipping = False
        self._partial_at = None
        self._resumed_from = None

    # -- reading -----------------------------------------------------------------------
    def poll(self, limit: int) -> list[Item]:
        items: list[Item] = []
        try:
            self._poll(items, limit)
        except OSError as exc:  # an I/O error (a stale NFS handle, a failing disk): reopen at the position later
            self._report(f"cannot read it: {exc.strerror or exc}")
            self.close()
        return items

    def _poll(self, items: list[Item], limit: int) -> None:
        while len(items) < limit:
            if self._file is None and not self._open():
                break
            at_path = self._stat_path()
            rotated = at_path is None or (at_path.st_dev, at_path.st_ino) != self._ident
            if not rotated:
                self._check_truncated()
            # `at_path` was taken before this read: if the new file had data then, the writer had
            # already finished the old one, so this read gets all of it
            self._read(items, limit)
            self._problem = None
            if not rotated or len(items) >= limit:
                break
            if at_path is None or at_path.st_size == 0:
                break  # the writer may still append to the old file: keep it until the new one has data
            self._read_last_line(items)
            self._context.on_message(
                f"{self.name}: the file was replaced (rotated); read the old one to its end "
                f"(line {self._line_no}), now reading the new one from its start"
            )
            if self._resumed_from is not None:
                self._warn_skipped(at_path)
            self.close()
            self._start_over(None)

    def _stat_path(self):
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found if stat.S_ISREG(found.st_mode) else None

    def _open(self) -> bool:
        """Open the file the position refers to (or the file at the path); False while there is none."""
        handle = self._open_regular(self.path)
        if handle is None:
            if self._ident is not None and self._offset > 0 and not self._looked_for_rotated:
                self._looked_for_rotated = True  # once: the path may stay missing for long
                handle = self._find_rotated()
                if handle is not None:
                    self._file = handle
                    self._resumed_rotated(handle)
                    return True
            return False
        self._looked_for_rotated = False
        found = os.fstat(handle.fileno())
        ident = (found.st_dev, found.st_ino)
        if self._ident is None:
            if self._legacy and found.st_size < self._offset:
                self._start_over(ident)
            self._ident = ident  # a new file starts at 0; a legacy position is taken to mean this file
            self._legacy = False
        elif ident != self._ident or not self._same_start(handle, found.st_size):
            rotated = self._find_rotated()
            if rotated is not None:
                handle.close()
                handle = rotated
                self._resumed_rotated(rotated)
            else:
                if ident == self._ident and found.st_size < self._offset:
                    what = "got smaller"
                else:
                    what = "is not the one read before (replaced or rotated while stopped)"
                self._context.on_message(
                    f"{self.name}: the file {what}; reading it from its start (lines the old file got "
                    f"after line {self._line_no} were not read)"
                )
                self._start_over(ident)
        self._file = handle
        return True

    def _resumed_rotated(self, handle) -> None:
        self._resumed_from = handle.name
        self._context.on_message(
            f"{self.name}: the file was rotated while stopped; finishing {handle.name} from line "
            f"{self._line_no}, then the new file"
        )

    def _open_regular(self, path, *, report: bool = True):
        """The regular file at `path` opened for reading, or None (a problem at the path is reported once)."""
        problem = None
        try:
            handle = open(path, "rb", opener=lambda name, flags: os.open(name, flags | _OPEN_FLAGS))
        except FileNotFoundError:
            handle = None
        except IsADirectoryError:
            handle, problem = None, "it is not a regular file"
        except OSError as exc:
            handle, problem = None, f"cannot open it: {exc.strerror or exc}"
        if handle is not None and not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            handle.close()
            handle, problem = None, "it is not a regular file"
        if report and (problem is not None or handle is None):
            self._report(problem)  # a missing file is no problem, and ends one
        return handle

    def _report(self, problem: str | None) -> None:
        """Say once what keeps the file from being read (None: nothing, any more)."""
        if problem is not None and problem != self._problem:
            self._context.on_message(f"{self.name}: {problem}; waiting")
        self._problem = problem

    def _siblings(self):
        """(name, stat) of the regular files beside the path whose names start with its name (`events.jsonl.1`)."""
        directory, base = os.path.split(self.path)
        try:
            with os.scandir(directory) as entries:
                for n, entry in enumerate(entries):
                    if n >= _SIBLINGS_SCANNED:
                        return
                    if entry.name == base or not entry.name.startswith(base):
                        continue
                    try:
                        found = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(found.st_mode):
                        yield entry.path, found
        except OSError:
            return

    def _find_rotated(self):
        """The stored file, when it was renamed beside the path (`events.jsonl.1`, ...), opened; else None."""
        for path, found in self._siblings():
            if (found.st_dev, found.st_ino) != self._ident:
                continue
            handle = self._open_regular(path, report=False)
            if handle is None:
                continue
            now = os.fstat(handle.fileno())
            if (now.st_dev, now.st_ino) == self._ident and self._same_start(handle, now.st_size):
                return handle
            handle.close()
        return None

    def _warn_skipped(self, at_path) -> None:
        """After a file rotated while stopped: files rotated after it (so, never read) are named, not read."""
        finished = os.fstat(self._file.fileno())
        known = {(finished.st_dev, finished.st_ino), (at_path.st_dev, at_path.st_ino)}
        newer = sorted(os.path.basename(path) for path, found in self._siblings()
                       if found.st_mtime_ns > finished.st_mtime_ns and (found.st_dev, found.st_ino) not in known)
        if newer:
            self._context.on_message(
                f"{self.name}: rotated more than once while stopped: {', '.join(newer[:5])} "
                "(rotated after the file just finished) were not read"
            )

    def _same_start(self, handle, size: int) -> bool:
        """The file still holds the bytes read before: as long as the offset, same first bytes."""
        length, digest = self._head
        if size < self._offset:
            return False
        if length == 0:
            return True
        return hashlib.sha256(os.pread(handle.fileno(), length, 0)).hexdigest() == digest

    def _check_truncated(self) -> None:
        if self._same_start(self._file, os.fstat(self._file.fileno()).st_size):
            return
        self._context.on_message(f"{self.name}: the file shrank or was rewritten (truncated in place); "
                                 "reading it again from the start")
        self._start_over(self._ident)

    def _read(self, items: list[Item], limit: int) -> None:
        """Append the complete lines from the offset on, up to `limit` items in all."""
        stream = self._file
        size = os.fstat(stream.fileno()).st_size
        if size <= self._offset or (self._offset, size) == self._partial_at:
            return  # nothing new, or the same unfinished line as last time
        stream.seek(self._offset)
        while len(items) < limit:
            raw = stream.readline(MAX_LINE + 1)
            if not raw:
                break
            if self._skipping:  # the rest of an overlong line, already rejected
                self._offset += len(raw)
                self._skipping = not raw.endswith(b"\n")
                continue
            if not raw.endswith(b"\n"):
                if len(raw) <= MAX_LINE:
                    self._partial_at = (self._offset, size)  # not read again until the file grows
                    break  # a line still being written: wait for its newline
                self._offset += len(raw)
                self._skipping = True
                self._take(items, raw, complete=False)
                continue
            self._offset += len(raw)
            self._take(items, raw, complete=True)
        self._update_head()

    def _read_last_line(self, items: list[Item]) -> None:
        """The rest of a rotated-away file once its writer has moved on: a line without a newline is its last."""
        self._file.seek(self._offset)
        rest = self._file.read(MAX_LINE + 1)
        pieces = [piece + b"\n" for piece in rest.split(b"\n")]
        pieces[-1] = pieces[-1][:-1]  # what follows the last newline (often nothing)
        for raw in filter(None, pieces):
            self._offset += len(raw)
            if self._skipping:
                self._skipping = not raw.endswith(b"\n")
                continue
            self._take(items, raw, complete=len(raw) <= MAX_LINE)

    def _take(self, items: list[Item], raw: bytes, *, complete: bool) -> None:
        self._line_no += 1
        self._seq += 1
        line_no = self._line_no
        if not complete:
            preview = raw[:200].decode("utf-8", errors="backslashreplace")
            items.append((line_no, Rejected(line_no, preview + "...", f"line longer than {MAX_LINE} bytes; skipped")))
            return
        try:
            text = raw.decode("utf-8").rstrip("\r\n").lstrip("\ufeff")
        except UnicodeDecodeError as exc:
            text, error = _undecodable(raw.rstrip(b"\r\n"), exc)
            items.append((line_no, Rejected(line_no, text, error)))
            return
        if text.strip():
            items.append((line_no, parse_line(text, line_no, self._context.default_tz, self._seq)))

    def _update_head(self) -> None:
        length = min(self._offset, HEAD_BYTES)
        if length > self._head[0]:
            data = os.pread(self._file.fileno(), length, 0)
            self._head = (len(data), hashlib.sha256(data).hexdigest())


class _Request:
    """One POST waiting for the runner: its parsed lines, and an event set once they are committed."""

    def __init__(self, items):
        self.items = items
        self.done = threading.Event()
        self.ok = False
        self.state = "queued"  # -> "taken" by poll, or "withdrawn" when the client's wait ran out first
        self.not_applied: dict[int, str] = {}  # id(event) -> error, for events the runner could not apply


class _BadFraming(Exception):
    """A request whose body cannot be read: answered `status` with the reason, then the connection closes."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpSource:
    """Receives events on `POST /events` (one JSON object, or JSONL) from a loopback address.

    The answer comes once the events are committed: 202 `{"accepted": n, "rejected": 0}`, or 400
    with `errors` per line when some lines are invalid (the valid ones are applied, the others kept
    in the dead-letter store); 503 when the runner is stopping. The body may be sent with a
    Content-Length or chunked (at most MAX_BODY bytes either way); bad framing is answered 400 (411
    without a length, 413 too large) with the reason, and nothing of it is applied. A non-loopback
    host needs `allow_remote` (`rulecrm run --allow-remote`): the endpoint has no authentication.
    """

    def __init__(self, arg: str, context: SourceContext):
        host, _, port = arg.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
            raise SourceError(f"http source: expected HOST:PORT such as 127.0.0.1:8765, found {arg!r}")
        if not _is_loopback(host) and not context.allow_remote:
            raise SourceError(
                f"http source: {host} is not a loopback address; the endpoint has no authentication, "
                "so bind 127.0.0.1 (behind your own proxy) or pass --allow-remote on purpose"
            )
        self._context = context
        self._queue: queue.Queue = queue.Queue()
        self._taken: list[_Request] = []
        self._seen: OrderedDict = OrderedDict()  # content digest -> occurrences, for id-less events
        self._lock = threading.Lock()
        self._closing = False
        try:
            server_class = _IPv6Server if ":" in host else _Server
            self.server = server_class((host, int(port)), _handler(self))
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise SourceError(f"http source: cannot listen on {host}:{port}: {reason}") from None
        self.server.source = self
        self.server.daemon_threads = True
        bound_host, bound_port = self.server.server_address[:2]
        self.name = f"http:{bound_host}:{bound_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name=self.name, daemon=True)

    def open(self, store) -> None:
        self._thread.start()
        host, port = self.server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        self._context.on_message(f"listening on http://{shown}:{port}/events")

    def submit(self, body: bytes) -> _Request | None:
        """Called by the HTTP threads: queue the body's parsed lines and return the request to wait on."""
        if self._closing:
            return None
        items = [(line_no, item) for line_no, item in _body_items(body, self._context.default_tz, self._occurrence)]
        request = _Request(items)
        self._queue.put(request)
        return request

    def wait(self, request: _Request, timeout: float | None = None) -> bool:
        """Wait for the request's events to be committed; False when they were not (the client sends again)."""
        timeout = ANSWER_TIMEOUT if timeout is None else timeout
        if request.done.wait(timeout):
            return request.ok
        with self._lock:
            if request.state == "queued":  # never taken: withdrawn, so a 503 is the truth
                request.state = "withdrawn"
                return False
        # taken by the runner and being applied: its commit is near
        return request.done.wait(timeout) and request.ok

    def _occurrence(self, event) -> int:
        digest = content_digest(event)
        with self._lock:
            count = self._seen.pop(digest, 0) + 1
            self._seen[digest] = count
            if len(self._seen) > 100_000:
                self._seen.popitem(last=False)
        return count

    def poll(self, limit: int) -> list[Item]:
        items: list[Item] = []
        while len(items) < limit:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                if request.state == "withdrawn":
                    continue
                request.state = "taken"
            self._taken.append(request)
            items.extend(request.items)
        return items

    def commit(self, store) -> None:
        # Runs in the step's transaction, after its items: what the state recorded under each event's
        # id tells whether that event was applied, so the answer never counts one that was not.
        for request in self._taken:
            for _line_no, item in request.items:
                if isinstance(item, Event):
                    problem = _not_applied(store, item)
                    if problem is not None:
                        request.not_applied[id(item)] = problem

    def committed(self) -> None:
        for request in self._taken:
            request.ok = True
            request.done.set()
        self._taken = []

    def close(self) -> None:
        self._closing = True
        if self._thread.is_alive():  # shutdown() would wait forever for a server never started
            self.server.shutdown()
        self.server.server_close()
        while True:  # whatever was never taken is answered 503: the client sends it again
            try:
                self._queue.get_nowait().done.set()
            except queue.Empty:
                break
        for request in self._taken:
            request.done.set()

    def client_dropped(self, client, reason: str) -> None:
        host, port = client[:2] if isinstance(client, tuple) else (client, "?")
        self._context.on_message(f"{self.name}: client {host}:{port} dropped: {reason}")


class _Server(ThreadingHTTPServer):
    source: HttpSource

    def handle_error(self, request, client_address):
        # the handler catches what it expects; anything else is one line, never a traceback
        exc = sys.exc_info()[1]
        self.source.client_dropped(client_address, _describe(exc))


def _not_applied(store, event: Event) -> str | None:
    """Why `event` is not in the state as it was sent (None: applied now or before, same content)."""
    recorded = store.event_text(event.id)
    if recorded is None:  # rolled back alone: the runner kept it in the dead-letter store
        return NOT_APPLIED
    if getattr(store, "keeps_state", True):
        try:
            recorded = fingerprint(Event.from_dict(json.loads(recorded), default_tz=timezone.utc))
        except Exception:  # noqa: BLE001 - an unreadable old record: it was applied, content unknown
            return None
    return None if recorded == fingerprint(event) else id_conflict(event.id)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


NOT_APPLIED = "not applied: the runner could not process it; it is kept in the dead-letter store"
MAX_ERRORS_SHOWN = 100  # per-line errors in one answer; every rejected line is in the dead-letter store
READ_TIMEOUT = 30.0  # seconds the server waits on a silent client
_CHUNK_LINE = 1024  # longest chunk-size or trailer line accepted
_TRAILER_LINES = 100


def _describe(exc) -> str:
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        return "it closed the connection before the answer"
    if isinstance(exc, TimeoutError):
        return f"silent for {READ_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"


def _handler(source: HttpSource):
    class Handler(BaseHTTPRequestHandler):
        server_version = "rulecrm"
        protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` is answered
        default_request_version = "HTTP/1.0"  # a malformed request line still gets a status line
        timeout = READ_TIMEOUT

        def handle_one_request(self):
            self.outcome = "; nothing of it was applied"  # what became of its events, said if the client drops
            try:
                super().handle_one_request()
            except Exception as exc:  # noqa: BLE001 - a request never prints a traceback: one line instead
                self.close_connection = True
                source.client_dropped(self.client_address, _describe(exc) + self.outcome)

        def handle_expect_100(self):
            return True  # sent by do_POST once the framing is known to be acceptable

        def do_POST(self):
            if self.path.split("?", 1)[0].rstrip("/") != "/events":
                self.close_connection = True  # the body is not read
                return self._answer(404, {"error": "POST events to /events"})
            try:
                read = self._framing()
                if self.headers.get("Expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
                    self.send_response_only(100)
                    self.end_headers()
                    self.wfile.flush()
                body = read()
            except _BadFraming as bad:
                self.close_connection = True
                return self._answer(bad.status, {"error": bad.reason})
            except TimeoutError:
                self.close_connection = True
                source.client_dropped(self.client_address, f"its body did not arrive within {READ_TIMEOUT:g} s")
                try:
                    self._answer(408, {"error": f"the body did not arrive within {READ_TIMEOUT:g} s"})
                except OSError:
                    pass  # already reported as dropped
                return
            request = source.submit(body)
            if request is None or not source.wait(request):
                self.outcome = "; its events were not applied"
                self.close_connection = True
                return self._answer(503, {"error": "the runner is stopping or busy; send again "
                                                   "(events with an id are applied once)"})
            self._answer_committed(request)

        def _framing(self):
            """Check the framing headers; return the function that reads the body."""
            encodings = [v.strip().lower() for v in self.headers.get_all("Transfer-Encoding", []) for v in v.split(",")]
            lengths = self.headers.get_all("Content-Length", [])
            if encodings:
                if lengths:
                    raise _BadFraming(400, "both Transfer-Encoding and Content-Length are given; send one")
                if encodings != ["chunked"]:
                    raise _BadFraming(501, f"Transfer-Encoding {', '.join(encodings)} is not supported; "
                                           "send the body as it is, with a Content-Length or chunked")
                return lambda: _read_chunked(self.rfile, MAX_BODY)
            if not lengths:
                raise _BadFraming(411, "Content-Length is required (or Transfer-Encoding: chunked)")
            values = {v.strip() for v in lengths}
            if len(values) != 1:
                raise _BadFraming(400, "Content-Length is given several times with different values")
            value = values.pop()
            if not re.fullmatch(r"[0-9]+", value):
                raise _BadFraming(400, f"Content-Length must be a number of bytes, found {value[:40]!r}")
            if len(value) > 12 or int(value) > MAX_BODY:
                raise _BadFraming(413, f"body larger than {MAX_BODY} bytes; send smaller batches")
            return lambda: _read_exactly(self.rfile, int(value))

        def _answer_committed(self, request):
            self.outcome = "; its events were committed"
            rejected = [(n, item.error) for n, item in request.items if isinstance(item, Rejected)]
            rejected += [(n, request.not_applied[id(item)]) for n, item in request.items
                         if id(item) in request.not_applied]
            rejected.sort()
            counts = {"accepted": len(request.items) - len(rejected), "rejected": len(rejected)}
            if not rejected:
                return self._answer(202, counts)
            payload = {**counts, "errors": [{"line": n, "error": mask_personal(error)}
                                            for n, error in rejected[:MAX_ERRORS_SHOWN]]}
            if len(rejected) > MAX_ERRORS_SHOWN:
                payload["errors_not_shown"] = len(rejected) - MAX_ERRORS_SHOWN
            return self._answer(400, payload)

        def _answer(self, status, payload):
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection or source._closing:
                self.close_connection = True
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def send_error(self, code, message=None, explain=None):
            # http.server's own refusals (bad request line, headers too long, unknown method) in JSON too
            short, long = self.responses.get(code, ("error", ""))
            self.close_connection = True
            self._answer(code, {"error": message or long or short})

        def log_message(self, format, *args):  # requests are not logged: bodies carry customer data
            pass

    return Handler


def _read_exactly(stream, length: int) -> bytes:
    body = stream.read(length)
    if len(body) < length:
        raise _BadFraming(400, f"the body ended after {len(body)} of the {length} bytes Content-Length announced")
    return body


def _read_chunked(stream, limit: int) -> bytes:
    """A `Transfer-Encoding: chunked` body, decoded; at most `limit` bytes."""
    body = bytearray()
    while True:
        line = stream.readline(_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > _CHUNK_LINE:
                raise _BadFraming(400, "chunked body: a chunk-size line is too long")
            raise _BadFraming(400, "chunked body: the body ended before its last (zero-size) chunk")
        size_text = line.split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
            shown = size_text[:20].decode("ascii", "backslashreplace")
            raise _BadFraming(400, f"chunked body: bad chunk size {shown!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise _BadFraming(413, f"body larger than {limit} bytes; send smaller batches")
        data = stream.read(size)
        if len(data) < size:
            raise _BadFraming(400, f"chunked body: a chunk ended after {len(data)} of its {size} bytes")
        body += data
        if stream.readline(3) not in (b"\r\n", b"\n"):
            raise _BadFraming(400, "chunked body: a chunk's data is not followed by CRLF")
    for _ in range(_TRAILER_LINES):
        line = stream.readline(_CHUNK_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return bytes(body)
        if not line.endswith(b"\n"):
            raise _BadFraming(400, "chunked body: the trailer section is not ended by an empty line")
    raise _BadFraming(400, "chunked body: too many trailer lines")


def _body_items(body: bytes, default_tz, occurrence) -> list[Item]:
    r"""A body as (line_no, Event | Rejected): JSONL, or one JSON object that may span several lines.

    Lines are split on "\n" only (a JSON string may hold U+2028 and the like) and decoded one by one,
    so a line that is not UTF-8 is rejected alone.
    """
    lines: list[tuple[int, str, str | None]] = []  # (line_no, text, problem)
    for line_no, raw in enumerate(body.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError as exc:
            lines.append((line_no, *_undecodable(raw, exc)))
            continue
        if text.strip():
            lines.append((line_no, text, None))
    note = ""
    if len(lines) > 1 and body.lstrip().startswith(b"{"):
        whole = body.decode("utf-8", errors="surrogateescape")
        try:
            obj = json.loads(whole)
        except RecursionError:
            if not _too_deep(lines[0][1]):  # the deep value goes on over several lines: say so on each
                note = "; the body read as one JSON value is nested too deep to read"
        except ValueError:
            pass  # JSONL (or broken): line by line
        else:
            if isinstance(obj, dict):  # one event written over several lines
                bad = next(((n, problem) for n, _text, problem in lines if problem), None)
                if bad is None:
                    return [(1, parse_line(whole.strip(), 1, default_tz, occurrence))]
                kept = body.decode("utf-8", errors="backslashreplace").strip()
                return [(bad[0], Rejected(bad[0], kept, f"line {bad[0]}: {bad[1]}"))]
    items: list[Item] = []
    for line_no, text, problem in lines:
        if problem is not None:
            items.append((line_no, Rejected(line_no, text, problem)))
            continue
        item = parse_line(text, line_no, default_tz, occurrence)
        if note and isinstance(item, Rejected):
            item = attrs.evolve(item, error=item.error + note)
        items.append((line_no, item))
    return items


def _too_deep(text: str) -> bool:
    try:
        json.loads(text)
    except RecursionError:
        return True
    except ValueError:
        pass
    return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@hookimpl
def rulecrm_event_sources():
    return [
        SourceType("jsonl", JsonlFollowSource, description="follows a JSONL file as it grows (jsonl:PATH)"),
        SourceType("http", HttpSource, description="POST /events on a loopback address (http:HOST:PORT)"),
    ]
