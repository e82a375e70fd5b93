"""The `http` source's wire: HTTP/1.1 on one asyncio thread, every connection a task.

A thread per connection (`http.server`) made each client one more thread contending for the
interpreter with the runner: at 1,000 events/s from 128 kept-alive clients the runner waited for it
more than it worked. Here connections cost no thread. The source (`rulecrm.sources.http`) parses the
bodies and hands them to the runner; this module reads requests, checks their framing, waits for the
commit and writes the answers.

Only what the source needs is spoken: `POST` with a Content-Length or a chunked body,
`Expect: 100-continue`, keep-alive (HTTP/1.1 by default, HTTP/1.0 on request). Every refusal is a
JSON answer with the reason, and the connection then closes.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from typing import Callable

from rulecrm.masking import mask_personal

MAX_LINE = 65536  # longest request or header line, as http.server
MAX_HEADERS = 100
_CHUNK_LINE = 1024  # longest chunk-size or trailer line accepted
_TRAILER_LINES = 100
STOP_GRACE = 2.0  # seconds the answers of a stop (503) get to be written before the connections close


class BadFraming(Exception):
    """A request that cannot be served: answered `status` with the reason, then the connection closes."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Head:
    """A request line and its headers."""

    def __init__(self, method: str, path: str, version: tuple[int, int], headers: list[tuple[str, str]]):
        self.method = method
        self.path = path
        self.version = version
        self._headers = headers  # (lower-case name, value), in order

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self._headers if key == name]

    def get(self, name: str, default: str = "") -> str:
        values = self.get_all(name)
        return values[0] if values else default

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for v in self.get_all("connection") for t in v.split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


async def read_head(reader: asyncio.StreamReader, first: bytes = b"") -> Head | None:
    """The next request's line and headers (`first`: its first bytes, already read); None when the
    client closed the connection between requests."""
    line = first if first.endswith(b"\n") else first + await _line(reader, MAX_LINE, eof_ok=True)
    if not line.strip():
        return None  # closed (or a bare newline, which http.server answers by closing too)
    text = line.decode("iso-8859-1").rstrip("\r\n")
    words = text.split()
    if len(words) != 3:
        raise BadFraming(400, f"Bad request syntax ({text[:100]!r})")
    method, path, version_text = words
    version = _version(version_text)
    if version >= (2, 0):
        raise BadFraming(505, f"Invalid HTTP version ({version_text[:20]})")
    headers = []
    while True:
        line = await _line(reader, MAX_LINE, what="header line")
        if line in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise BadFraming(431, f"Too many headers (more than {MAX_HEADERS})")
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon or not name or name != name.strip():
            raise BadFraming(400, f"Bad header line ({line[:60].decode('iso-8859-1')!r}); write it as Name: value")
        headers.append((name.lower(), value.strip()))
    if method != "POST":
        raise BadFraming(501, f"Unsupported method ({method[:20]!r}); POST events to /events")
    return Head(method, path, version, headers)


def _version(text: str) -> tuple[int, int]:
    try:
        if not text.startswith("HTTP/"):
            raise ValueError
        major, minor = text[5:].split(".")
        if not (major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()) or \
                len(major) > 10 or len(minor) > 10:
            raise ValueError
        return int(major), int(minor)
    except ValueError:
        raise BadFraming(400, f"Bad request version ({text[:20]!r})") from None


