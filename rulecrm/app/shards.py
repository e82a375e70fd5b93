"""A runner's sessions on a partitioned state: one `Session` per shard it owns, driven as one.

A customer's events, profile, timers and actions live in one shard (`rulecrm.state.partitioned`), so
each input line is applied in its customer's shard, in that shard's own transaction. The shards
share one rule set, one plugin manager and one rate limiter, so the channels' limits hold for the
runner as a whole, not per shard.

The sources keep their positions in one shard, the "home" shard (the lowest owned). A step commits
every other shard first and the home shard last, with the positions: a crash in between leaves the
positions where they were, the sources read the batch again, and the events already committed in a
shard come back as duplicates of their ids (an id-less line gets the same synthetic id when read
again, `rulecrm.sources.jsonl`). So nothing is lost and nothing is applied twice.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

import attrs

from rulecrm import plugins
from rulecrm.app.session import Applied, Input, Session, chain_calls
from rulecrm.app.splitting import shard_of_line
from rulecrm.channels.ratelimit import RateLimiter
from rulecrm.errors import UsageError
from rulecrm.sources.reader import Rejected
from rulecrm.state.partitioned import PartitionedState


class ShardSessions:
    """Sessions on the owned shards of a partitioned state, offering what the runner needs of a Session.

    Open with `ShardSessions.open`. `shards` are the owned shards (default: all of them).
    """

    def __init__(self, partitioned: PartitionedState, sessions: dict[int, Session]):
        self.partitioned = partitioned
        self.sessions = dict(sorted(sessions.items()))
        self.home = min(self.sessions)
        self.ruleset = self.sessions[self.home].ruleset
        self.store = SourceStore(self.sessions[self.home].store, self._store_of_customer)

    @classmethod
    def open(cls, rules, state, *, shards: Iterable[int] | None = None, ruleset=None, manager=None,
             clock=time.time, stop=None, dispatch_options: dict | None = None, **session_options) -> ShardSessions:
        """Load the rules once, then open (and lock) each owned shard as `Session.open` opens a state
        file, with the same options; nothing stays open if one of them fails."""
        partitioned = PartitionedState.open(state)
        manager = manager or plugins.build_plugin_manager()
        ruleset = ruleset or plugins.load_rules_with(manager, rules)
        dispatch_options = dict(dispatch_options or {})
        # one budget per channel for the whole runner, whichever shard an action comes from
        dispatch_options.setdefault("limiter", RateLimiter(
            clock=dispatch_options.get("clock", clock), sleep=dispatch_options.get("sleep", time.sleep), stop=stop))
        owned = sorted(set(range(partitioned.partitions) if shards is None else shards))
        missing = [shard for shard in owned if not 0 <= shard < partitioned.partitions]
        if missing or not owned:
            which = f"there is no shard {missing[0]}" if missing else "no shard was given"
            raise UsageError(f"--shards: state {state} has {partitioned.partitions} shard(s), numbered "
                             f"0-{partitioned.partitions - 1}; {which}")
        sessions: dict[int, Session] = {}
        try:
            for shard in owned:
                sessions[shard] = Session.open(
                    rules, partitioned.shard_path(shard), ruleset=ruleset, manager=manager, clock=clock, stop=stop,
                    dispatch_options=dispatch_options, **session_options)
        except BaseException:
            for session in sessions.values():
                session.close()
            raise
        return cls(partitioned, sessions)

    # -- routing -------------------------------------------------------------------------
    def _shard_of(self, line: Input) -> int:
        """The shard a line is applied in: its customer's; a rejected line without one goes home."""
        item = line.item
        if isinstance(item, Rejected):  # routed as a partitioned replay routes it, so kept in the same shard
            shard = shard_of_line(item.raw.encode("utf-8", "surrogatepass"), self.partitioned.partitions)
            return shard if shard in self.sessions else self.home
        return self.partitioned.shard_for(item.customer_id)

    def _route(self, line: Input) -> tuple[int, Input]:
        shard = self._shard_of(line)
        kept_in = line.shard if line.shard in self.sessions else None  # a source's shard keeps its lines
        if kept_in is not None and isinstance(line.item, Rejected):
            return kept_in, line
        if shard in self.sessions and kept_in in (None, shard):
            return shard, line
        raw = line.raw if line.raw is not None else line.item.to_json()
        if kept_in is not None:
            # applied elsewhere, the line's shard could commit its source position without it
            reason = (f"customer {line.item.customer_id!r} is in shard {shard}, but the line came from shard "
                      f"{kept_in}'s input; publish it to shard {shard}'s (the state's hash decides)")
            return kept_in, attrs.evolve(line, item=Rejected(line.line_no, raw, reason))
        # another runner's customer: kept as a dead letter here, never applied in the wrong shard
        reason = f"customer {line.item.customer_id!r} is in shard {shard}, which this runner does not own"
        return self.home, attrs.evolve(line, item=Rejected(line.line_no, raw, reason))

    @property
    def stores(self) -> tuple:
        """The store of every owned shard, in shard order."""
        return tuple(session.store for session in self.sessions.values())

    @property
    def stores_by_shard(self) -> dict:
        """The store of each owned shard."""
        return {shard: session.store for shard, session in self.sessions.items()}

    @property
    def owned_shards(self) -> tuple[int, ...]:
        return tuple(self.sessions)

    def _store_of_customer(self, customer_id: str):
        session = self.sessions.get(self.partitioned.shard_for(customer_id))
        return session.store if session is not None else None

    # -- what the runner asks of a session -------------------------------------------------
    def apply(self, inputs: Iterable[Input], *, until: datetime | None = None,
              also: Callable[[], None] | None = None, stop: Callable[[], bool] | None = None,
              also_in_shard: Callable[[int, object], None] | None = None) -> Applied:
        """Apply each line in its customer's shard and fire every shard's timers due by `until`, one
        transaction per shard; the home shard's, which also runs `also` (the sources' positions),
        commits last. `also_in_shard(shard, store)` runs in every shard's transaction (the positions
        of sources that keep one per shard). The outcomes come back in the order of `inputs`."""
        batches: dict[int, list[Input]] = {shard: [] for shard in self.sessions}
        order: dict[int, int] = {}
        for position, line in enumerate(inputs):
            shard, line = self._route(line)
            batches[shard].append(line)
            order[id(line)] = position
        applied = Applied()
        for shard, session in self.sessions.items():
            if shard != self.home:
                _add(applied, session.apply(batches[shard], until=until, stop=stop,
                                            also=_in_shard(also_in_shard, shard, session.store)))
        home = self.sessions[self.home]
        _add(applied, home.apply(batches[self.home], until=until, stop=stop,
                                 also=chain_calls(also, _in_shard(also_in_shard, self.home, home.store))))
        applied.outcomes.sort(key=lambda pair: order.get(id(pair[0]), 0))
        applied.problems.sort(key=lambda pair: order.get(id(pair[0]), 0))
        return applied

    def advance(self, until: datetime | None, *, report_pending: bool = False) -> None:
        for session in self.sessions.values():
            session.advance(until, report_pending=report_pending)

    def next_due(self) -> float | None:
        """Epoch seconds of the next pending timer of any shard, or None."""
        return min((due for due in (s.next_due() for s in self.sessions.values()) if due is not None), default=None)

    def deliver(self, *, stop=lambda: False, wait: bool = True) -> None:
        for session in self.sessions.values():
            if stop():
                return
            session.deliver(stop=stop, wait=wait)

    def drain(self) -> None:
        for session in self.sessions.values():
            session.drain()

    def reload(self, ruleset) -> None:
        """Every shard goes on with `ruleset`; if one cannot, those already switched go back, so all
        shards always run the same rules."""
        switched = []
        try:
            for session in self.sessions.values():
                previous = session.ruleset
                session.reload(ruleset)
                switched.append((session, previous))
        except BaseException:
            for session, previous in switched:
                session.reload(previous)
            raise
        self.ruleset = ruleset

    def close(self) -> None:
        """Close every shard's session, even when one fails to close; the first failure is raised."""
        failure = None
        for session in self.sessions.values():
            try:
                session.close()
            except BaseException as exc:  # noqa: BLE001 - the other shards are closed all the same
                failure = failure or exc
        if failure is not None:
            raise failure


