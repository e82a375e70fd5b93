"""A real redis-server on 127.0.0.1, started and stopped by the tests themselves.

`make test` installs Debian's redis-server (`make servers`); without it these tests fail with that
advice, they never skip.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
import redis

BINARY_ENV = "RULECRM_REDIS_SERVER"  # another redis-server than the one on PATH


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One redis-server process with no persistence, in `directory`, until `stop()`."""

    def __init__(self, directory):
        binary = os.environ.get(BINARY_ENV) or shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make servers` (Debian's redis-server package), "
                        f"or point {BINARY_ENV} at one", pytrace=False)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"redis-server did not start on 127.0.0.1:{self.port}", pytrace=False)
                time.sleep(0.02)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
