"""The `redis` event source: one stream per shard, read through a consumer group.

`rulecrm run --source redis:redis://HOST:PORT/DB --state DIR --shards 0-3` reads the streams
`{prefix}:0` to `{prefix}:3` (`rulecrm_redis.address`). Each shard's position (the id of the last
entry applied, and how many entries were read) is kept in that shard's own state, written in the
transaction that applies the shard's events; the entries are acknowledged (XACK) only after that
commit. At start-up a runner claims the entries still pending for other consumers of its streams
(a runner that died, with nothing acknowledged after its last commit), reads them again, and skips
those at or before the stored position: so a restart or a takeover resumes exactly where the
committed state is, with nothing lost and nothing applied twice.
"""
from __future__ import annotations

import json

import attrs
import redis

from rulecrm.sources import SourceContext, SourceError, parse_line
from rulecrm.sources.contract import _undecodable
from rulecrm.sources.reader import Rejected

from .address import AddressError, StreamAddress, parse_address

FIELD = b"event"  # the entry field holding one event's JSON line
CLAIM_BATCH = 1000
TIMEOUT = 5.0  # seconds a Redis command may take before the source reports the server unreachable
NEW = ">"  # XREADGROUP's id for entries never delivered to the group


def entry_id(text: bytes | str) -> tuple[int, int]:
    """A stream entry id `MS-SEQ` as a pair that orders like the stream."""
    ms, _, seq = (text.decode("ascii") if isinstance(text, bytes) else text).partition("-")
    return int(ms), int(seq or 0)


@attrs.define
class _Shard:
    """One owned shard's stream: its committed position, and what the runner has taken since."""

    shard: int
    stream: str
    applied: tuple[int, int] = (0, 0)  # last entry applied (committed, or taken in this step)
    entries: int = 0  # entries read from the stream (line numbers count them)
    cursor: str = "0"  # XREADGROUP id: our own pending entries from here, then NEW ones
    unacknowledged: list = attrs.Factory(list)
    changed: bool = False  # taken since the last commit_shard


