"""rulecrm-redis: the `redis` event source (one stream per shard) and `rulecrm publish`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .address import StreamAddress, parse_address
from .publish import Published, PublishError, publish

if TYPE_CHECKING:
    from .source import RedisStreamSource

__all__ = ["PublishError", "Published", "RedisStreamSource", "StreamAddress", "parse_address", "publish"]


def __getattr__(name: str) -> Any:
    # The source loads on first use: rulecrm imports this package for its entry point
    # (`rulecrm_redis.plugin`) in every command, `check` included, and redis-py takes about 50 ms.
    if name == "RedisStreamSource":
        from .source import RedisStreamSource

        return RedisStreamSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
