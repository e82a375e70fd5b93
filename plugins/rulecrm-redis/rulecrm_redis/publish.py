"""`rulecrm publish` and `publish()`: events routed to the stream of their customer's shard.

The shard is the state's own (`rulecrm.state.partitioned.shard_of`, the same hash on every machine),
so the runner of a shard finds all of its customers' events in its own stream. Each valid line is
sent as it was written, in the field `event` of one stream entry; a customer's events keep their
order, since they all go to one stream. Malformed lines are reported with their line number and
not sent.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from datetime import timezone

import attrs

from rulecrm.errors import EventError, UsageError

from .address import AddressError, StreamAddress, parse_address

CHUNK = 1000  # entries sent per round trip


class PublishError(UsageError):
    """Nothing was sent: the address, the state or the server cannot be used."""


@attrs.define
class Published:
    """What `publish` did: entries sent per stream, and the lines not sent with the reason."""

    streams: Counter = attrs.Factory(Counter)
    rejected: list[tuple[int, str]] = attrs.Factory(list)

    @property
    def sent(self) -> int:
        return sum(self.streams.values())


def partitions_of(state, partitions: int | None = None) -> int:
    """The number of partitions of a state: its manifest's, or 1 for a state file. With `partitions`
    (`--partitions N`, as `rulecrm run` takes it) a new directory is made a partitioned state of N
    shards, and an existing one must have N."""
    from rulecrm.state.partitioned import PartitionedState, is_partitioned

    path = os.fspath(state)
    if partitions is not None:
        if os.path.isfile(path):
            raise PublishError(f"state {path} is a state file (one partition); leave out --partitions")
        from rulecrm.app.partitioned_replay import open_partitioned_state

        return open_partitioned_state(path, partitions).partitions
    if is_partitioned(path):
        return PartitionedState.open(path).partitions
    if os.path.isfile(path):
        return 1
    raise PublishError(f"state {path} does not exist; give the state the runners use (a partitioned state "
                       "directory or a state file), or --partitions N to make it a partitioned state of N shards, "
                       "so that each event goes to its customer's shard")


def publish(lines: Iterable[str | bytes | dict], *, to: str | StreamAddress, state,
            partitions: int | None = None) -> Published:
    """Send each event of `lines` (JSON lines, or dicts) to the stream of its customer's shard of `state`.

    Lines are numbered from 1; blank ones are skipped. Raises PublishError when nothing can be
    sent (a bad address, a state that does not exist, a server routed for another number of
    partitions, or Redis unreachable); a server lost midway raises it too, with how many were sent.
    """
    try:
        address = to if isinstance(to, StreamAddress) else parse_address(to)
    except AddressError as exc:
        raise PublishError(f"--to: {exc}") from None
    # Imported here: the package imports this module, and rulecrm imports the package for every command.
    import redis

    from rulecrm.events import parse_event_line
    from rulecrm.state.partitioned import shard_of

    from .source import FIELD

    partitions = partitions_of(state, partitions)
    client = redis.Redis.from_url(address.url, socket_timeout=10, socket_connect_timeout=10)
    result = Published()
    try:
        _check_partitions(client, address, partitions)
        pipe = client.pipeline(transaction=False)
        waiting = Counter()
        for line_no, line in enumerate(lines, start=1):
            text, problem = _text_of(line)
            if problem is None and not text.strip():
                continue
            if problem is None:
                try:
                    customer = parse_event_line(text, default_tz=timezone.utc).customer_id
                except EventError as exc:
                    problem = exc.message
            if problem is not None:
                result.rejected.append((line_no, problem))
                continue
            stream = address.stream(shard_of(customer, partitions))
            pipe.xadd(stream, {FIELD: text.encode("utf-8")})
            waiting[stream] += 1
            if sum(waiting.values()) >= CHUNK:
                _send(pipe, waiting, result)
        _send(pipe, waiting, result)
    except redis.RedisError as exc:
        raise PublishError(f"Redis at {address.shown}: {exc}; {result.sent} event(s) were sent before it "
                           "(sending the file again is harmless for events with ids: a runner recognises "
                           "the ones it applied)") from None
    finally:
        client.close()
    return result


def _check_partitions(client, address: StreamAddress, partitions: int) -> None:
    client.set(address.partitions_key, partitions, nx=True)
    found = client.get(address.partitions_key)
    if found is not None and found != str(partitions).encode():
        raise PublishError(f"the streams {address.prefix}:N at {address.shown} were made for "
                           f"{found.decode(errors='replace')} partitions, the state for {partitions}: use "
                           "the state the runners use, or another prefix (?prefix=...)")


def _send(pipe, waiting: Counter, result: Published) -> None:
    if waiting:
        pipe.execute()
        result.streams.update(waiting)
        waiting.clear()


def _text_of(line) -> tuple[str, str | None]:
    """The line as text, or why it cannot be sent."""
    if isinstance(line, dict):
        try:
            return json.dumps(line, ensure_ascii=False), None
        except (TypeError, ValueError) as exc:
            return "", f"cannot be written as JSON: {exc}"
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return "", f"not valid UTF-8 (byte {exc.start + 1} of the line)"
    return line.rstrip("\r\n"), None