class RedisStreamSource:
    """Reads the streams of the runner's shards; see the module's description."""

    def __init__(self, arg: str, context: SourceContext):
        try:
            self.address: StreamAddress = parse_address(arg)
        except AddressError as exc:
            raise SourceError(f"redis source: {exc}; for example --source redis:redis://127.0.0.1:6379/0") from None
        self.name = f"redis:{self.address.shown}/{self.address.prefix}"
        self._meta_key = f"source:redis:{self.address.prefix}"
        self._context = context
        self._shards = {shard: _Shard(shard, self.address.stream(shard)) for shard in context.shards}
        self._by_stream = {state.stream.encode(): state for state in self._shards.values()}
        self._client = redis.Redis.from_url(self.address.url, socket_timeout=TIMEOUT,
                                            socket_connect_timeout=TIMEOUT)
        self._ready = False  # groups made and other consumers' pending entries claimed
        self._problem: str | None = None  # the last connection problem, reported once

    def origin(self, shard: int) -> str:
        """The name a shard's lines are kept under (dead letters, messages): the source and the stream."""
        return f"redis:{self.address.shown}/{self.address.stream(shard)}"

    # -- positions -------------------------------------------------------------------------
    def open(self, store) -> None:
        """Refuse a server whose streams were routed with another number of partitions."""
        try:
            self._client.set(self.address.partitions_key, self._context.partitions, nx=True)
            found = self._client.get(self.address.partitions_key)
        except redis.RedisError as exc:
            raise SourceError(f"{self.name}: cannot reach Redis: {exc}") from None
        if found is not None and found != str(self._context.partitions).encode():
            raise SourceError(
                f"{self.name}: the streams were published for {found.decode(errors='replace')} partitions, "
                f"but the state has {self._context.partitions}; a customer's stream depends on the number, so "
                f"use another prefix (?prefix=...) or a state with {found.decode(errors='replace')} partitions")

    def open_shard(self, shard: int, store) -> None:
        saved = store.get_meta(self._meta_key) or {}
        state = self._shards[shard]
        try:
            if saved:
                state.applied = entry_id(saved["last_id"])
                state.entries = int(saved["entries"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"the state's position for {self.origin(shard)} is damaged: {str(saved)[:200]}") from None

    def commit(self, store) -> None:
        pass  # the positions are per shard: commit_shard

    def commit_shard(self, shard: int, store) -> None:
        state = self._shards.get(shard)
        if state is not None and state.changed:
            store.set_meta(self._meta_key, {"stream": state.stream, "last_id": "%d-%d" % state.applied,
                                            "entries": state.entries})
            state.changed = False

    def committed(self) -> None:
        """The step is durable: acknowledge what it read, so the group stops holding it for us."""
        waiting = [state for state in self._shards.values() if state.unacknowledged]
        if not waiting:
            return
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for state in waiting:
                    pipe.xack(state.stream, self.address.group, *state.unacknowledged)
                pipe.execute()
        except redis.RedisError as exc:  # still pending: read again, and skipped, by the next runner
            self._report(f"cannot acknowledge entries: {exc}")
        for state in waiting:
            state.unacknowledged.clear()

    def close(self) -> None:
        self._client.close()

    # -- reading -----------------------------------------------------------------------------
    def poll(self, limit: int) -> list:
        items: list = []
        try:
            if not self._ready:
                self._prepare()
            while True:
                catching_up = any(state.cursor != NEW for state in self._shards.values())
                reply = self._client.xreadgroup(
                    self.address.group, self.address.consumer,
                    {state.stream: state.cursor for state in self._shards.values()},
                    count=max(1, limit // len(self._shards)))
                self._take_reply(reply, items)
                if items or not catching_up:
                    break  # (after the pending entries, read on: a dry poll means no input)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or group was deleted (a server restarted without data)
                self._ready = False
            self._report(f"cannot read the streams: {exc}")
            return items
        except redis.RedisError as exc:
            self._ready = False
            self._report(f"cannot reach Redis: {exc}; retrying")
            return items
        if self._problem is not None:
            self._context.on_message(f"{self.name}: reading again")
            self._problem = None
        return items

    def _take_reply(self, reply, items: list) -> None:
        for stream, entries in reply or ():
            self._take(self._by_stream[stream if isinstance(stream, bytes) else stream.encode()], entries, items)

    def _prepare(self) -> None:
        """Make the groups (at the stored position), and take over what other consumers left pending."""
        for state in self._shards.values():
            try:
                self._client.xgroup_create(state.stream, self.address.group, id="%d-%d" % state.applied,
                                           mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            start = "0-0"
            while True:  # XAUTOCLAIM returns the next start id, "0-0" once it went through the list
                reply = self._client.xautoclaim(state.stream, self.address.group, self.address.consumer,
                                                min_idle_time=0, start_id=start, count=CLAIM_BATCH)
                start = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
                if start == "0-0":
                    break
            self._forget_other_consumers(state.stream)
            state.cursor = "0"  # our pending entries first (claimed or our own), from the start
        self._ready = True

    def _forget_other_consumers(self, stream: str) -> None:
        """Consumers with nothing pending were runners of this shard that stopped: drop their names."""
        for consumer in self._client.xinfo_consumers(stream, self.address.group):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name != self.address.consumer and int(consumer["pending"]) == 0:
                self._client.xgroup_delconsumer(stream, self.address.group, name)

    def _take(self, state: _Shard, entries, items: list) -> None:
        if state.cursor != NEW and not entries:
            state.cursor = NEW  # went through our pending entries: new ones from now on
        for raw_id, fields in entries:
            ident = entry_id(raw_id)
            state.unacknowledged.append(raw_id)
            if state.cursor != NEW:
                state.cursor = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            if ident <= state.applied:
                continue  # applied and committed before a restart: acknowledged, not applied again
            state.applied = ident
            state.entries += 1
            state.changed = True
            if not fields:  # pending, but trimmed from the stream before any runner applied it
                self._context.on_message(f"{self.origin(state.shard)}: entry {'%d-%d' % ident} was deleted "
                                         "from the stream before it was applied; it cannot be read")
                continue
            items.append((state.entries, self._item(fields, state.entries), state.shard))

    def _item(self, fields: dict, line_no: int):
        raw = fields.get(FIELD)
        if raw is None:
            shown = json.dumps({key.decode(errors="replace"): value.decode(errors="replace")
                                for key, value in fields.items()}, ensure_ascii=False)
            return Rejected(line_no, shown, f"the stream entry has no `{FIELD.decode()}` field (the event's "
                                            "JSON line); `rulecrm publish` writes it")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejected(line_no, *_undecodable(raw, exc))
        return parse_line(text, line_no, self._context.default_tz)

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            self._context.on_message(f"{self.name}: {problem}")
        self._problem = problem
