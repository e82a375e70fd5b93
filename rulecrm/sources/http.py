"""The `http` source: a loopback receiver of POSTed JSONL that answers only once the events are committed."""

import json
import queue
import re
import socket
import sys
import threading
from collections import OrderedDict
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs

from rulecrm.events import Event, content_digest, fingerprint, id_conflict
from rulecrm.listen_address import parse_listen_address
from rulecrm.masking import mask_personal
from rulecrm.sources.contract import Item, SourceContext, SourceError, _undecodable, parse_line
from rulecrm.sources.reader import Rejected

MAX_BODY = 16 * 1024 * 1024  # bytes accepted in one POST
ANSWER_TIMEOUT = 30.0  # seconds a POST waits for its events to be committed


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
        try:
            host, port = parse_listen_address(arg, allow_remote=context.allow_remote, what="http source",
                                              example_port=8765)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
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
    # socketserver's default backlog is 5: with more clients connecting at once the kernel drops their
    # SYNs, and each dropped client retries only a second later (the recurring 1 s stall of B6)
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # the handler catches what it expects; anything else is one line, never a traceback
        exc = sys.exc_info()[1]
        self.source.client_dropped(client_address, _describe(exc))


def _not_applied(store, event: Event) -> str | None:
    """Why `event` is not in the state as it was sent (None: applied now or before, same content)."""
    recorded = _recorded_text(store, event)
    if recorded is None:  # rolled back alone: the runner kept it in the dead-letter store
        return NOT_APPLIED
    if getattr(store, "keeps_state", True):
        if recorded == event.to_json():
            return None  # recorded as the engine writes this very event: applied (the common case, no parse)
        try:
            recorded = fingerprint(Event.from_dict(json.loads(recorded), default_tz=timezone.utc))
        except Exception:  # noqa: BLE001 - an unreadable old record: it was applied, content unknown
            return None
    return None if recorded == fingerprint(event) else id_conflict(event.id)


def _recorded_text(store, event: Event) -> str | None:
    """What the state recorded under the event's id. A partitioned state's view of its stores looks in
    the shard of the event's customer (`rulecrm.app.shards`): ids are unique within a shard only."""
    lookup = getattr(store, "event_text_for", None)
    return lookup(event) if lookup is not None else store.event_text(event.id)


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
