"""The `--metrics HOST:PORT` endpoint: `GET /metrics` (Prometheus's text format) and `GET /healthz`, on threads
of its own that never keep the process alive.

/healthz answers 200 `{"state": "running"}` while the runner's sources run, and 503 with the state
(`starting`, `stopping`, `stopped`) otherwise, so a load balancer or an orchestrator sends nothing to
a runner that is not taking events yet, or any more.
"""
from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from rulecrm.errors import UsageError

SHUTDOWN_POLL = 0.1  # seconds: how soon the serving loop notices a stop (a runner stops within 2 s)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds the process up


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes are not news: stderr is for people
        pass


class MetricsServer:
    """Serves `registry` and `health()` ((ok, state)) on `host:port` from `start()` to `close()`."""

    def __init__(self, host: str, port: int, registry, health: Callable[[], tuple[bool, str]]):
        self._metrics = make_wsgi_app(registry)
        self._health = health
        server_class = _IPv6Server if ":" in host else _Server
        try:
            self._server = make_server(host, port, self._app, server_class=server_class, handler_class=_QuietHandler)
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise UsageError(f"--metrics: cannot listen on {host}:{port}: {reason}") from None
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL},
                                        name="rulecrm-metrics", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/healthz":
            ok, state = self._health()
            body = json.dumps({"state": state}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        body = b"not found: GET /metrics or /healthz\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
