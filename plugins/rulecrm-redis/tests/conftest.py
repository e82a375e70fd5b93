"""Fixtures: a real Redis server per test, empty at the start."""
from __future__ import annotations

import pytest
from redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    redis_server.client.flushall()
    return redis_server.url
