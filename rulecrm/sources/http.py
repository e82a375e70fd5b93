"""The `http` source: a loopback receiver of POSTed JSONL that answers only once the events are committed."""

import asyncio
import json
import queue
import socket
import threading
from collections import OrderedDict
from datetime import timezone

import attrs

from rulecrm.events import Event, content_digest, fingerprint, id_conflict
from rulecrm.listen_address import parse_listen_address
from rulecrm.masking import mask_personal
from rulecrm.sources.contract import Item, SourceContext, SourceError, _undecodable, parse_line
from rulecrm.sources.http_wire import (
    BadFraming,
    Connection,
    Wire,
    body_reader,
    describe_drop,
    encode_answer,
    read_head,
    within,
)
from rulecrm.sources.reader import Rejected

MAX_BODY = 16 * 1024 * 1024  # bytes accepted in one POST
ANSWER_TIMEOUT = 30.0  # seconds a POST waits for its events to be committed
READ_TIMEOUT = 30.0  # seconds the server waits on a silent client
# The kernel's queue of connections not accepted yet. With the default of a few, clients beyond it
# lost their SYN and retried a second later (a recurring 1 s stall under load).
BACKLOG = 1024


class _Request:
    """One POST waiting for the runner: its parsed lines, and a future that says once they are committed."""

    def __init__(self, items, answered: asyncio.Future):
        self.items = items
        self.answered = answered  # True: committed; False: not applied (the client sends again)
        self.state = "queued"  # -> "taken" by poll, or "withdrawn" when the client's wait ran out first
        self.not_applied: dict[int, str] = {}  # id(event) -> error, for events the runner could not apply


def _resolve(requests, ok: bool) -> None:
    """On the wire's thread: answer the waiting requests."""
    for request in requests:
        if not request.answered.done():
            request.answered.set_result(ok)