class SourceStore:
    """The store the sources are given: the home shard's, where their positions live, except that
    `event_text_for(event)` looks in the shard of the event's customer (the http source's check
    that an event was applied)."""

    def __init__(self, home_store, store_of_customer: Callable):
        self._home = home_store
        self._store_of_customer = store_of_customer

    def event_text_for(self, event) -> str | None:
        store = self._store_of_customer(event.customer_id)
        return store.event_text(event.id) if store is not None else None

    def __getattr__(self, name):
        return getattr(self._home, name)


def _in_shard(also_in_shard, shard: int, store) -> Callable[[], None] | None:
    return None if also_in_shard is None else (lambda: also_in_shard(shard, store))


def _add(applied: Applied, part: Applied) -> None:
    applied.outcomes.extend(part.outcomes)
    applied.problems.extend(part.problems)


def parse_shard_list(text: str) -> tuple[int, ...]:
    """`--shards`: shard numbers and ranges separated by commas, such as `0-3`, `5` or `0,2,8-11`."""
    shards: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise UsageError(f"--shards: expected shard numbers and ranges such as 0-3 or 0,2,5, found {text!r}")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise UsageError(f"--shards: the range {part.strip()!r} runs backwards; write {high}-{low}")
        shards.update(range(low, high + 1))
    return tuple(sorted(shards))
