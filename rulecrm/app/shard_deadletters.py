"""Dead letters of a partitioned state (`rulecrm.state.partitioned`): listing, retrying and removing
them across its shards.

A partitioned state numbers its dead letters per shard, so one is named `SHARD:ID` (`3:17`: dead
letter 17 of shard 3). A line is kept in its customer's shard, or in shard 0 when it names no usable
customer; once fixed, it belongs to the shard of the customer it names. Such a line is applied in
that shard first, and resolved in the shard that kept it only then: if the process dies in between,
the same retry again finds its event recorded in the customer's shard (by its id, or for a line
without one by the id derived from its content and its line) and only resolves it.
"""
from __future__ import annotations

import heapq
import os
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import attrs

from rulecrm import plugins
from rulecrm.app.applying import TIMER_SOURCE
from rulecrm.app.deadletters import (
    WHOLE_NUMBER,
    ActionTally,
    RetryResult,
    count_outcomes,
    in_event_time,
    refuse_unknown,
    reparsed,
    state_delivers,
)
from rulecrm.app.session import Input, Session
from rulecrm.engine.core import APPLIED, DUPLICATE
from rulecrm.errors import EventError, UsageError
from rulecrm.state.partitioned import PartitionedState
from rulecrm.state.store import Store, storage_errors

_SHARD_LETTER = re.compile(r"([0-9]+):([0-9]+)")


def shard_letter_id(value, partitioned: PartitionedState) -> tuple[int, int]:
    """The (shard, id) of a dead letter of a partitioned state, written `SHARD:ID` as the listing shows it."""
    text = str(value).strip()
    if WHOLE_NUMBER.fullmatch(text):
        raise UsageError(f"dead letter id {text!r} names no shard: partitioned state {partitioned.path} numbers "
                         f"its dead letters per shard, write SHARD:ID (e.g. 0:{text}, dead letter {text} of shard 0) "
                         f"as `rulecrm dead-letters --state {partitioned.path}` lists them")
    match = _SHARD_LETTER.fullmatch(text)
    if match is None or int(match[1]) >= partitioned.partitions:
        raise UsageError(f"dead letter id {text!r}: expected SHARD:ID, a shard from 0 to "
                         f"{partitioned.partitions - 1} and the dead letter's number in it, e.g. 0:17")
    return int(match[1]), int(match[2])


def shard_letter_name(shard: int, letter: int) -> str:
    return f"{shard}:{letter}"


_BY_LINE = "SELECT id, source, line_no, raw, error, at FROM dead_letters ORDER BY source, line_no, id"


def _written_shards(partitioned: PartitionedState) -> list[tuple[int, str]]:
    """(shard, path) of the shards that exist: a shard nothing was written to holds no dead letter."""
    return [(shard, path) for shard, path in enumerate(partitioned.shard_paths()) if os.path.exists(path)]


def list_shard_dead_letters(partitioned: PartitionedState) -> Iterator[dict]:
    """Every shard's dead letters by source and line number, then shard, each named `SHARD:ID`:
    {id, shard, source, line_no, raw, error, at}. One row per shard is held in memory."""
    streams = [_shard_letters_by_line(shard, path) for shard, path in _written_shards(partitioned)]
    yield from heapq.merge(*streams, key=lambda item: (item["source"], item["line_no"], item["shard"]))


def _shard_letters_by_line(shard: int, path: str) -> Iterator[dict]:
    """One shard's dead letters in (source, line number, id) order, read only (the store's index has it)."""
    with storage_errors(path):
        Store.open(path, readonly=True).close()  # a damaged, foreign or newer shard: one clear line
        with closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)) as db:
            for letter, source, line_no, raw, error, at in db.execute(_BY_LINE):
                yield {"id": shard_letter_name(shard, letter), "shard": shard, "source": source, "line_no": line_no,
                       "raw": raw, "error": error, "at": at}


def remove_shard_dead_letters(partitioned: PartitionedState, ids) -> None:
    """Drop dead letters (shard, id) on purpose; every one must exist (nothing is removed otherwise).
    The shards concerned are all locked before the first is written."""
    by_shard = defaultdict(list)
    for shard, letter in dict.fromkeys(ids):
        by_shard[shard].append(letter)
    with ExitStack() as stack:
        stores, unknown = {}, []
        for shard in sorted(by_shard):
            path = partitioned.shard_path(shard)
            known = set()
            if os.path.exists(path):
                stores[shard] = stack.enter_context(Store.open(path, lock=True))
                known = {item["id"] for item in stores[shard].iter_dead_letters()}
            unknown += [shard_letter_name(shard, letter) for letter in by_shard[shard] if letter not in known]
        if unknown:
            raise UsageError(f"no dead letter with id {', '.join(unknown)}; nothing removed "
                             f"(list them with `rulecrm dead-letters --state {partitioned.path}`)")
        for shard, store in stores.items():
            with store.transaction():
                for letter in by_shard[shard]:
                    store.resolve_dead_letter(letter, how="removed")