async def _line(reader: asyncio.StreamReader, limit: int, *, eof_ok: bool = False, what: str = "request line") -> bytes:
    """One line ending in LF, at most `limit` bytes."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if eof_ok and not exc.partial:
            return b""
        raise BadFraming(400, f"the request ended inside its {what}") from None
    except asyncio.LimitOverrunError:
        raise BadFraming(431 if what == "header line" else 414, f"{what} too long") from None
    if len(line) > limit:
        raise BadFraming(431 if what == "header line" else 414, f"{what} too long")
    return line


def body_reader(head: Head, max_body: int) -> Callable:
    """Check the framing headers; return the coroutine function that reads the body from a reader."""
    encodings = [v.strip().lower() for value in head.get_all("transfer-encoding") for v in value.split(",")]
    lengths = head.get_all("content-length")
    if encodings:
        if lengths:
            raise BadFraming(400, "both Transfer-Encoding and Content-Length are given; send one")
        if encodings != ["chunked"]:
            raise BadFraming(501, f"Transfer-Encoding {', '.join(encodings)} is not supported; "
                                  "send the body as it is, with a Content-Length or chunked")
        return lambda reader: _read_chunked(reader, max_body)
    if not lengths:
        raise BadFraming(411, "Content-Length is required (or Transfer-Encoding: chunked)")
    values = {v.strip() for v in lengths}
    if len(values) != 1:
        raise BadFraming(400, "Content-Length is given several times with different values")
    value = values.pop()
    if not re.fullmatch(r"[0-9]+", value):
        raise BadFraming(400, f"Content-Length must be a number of bytes, found {value[:40]!r}")
    if len(value) > 12 or int(value) > max_body:
        raise BadFraming(413, f"body larger than {max_body} bytes; send smaller batches")
    return lambda reader: _read_exactly(reader, int(value))


async def _read_exactly(reader: asyncio.StreamReader, length: int) -> bytes:
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise BadFraming(400, f"the body ended after {len(exc.partial)} of the {length} bytes "
                              "Content-Length announced") from None


async def _chunk_line(reader: asyncio.StreamReader) -> bytes | None:
    """A chunk-size or trailer line; None when the body ended first. Longer than _CHUNK_LINE: refused."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if len(exc.partial) > _CHUNK_LINE:
            raise BadFraming(400, "chunked body: a chunk-size line is too long") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadFraming(400, "chunked body: a chunk-size line is too long") from None
    if len(line) > _CHUNK_LINE:
        raise BadFraming(400, "chunked body: a chunk-size line is too long")
    return line


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    """A `Transfer-Encoding: chunked` body, decoded; at most `limit` bytes."""
    body = bytearray()
    while True:
        line = await _chunk_line(reader)
        if line is None:
            raise BadFraming(400, "chunked body: the body ended before its last (zero-size) chunk")
        size_text = line.split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
            shown = size_text[:20].decode("ascii", "backslashreplace")
            raise BadFraming(400, f"chunked body: bad chunk size {shown!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise BadFraming(413, f"body larger than {limit} bytes; send smaller batches")
        try:
            body += await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise BadFraming(400, f"chunked body: a chunk ended after {len(exc.partial)} of its {size} bytes") from None
        try:
            ending = await reader.readexactly(1)
            if ending == b"\r":
                ending += await reader.readexactly(1)
        except asyncio.IncompleteReadError:
            ending = b""
        if ending not in (b"\r\n", b"\n"):
            raise BadFraming(400, "chunked body: a chunk's data is not followed by CRLF")
    for _ in range(_TRAILER_LINES):
        line = await _chunk_line(reader)
        if line in (b"\r\n", b"\n"):
            return bytes(body)
        if line is None:
            raise BadFraming(400, "chunked body: the trailer section is not ended by an empty line")
    raise BadFraming(400, "chunked body: too many trailer lines")


def encode_answer(status: int, payload: dict, *, close: bool) -> bytes:
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    reason = _REASONS.get(status, "")
    head = (f"HTTP/1.1 {status} {reason}\r\nServer: rulecrm\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode("ascii") + data


_REASONS = {202: "Accepted", 400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
            411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}


async def within(seconds: float, awaitable):
    """`awaitable`'s result, or asyncio.TimeoutError after `seconds`."""
    if _TIMEOUT is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with _TIMEOUT(seconds):  # no task of its own, unlike wait_for before 3.12
        return await awaitable


_TIMEOUT = getattr(asyncio, "timeout", None)


def describe_drop(exc: BaseException | None, read_timeout: float) -> str:
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        return "it closed the connection before the answer"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"silent for {read_timeout:g} s"
    return f"{type(exc).__name__}: {mask_personal(str(exc))}" if exc is not None else "unknown error"


class Connection:
    """One client's connection; `idle` while it waits for the client's next request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.idle = True
        peer = writer.get_extra_info("peername")
        self.client = peer[:2] if isinstance(peer, tuple) else (str(peer), "?")

    async def send(self, data: bytes) -> None:
        # A connection the client reset is closed by the loop: asyncio's writes to it are silently
        # dropped and uvloop's raise RuntimeError. Either way the answer cannot be written.
        if self.writer.is_closing():
            raise ConnectionResetError("the client closed the connection")
        try:
            self.writer.write(data)
        except RuntimeError:
            raise ConnectionResetError("the client closed the connection") from None
        await self.writer.drain()


class Wire:
    """The listening socket and the asyncio thread that serves it, `serve(connection)` per connection."""

    def __init__(self, sock: socket.socket, serve: Callable, name: str):
        self._sock = sock
        self._serve = serve
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections = 0  # accepted so far (tests wait on it)
        self._open: set[Connection] = set()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def call(self, function, *args) -> None:
        """Run `function(*args)` on the wire's thread (from the runner's)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(function, *args)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass

    def stop(self, before_closing=None) -> None:
        """Stop accepting, run `before_closing` on the wire's thread (answers still owed), give those
        answers up to STOP_GRACE seconds, then close every connection."""
        if not self._thread.is_alive():
            self._sock.close()
            return
        self.call(self._begin_stop, before_closing)
        self._thread.join(STOP_GRACE + 5)

    def _begin_stop(self, before_closing) -> None:
        if before_closing is not None:
            before_closing()
        self._stop.set()

    def _run(self) -> None:
        try:
            import uvloop  # libuv's loop: the same asyncio API at a fraction of the CPU per request
            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        tasks: set = set()

        async def connection(reader, writer):
            self.connections += 1
            current = Connection(reader, writer)
            self._open.add(current)
            task = asyncio.current_task()
            tasks.add(task)
            try:
                await self._serve(current)
            finally:
                tasks.discard(task)
                self._open.discard(current)
                writer.close()

        server = await asyncio.start_server(connection, sock=self._sock, limit=MAX_LINE + 2)
        self._started.set()
        await self._stop.wait()
        server.close()
        for current in list(self._open):
            if current.idle:  # waiting for a next request that would be refused: close it now
                current.writer.transport.abort()
        if tasks:
            await asyncio.wait(list(tasks), timeout=STOP_GRACE)
        for current in list(self._open):
            current.writer.transport.abort()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(list(tasks), timeout=1.0)
