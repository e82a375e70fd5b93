"""rulecrm-redis: the `redis` event source (one stream per shard) and `rulecrm publish`."""
from .address import StreamAddress, parse_address
from .publish import Published, PublishError, publish
from .source import RedisStreamSource

__all__ = ["PublishError", "Published", "RedisStreamSource", "StreamAddress", "parse_address", "publish"]