@attrs.frozen
class _ShardLook:
    """What a shard holds before a retry, read under its lock."""

    letters: frozenset  # its dead letters' ids
    delivers: bool
    rules_path: str | None


def _look_at_shards(partitioned: PartitionedState) -> dict[int, _ShardLook]:
    looks = {}
    for shard, path in _written_shards(partitioned):
        with Store.open(path, lock=True) as store:
            looks[shard] = _ShardLook(frozenset(item["id"] for item in store.iter_dead_letters()),
                                      state_delivers(store), store.get_meta("rules_path"))
    return looks


def retry_shard_dead_letters(partitioned: PartitionedState, *, rules_path=None, corrections=None, manager=None,
                             env=None, on_report=None, on_warning=None) -> RetryResult:
    """`retry_dead_letters` on a partitioned state: one session per shard that has dead letters or
    receives a fixed line, all opened (and locked) before the first is written. `corrections` are
    keyed by (shard, id). A line is applied in the shard of the customer it names, then resolved
    in the shard that kept it (module doc); one that fails there stays there as a dead letter, with
    its fixed text."""
    corrections = corrections or {}
    on_report = on_report or (lambda record: None)
    looks = _look_at_shards(partitioned)
    refuse_unknown(corrections, {(shard, letter) for shard, look in looks.items() for letter in look.letters},
                    lambda key: shard_letter_name(*key))
    rules_path = rules_path or next((look.rules_path for look in looks.values() if look.rules_path), None)
    if not rules_path:
        raise UsageError("no rules known for this state: pass --rules")
    manager = manager or plugins.build_plugin_manager()
    ruleset = plugins.load_rules_with(manager, rules_path)  # the same rules for every shard
    result = RetryResult(delivered=any(look.delivers for look in looks.values()))
    tallies: dict[int, ActionTally] = {}
    with ExitStack() as stack:
        sessions: dict[int, Session] = {}

        def session_of(shard: int) -> Session:
            if shard not in sessions:
                delivers = shard in looks and looks[shard].delivers
                tally = tallies[shard] = ActionTally(delivers, on_report)
                sessions[shard] = stack.enter_context(Session.open(
                    rules_path, partitioned.shard_path(shard), ruleset=ruleset, manager=manager, deliver=delivers,
                    record_rules=False, on_decided=tally.decided, on_report=tally.delivered, on_warning=on_warning,
                    env=env))
            return sessions[shard]

        routed: dict[int, list[Input]] = defaultdict(list)  # shard to apply in → its lines
        kept_in: dict[int, tuple[int, int]] = {}  # id() of a line applied in another shard → (shard, id) keeping it
        for shard in sorted(shard for shard, look in looks.items() if look.letters):
            session = session_of(shard)
            for item in session.store.iter_dead_letters():  # read again under the lock
                if item["source"] == TIMER_SOURCE:
                    continue  # a timer set aside is not an input line: kept for people to look at
                name = shard_letter_name(shard, item["id"])
                raw = corrections.get((shard, item["id"]), item["raw"])
                try:
                    event = reparsed(item, raw, ruleset.shop.timezone)
                except EventError as exc:
                    result.still_rejected += 1
                    result.remaining.append({**item, "id": name, "raw": raw, "error": str(exc)})
                    continue
                target = partitioned.shard_for(event.customer_id)
                if target == shard:
                    routed[shard].append(Input(item["source"], item["line_no"], event, raw=item["raw"],
                                               dead_letter=item["id"]))
                else:
                    line = Input(item["source"], item["line_no"], event, raw=raw)
                    routed[target].append(line)
                    kept_in[id(line)] = (shard, item["id"])
        for target in routed:
            session_of(target)
        for target in sorted(routed):
            _apply_in_shard(sessions, target, routed[target], kept_in, result)
        for session in sessions.values():
            session.deliver()
            session.drain()
    result.actions = sum((tally.totals() for tally in tallies.values()), Counter())
    return result


def _apply_in_shard(sessions: dict[int, Session], target: int, inputs: list[Input], kept_in: dict,
                    result: RetryResult) -> None:
    """Apply the lines that belong to shard `target`; then resolve, in the shard that kept it, each
    line that came from another: it is now in `target`, applied or kept as its dead letter."""
    store = sessions[target].store
    applied = sessions[target].apply(in_event_time(inputs))

    def letter_name(line: Input) -> str | None:
        if line.dead_letter is not None:
            return shard_letter_name(target, line.dead_letter)
        kept = next((item["id"] for item in store.iter_dead_letters()
                     if (item["source"], item["line_no"], item["raw"]) == (line.source, line.line_no, line.raw)), None)
        # None: this very line was resolved in `target` before, and is not kept again
        return shard_letter_name(target, kept) if kept is not None else None

    count_outcomes(result, applied, letter_name)
    for line, outcome in applied.outcomes:
        if id(line) in kept_in:
            shard, letter = kept_in[id(line)]
            how = "retried" if outcome in (APPLIED, DUPLICATE) else f"moved to shard {target}"
            sessions[shard].store.resolve_dead_letter(letter, how=how)
