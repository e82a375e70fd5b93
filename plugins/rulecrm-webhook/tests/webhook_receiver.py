"""A real HTTP receiver on 127.0.0.1 that checks signatures, de-duplicates and fails on request."""
from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rulecrm.channels import Message
from rulecrm_webhook import verify_signature

SECRET = "whsec-7Qx1-test-only"
SECRET_ENV = "HOOK_SECRET"


class Receiver:
    """What the handler saw: deliveries (first of each key), duplicates, and every request's headers."""

    def __init__(self, secret: str | None):
        self.secret = secret
        self.tolerance: float | None = 300  # seconds; None accepts any timestamp
        self.deliveries: list[dict] = []  # {"body": raw bytes, "json": parsed, "headers": dict}
        self.duplicates: list[str] = []
        self.requests = 0
        self._keys: set[str] = set()
        self._plan: deque = deque()  # what to do with the next requests: (status, retry_after, body) or "stall"
        self._by_channel: dict[str, tuple[int, str]] = {}  # channel named in the body -> (status, raw text)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.url = ""

    def fail_next(self, count: int, status: int, *, retry_after: str | None = None, body: str = "") -> None:
        """Answer the next `count` requests with `status` (and a Retry-After header when given)."""
        self._plan.extend([(status, retry_after, body)] * count)

    def echo_next(self, *answers) -> None:
        """Answer the next requests with these (status, text) in turn, the text as the raw body;
        `{path}` in a text stands for the request's path and query (as a provider's 404 page shows it)."""
        self._plan.extend(("echo", status, text) for status, text in answers)

    def echo_by_channel(self, answers: dict[str, tuple[int, str]]) -> None:
        """Answer each request with the (status, text) of the channel its body names, as `echo_next`
        does: channels send concurrently, so their requests come in any order."""
        self._by_channel.update(answers)

    def stall_next(self, count: int = 1) -> None:
        """Hold the next `count` requests without answering until the test ends."""
        self._plan.extend(["stall"] * count)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        headers = dict(handler.headers.items())
        with self.lock:
            self.requests += 1
            step = self._plan.popleft() if self._plan else None
        if step is None and self._by_channel:
            step = ("echo", *self._by_channel.get(_channel_of(body), (500, "no answer planned for this channel")))
        if step == "stall":
            self.release.wait(10)
            return
        if step is not None and step[0] == "echo":
            return respond_raw(handler, step[1], step[2].replace("{path}", handler.path))
        if step is not None:
            status, retry_after, text = step
            extra = {"Retry-After": retry_after} if retry_after else {}
            return respond(handler, status, {"error": text or "planned failure"}, extra)
        if self.secret is not None and not verify_signature(
                self.secret, body, headers.get("X-Rulecrm-Signature"), self.tolerance):
            return respond(handler, 401, {"error": "bad signature"})
        key = headers["Idempotency-Key"]
        with self.lock:
            duplicate = key in self._keys
            self._keys.add(key)
            if duplicate:
                self.duplicates.append(key)
            else:
                self.deliveries.append({"body": body, "json": json.loads(body), "headers": headers})
        respond(handler, 200, {"ok": True, "duplicate": duplicate})


def respond(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def respond_raw(handler: BaseHTTPRequestHandler, status: int, text: str) -> None:
    data = text.encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def serve(receiver: Receiver):
    """Start a ThreadingHTTPServer for `receiver` on a free port; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            try:
                receiver.handle(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    return server


def message(**fields) -> Message:
    defaults = dict(key="refill|c-1|e-9", channel="hooks", address="c-1", text="您的茶快喝完了 🍵",
                    kind="marketing", customer_id="c-1", rule="refill")
    return Message(**{**defaults, **fields})


def _channel_of(body: bytes) -> str | None:
    try:
        return json.loads(body).get("channel")
    except (ValueError, AttributeError):
        return None
