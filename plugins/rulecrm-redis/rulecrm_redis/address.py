"""Where the streams are: a Redis URL with rulecrm's options, and the stream name of each shard."""
from __future__ import annotations

import os
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

DEFAULT_PREFIX = "rulecrm:events"
DEFAULT_GROUP = "rulecrm"
OPTIONS = ("prefix", "group", "consumer")  # rulecrm's own query options; the rest go to redis-py
SCHEMES = ("redis", "rediss", "unix")


class AddressError(ValueError):
    """A Redis address that cannot be used, with what to write instead."""


@attrs.frozen
class StreamAddress:
    """A Redis server (`url`, as redis-py takes it) and the names rulecrm uses there.

    Shard N's events are in the stream `{prefix}:{N}`; `{prefix}:partitions` holds the number of
    partitions they were routed with. Runners read through the consumer group `group`, each under
    its own `consumer` name.
    """

    url: str
    prefix: str = DEFAULT_PREFIX
    group: str = DEFAULT_GROUP
    consumer: str = attrs.field(factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    def stream(self, shard: int) -> str:
        return f"{self.prefix}:{shard}"

    @property
    def partitions_key(self) -> str:
        return f"{self.prefix}:partitions"

    @property
    def shown(self) -> str:
        """The server without scheme, user or password, for messages and source names: HOST:PORT/DB."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return parts.path
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 6379}/{parts.path.strip('/') or '0'}"


def parse_address(text: str) -> StreamAddress:
    """`redis://HOST:PORT/DB?prefix=P&group=G&consumer=C` (prefix, group and consumer optional)."""
    if not text:
        raise AddressError("expected a Redis URL such as redis://127.0.0.1:6379/0")
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise AddressError(f"expected a Redis URL such as redis://127.0.0.1:6379/0 (schemes: "
                           f"{', '.join(SCHEMES)}), found {text!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name in OPTIONS}
    for name, value in ours.items():
        if not value:
            raise AddressError(f"the Redis URL's {name}= is empty; leave it out for the default")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise AddressError(f"the Redis URL's port is not a number: {text!r}") from None
    rest = urlencode([(name, value) for name, value in query if name not in OPTIONS])
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    return StreamAddress(url, **ours)