class HttpSource:
    """Receives events on `POST /events` (one JSON object, or JSONL) from a loopback address.

    The answer comes once the events are committed: 202 `{"accepted": n, "rejected": 0}`, or 400
    with `errors` per line when some lines are invalid (the valid ones are applied, the others kept
    in the dead-letter store); 503 when the runner is stopping. The body may be sent with a
    Content-Length or chunked (at most MAX_BODY bytes either way); bad framing is answered 400 (411
    without a length, 413 too large) with the reason, and nothing of it is applied. A non-loopback
    host needs `allow_remote` (`rulecrm run --allow-remote`): the endpoint has no authentication.
    Connections are served by one asyncio thread (`rulecrm.sources.http_wire`).
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
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, int(port)), family=family, backlog=BACKLOG)
        except (OSError, OverflowError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise SourceError(f"http source: cannot listen on {host}:{port}: {reason}") from None
        self.server_address = sock.getsockname()[:2]
        bound_host, bound_port = self.server_address
        self.name = f"http:{bound_host}:{bound_port}"
        self._wire = Wire(sock, self._serve, self.name)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return self._wire.connections

    def open(self, store) -> None:
        self._wire.start()
        host, port = self.server_address
        shown = f"[{host}]" if ":" in host else host
        self._context.on_message(f"listening on http://{shown}:{port}/events")

    def submit(self, body: bytes) -> _Request | None:
        """On the wire's thread: queue the body's parsed lines and return the request to wait on."""
        if self._closing:
            return None
        items = [(line_no, item) for line_no, item in _body_items(body, self._context.default_tz, self._occurrence)]
        request = _Request(items, self._wire.loop.create_future())
        self._queue.put(request)
        return request

    async def wait(self, request: _Request) -> bool:
        """Wait for the request's events to be committed; False when they were not (the client sends again)."""
        try:
            return await within(ANSWER_TIMEOUT, asyncio.shield(request.answered))
        except asyncio.TimeoutError:
            with self._lock:
                if request.state == "queued":  # never taken: withdrawn, so a 503 is the truth
                    request.state = "withdrawn"
                    return False
        try:  # taken by the runner and being applied: its commit is near
            return await within(ANSWER_TIMEOUT, request.answered)
        except asyncio.TimeoutError:
            return False

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
        taken, self._taken = self._taken, []
        if taken:
            self._wire.call(_resolve, taken, True)  # one wake-up of the wire's thread for the whole step

    def close(self) -> None:
        self._closing = True
        taken, self._taken = self._taken, []

        def answer_the_rest():  # whatever was not committed is answered 503: the client sends it again
            while True:
                try:
                    _resolve([self._queue.get_nowait()], False)
                except queue.Empty:
                    break
            _resolve(taken, False)

        self._wire.stop(answer_the_rest)

    def client_dropped(self, client, reason: str) -> None:
        host, port = client[:2] if isinstance(client, tuple) else (client, "?")
        self._context.on_message(f"{self.name}: client {host}:{port} dropped: {reason}")

    # -- one connection, on the wire's thread --------------------------------------------------
    async def _serve(self, connection: Connection) -> None:
        outcome = "; nothing of it was applied"  # what became of the events, said if the client drops
        try:
            while True:
                connection.idle = True
                try:  # a kept-alive client with nothing more to send is closed quietly, as http.server did
                    first = await within(READ_TIMEOUT, connection.reader.read(1))
                except asyncio.TimeoutError:
                    return
                if not first:
                    return  # the client closed the connection
                head = await within(READ_TIMEOUT, read_head(connection.reader, first))
                if head is None:
                    return
                connection.idle = False
                outcome = "; nothing of it was applied"
                if head.path.split("?", 1)[0].rstrip("/") != "/events":  # the body is not read
                    return await connection.send(encode_answer(404, {"error": "POST events to /events"}, close=True))
                read = body_reader(head, MAX_BODY)
                if head.get("expect").lower() == "100-continue" and head.version >= (1, 1):
                    await connection.send(b"HTTP/1.1 100 Continue\r\n\r\n")  # the framing is acceptable
                try:
                    body = await within(READ_TIMEOUT, read(connection.reader))
                except asyncio.TimeoutError:
                    self.client_dropped(connection.client, f"its body did not arrive within {READ_TIMEOUT:g} s")
                    error = f"the body did not arrive within {READ_TIMEOUT:g} s"
                    try:
                        await connection.send(encode_answer(408, {"error": error}, close=True))
                    except OSError:
                        pass  # already reported as dropped
                    return
                request = self.submit(body)
                if request is None or not await self.wait(request):
                    outcome = "; its events were not applied"
                    error = "the runner is stopping or busy; send again (events with an id are applied once)"
                    return await connection.send(encode_answer(503, {"error": error}, close=True))
                outcome = "; its events were committed"
                keep_alive = head.keep_alive and not self._closing
                status, payload = _answer(request)
                await connection.send(encode_answer(status, payload, close=not keep_alive))
                if not keep_alive:
                    return
        except BadFraming as bad:
            try:
                await connection.send(encode_answer(bad.status, {"error": bad.reason}, close=True))
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback
                self.client_dropped(connection.client, describe_drop(exc, READ_TIMEOUT) + outcome)
        except Exception as exc:  # noqa: BLE001 - a request never prints a traceback: one line instead
            self.client_dropped(connection.client, describe_drop(exc, READ_TIMEOUT) + outcome)


def _answer(request: _Request) -> tuple[int, dict]:
    """The status and JSON of a committed request: 202, or 400 with the lines that were not applied."""
    rejected = [(n, item.error) for n, item in request.items if isinstance(item, Rejected)]
    rejected += [(n, request.not_applied[id(item)]) for n, item in request.items if id(item) in request.not_applied]
    rejected.sort()
    counts = {"accepted": len(request.items) - len(rejected), "rejected": len(rejected)}
    if not rejected:
        return 202, counts
    payload = {**counts, "errors": [{"line": n, "error": mask_personal(error)}
                                    for n, error in rejected[:MAX_ERRORS_SHOWN]]}
    if len(rejected) > MAX_ERRORS_SHOWN:
        payload["errors_not_shown"] = len(rejected) - MAX_ERRORS_SHOWN
    return 400, payload


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


NOT_APPLIED = "not applied: the runner could not process it; it is kept in the dead-letter store"
MAX_ERRORS_SHOWN = 100  # per-line errors in one answer; every rejected line is in the dead-letter store


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
