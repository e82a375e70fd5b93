"""Running the console with uvicorn, in the foreground (`rulecrm serve`) or on a thread (tests, embedding)."""
from __future__ import annotations

import threading
import time

import uvicorn

from rulecrm.console.app import Console, create_app

START_TIMEOUT = 10.0


def make_server(console: Console, host: str, port: int) -> uvicorn.Server:
    # no access log: the page paths name customers
    config = uvicorn.Config(create_app(console), host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off", server_header=False)
    return uvicorn.Server(config)


def bound_port(server: uvicorn.Server) -> int:
    """The port the server listens on (the one the system chose when asked for port 0)."""
    for listener in server.servers:
        for sock in listener.sockets:
            return sock.getsockname()[1]
    raise RuntimeError("the console is not listening")


class ThreadedServer:
    """The console on a thread of its own: `start()` returns once it listens, `stop()` once it closed."""

    def __init__(self, console: Console, host: str = "127.0.0.1", port: int = 0):
        self.server = make_server(console, host, port)
        self.host = host
        self._thread = threading.Thread(target=self.server.run, name="rulecrm-console", daemon=True)

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console did not start")
            time.sleep(0.02)
        return f"http://{self.host}:{bound_port(self.server)}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(START_TIMEOUT)
