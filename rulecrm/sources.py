"""The event sources rulecrm ships (`jsonl` file follower, `http` receiver), as a plugin of `rulecrm_event_sources`.

A source is polled by the runner's single thread: `poll(limit)` returns what arrived as
(line_no, Event | Rejected) pairs without blocking; `commit(store)` runs inside the transaction that
applies them (a source records how far it got there, so a restart neither re-reads nor loses
input); `committed()` runs once that transaction is durable; `close()` at shutdown.
"""
from __future__ import annotations

import ipaddress
import json
import os
import queue
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import attrs

from .errors import EventError, RulecrmError
from .events import Event, content_digest, parse_event_line, synthetic_id
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


def parse_line(text: str, line_no: int, default_tz, occurrence: int | None = None) -> Event | Rejected:
    """One input line to an Event (id-less ones get a synthetic id) or a Rejected with the reason."""
    try:
        event = parse_event_line(text, default_tz=default_tz)
    except EventError as exc:
        return Rejected(line_no, text, exc.message)
    if event.id is None:
        event = attrs.evolve(event, id=synthetic_id(event, occurrence or line_no))
    return event


class JsonlFollowSource:
    """Follows a JSONL file as it grows (like `tail -F`); its byte offset is kept in the store.

    Only complete lines (ending in a newline) are read. An id-less event gets the synthetic id of its
    line number, stable across restarts. A file that shrank was replaced: it is read from the start
    (events with ids already applied are skipped as duplicates).
    """

    def __init__(self, path: str, context: SourceContext):
        if not path:
            raise SourceError("the jsonl source needs a file: --source jsonl:PATH")
        self.path = os.path.abspath(path)
        self.name = f"jsonl:{self.path}"
        self._context = context
        self._meta_key = f"source:{self.name}"
        self._offset = 0
        self._line_no = 0

    def open(self, store) -> None:
        saved = store.get_meta(self._meta_key) or {}
        self._offset = int(saved.get("offset", 0))
        self._line_no = int(saved.get("line_no", 0))

    def poll(self, limit: int) -> list[Item]:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return []
        if size < self._offset:
            self._context.on_message(f"{self.name}: the file shrank; reading it again from the start")
            self._offset = self._line_no = 0
        if size == self._offset:
            return []
        items: list[Item] = []
        with open(self.path, "rb") as stream:
            stream.seek(self._offset)
            while len(items) < limit:
                raw = stream.readline()
                if not raw.endswith(b"\n"):
                    break  # end of file, or a line still being written: wait for its newline
                self._offset += len(raw)
                self._line_no += 1
                try:
                    text = raw.decode("utf-8").rstrip("\r\n").lstrip("\ufeff")
                except UnicodeDecodeError as exc:
                    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    items.append((self._line_no, Rejected(self._line_no, text, f"not valid UTF-8 (byte {exc.start + 1} of the line)")))
                    continue
                if text.strip():
                    items.append((self._line_no, parse_line(text, self._line_no, self._context.default_tz)))
        return items

    def commit(self, store) -> None:
        store.set_meta(self._meta_key, {"offset": self._offset, "line_no": self._line_no})

    def committed(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Request:
    """One POST waiting for the runner: its parsed lines, and an event set once they are committed."""

    def __init__(self, items):
        self.items = items
        self.done = threading.Event()
        self.ok = False


class HttpSource:
    """Receives events on `POST /events` (one JSON object, or JSONL) from a loopback address.

    The answer comes once the events are committed: 202 `{"accepted": n, "rejected": 0}`, or 400
    with `errors` per line when some lines are invalid (the valid ones are applied, the others kept
    in the dead-letter store); 503 when the runner is stopping. A non-loopback host needs
    `allow_remote` (`rulecrm run --allow-remote`): the endpoint has no authentication.
    """

    def __init__(self, arg: str, context: SourceContext):
        host, _, port = arg.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit():
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
            server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
            self.server = server_class((host, int(port)), _handler(self))
        except OSError as exc:
            raise SourceError(f"http source: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.server.daemon_threads = True
        bound_host, bound_port = self.server.server_address[:2]
        self.name = f"http:{bound_host}:{bound_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name=self.name, daemon=True)

    def open(self, store) -> None:
        self._thread.start()
        host, port = self.server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        self._context.on_message(f"listening on http://{shown}:{port}/events")

    def submit(self, lines: list[str]) -> _Request | None:
        """Called by the HTTP threads: queue the parsed lines and return the request to wait on."""
        if self._closing:
            return None
        items = []
        for line_no, text in enumerate(lines, 1):
            if text.strip():
                items.append((line_no, parse_line(text, line_no, self._context.default_tz, self._occurrence(text))))
        request = _Request(items)
        self._queue.put(request)
        return request

    def _occurrence(self, text: str) -> int | None:
        try:
            event = parse_event_line(text, default_tz=self._context.default_tz)
        except EventError:
            return None
        if event.id is not None:
            return None
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
            self._taken.append(request)
            items.extend(request.items)
        return items

    def commit(self, store) -> None:
        pass

    def committed(self) -> None:
        for request in self._taken:
            request.ok = True
            request.done.set()
        self._taken = []

    def close(self) -> None:
        self._closing = True
        self.server.shutdown()
        self.server.server_close()
        while True:  # whatever was never taken is answered 503: the client sends it again
            try:
                self._queue.get_nowait().done.set()
            except queue.Empty:
                break
        for request in self._taken:
            request.done.set()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(source: HttpSource):
    class Handler(BaseHTTPRequestHandler):
        server_version = "rulecrm"

        def do_POST(self):
            if self.path.split("?", 1)[0].rstrip("/") != "/events":
                return self._answer(404, {"error": "POST events to /events"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._answer(413, {"error": f"body larger than {MAX_BODY} bytes; send smaller batches"})
            try:
                body = self.rfile.read(length).decode("utf-8")
            except UnicodeDecodeError:
                return self._answer(400, {"error": "the body is not UTF-8"})
            request = source.submit(_lines(body))
            if request is None or not request.done.wait(ANSWER_TIMEOUT) or not request.ok:
                return self._answer(503, {"error": "the runner is stopping or busy; send again"})
            errors = [{"line": n, "error": mask_personal(item.error)} for n, item in request.items
                      if isinstance(item, Rejected)]
            counts = {"accepted": len(request.items) - len(errors), "rejected": len(errors)}
            if errors:
                return self._answer(400, {**counts, "errors": errors})
            return self._answer(202, counts)

        def _answer(self, status, payload):
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # requests are not logged: bodies carry customer data
            pass

    return Handler


def _lines(body: str) -> list[str]:
    """A body as event lines: JSONL, or one JSON object that may span several lines."""
    lines = body.splitlines()
    if len(lines) > 1 and body.lstrip().startswith("{"):
        try:
            obj = json.loads(body)
        except ValueError:
            return lines
        if isinstance(obj, dict):
            return [json.dumps(obj, ensure_ascii=False)]
    return lines


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
