"""The `redis` event source and the `publish` command, found by rulecrm through the entry point `redis`."""
from __future__ import annotations

from rulecrm.cli.deferred import add_command_deferred
from rulecrm.hookspecs import hookimpl
from rulecrm.sources import SourceType


def _redis_source(arg, context):
    from .source import RedisStreamSource

    return RedisStreamSource(arg, context)


REDIS = SourceType("redis", _redis_source,
                   description="one Redis stream per shard, read through a consumer group (redis:redis://HOST:PORT/DB)")


@hookimpl
def rulecrm_event_sources():
    return [REDIS]


@hookimpl
def rulecrm_register_commands(cli):
    add_command_deferred(cli, "publish", "rulecrm_redis.command:publish_command")
