"""Re-ingesting rejected input after a fix, and dropping dead letters on purpose: in a state file, or
in every shard of a partitioned state (`rulecrm.state.partitioned`).

A partitioned state numbers its dead letters per shard, so one is named `SHARD:ID` (`3:17`: dead
letter 17 of shard 3). A line is kept in its customer's shard, or in shard 0 when it names no usable
customer; once fixed, it belongs to the shard of the customer it names. Such a line is applied in
that shard first, and resolved in the shard that kept it only then: if the process dies in between,
the same retry again finds its event recorded in the customer's shard (by its id, or for a line
without one by the id derived from its content and its line) and only resolves it.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import attrs

from rulecrm import plugins
from rulecrm.app.applying import TIMER_SOURCE
from rulecrm.app.session import Input, Session
from rulecrm.engine.core import APPLIED, DUPLICATE
from rulecrm.errors import EventError, UsageError
from rulecrm.events import content_digest, parse_event_line, synthetic_id
from rulecrm.state.partitioned import PartitionedState
from rulecrm.state.store import DELIVERS, Store, storage_errors

_WHOLE_NUMBER = re.compile(r"[0-9]+")
_SHARD_LETTER = re.compile(r"([0-9]+):([0-9]+)")


@attrs.define
class RetryResult:
    applied: int = 0
    duplicates: int = 0
    still_rejected: int = 0
    remaining: list = attrs.field(factory=list)
    actions: Counter = attrs.field(factory=Counter)  # final status of each action the retry decided
    delivered: bool = False  # the actions went through their channels

    @property
    def exit_code(self) -> int:
        """The command line's exit status (docs/cli.md): 4 failed or dead actions, else 3 still rejected, else 0."""
        return 4 if self.actions.get("failed") or self.actions.get("dead") else 3 if self.still_rejected else 0


def read_corrections(stream, parse_id: Callable = int) -> dict:
    """Corrected dead letters: JSON lines with the dead letter's `id` and its fixed `raw` line.

    `parse_id` reads an id: a state file's are whole numbers, a partitioned state's `SHARD:ID`
    (`shard_letter_id`); a UsageError it raises is reported with the line it is about.
    """
    corrections = {}
    for line_no, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            corrections[parse_id(record["id"])] = str(record["raw"])
        except UsageError as exc:
            raise UsageError(f"corrections line {line_no}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"corrections line {line_no}: expected a JSON object with 'id' and 'raw' "
                             f"({exc})") from None
    return corrections


def plain_letter_id(value, state_path) -> int:
    """The id of a dead letter of a state file: a whole number, as the listing shows it."""
    text = str(value).strip()
    if not _WHOLE_NUMBER.fullmatch(text):
        raise UsageError(f"dead letter id {text!r}: the dead letters of state file {state_path} are numbered "
                         "1, 2, ... (SHARD:ID is for a partitioned state directory)")
    return int(text)


def shard_letter_id(value, partitioned: PartitionedState) -> tuple[int, int]:
    """The (shard, id) of a dead letter of a partitioned state, written `SHARD:ID` as the listing shows it."""
    text = str(value).strip()
    if _WHOLE_NUMBER.fullmatch(text):
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


def retried_event_id(event, item: dict) -> str:
    """The id of a re-ingested line that has none: from its content and the line it came from.

    Deterministic, so a retry interrupted and run again applies it once; distinct from the ids a
    replay gives id-less lines, so it cannot be mistaken for another line with the same content.
    """
    origin = f"{content_digest(event)}|dead-letter|{item['source']}|{item['line_no']}"
    return synthetic_id(event, 1, digest=hashlib.sha256(origin.encode("utf-8")).hexdigest())


def state_delivers(store) -> bool:
    """Whether actions decided on this state are delivered (a live state) or only recorded (history)."""
    if store.get_meta(DELIVERS, False):
        return True
    return any(next(store.iter_actions(status=status), None) is not None for status in ("queued", "failed", "dead"))


class _ActionTally:
    """The final status of each action one session decides: on a state whose actions are delivered,
    a queued action counts with its channel's answer."""

    def __init__(self, delivers: bool, on_report: Callable):
        self.delivers = delivers
        self._on_report = on_report
        self._decided = Counter()
        self._answered = Counter()

    def decided(self, actions) -> None:
        for action in actions:
            self._decided[action.status] += 1
            if action.status != "queued":  # queued ones are reported by the dispatcher once answered
                self._on_report(action.public_dict())

    def delivered(self, record: dict) -> None:
        self._answered[record["status"]] += 1
        self._on_report(record)

    def totals(self) -> Counter:
        totals = Counter(self._decided)
        if self.delivers:
            totals -= Counter({"queued": totals["queued"]})
            totals.update(self._answered)
        return totals


def _reparsed(item: dict, raw: str, timezone):
    """The dead letter's line (or its correction) as an event with an id; EventError while still invalid."""
    event = parse_event_line(raw, default_tz=timezone)
    return event if event.id is not None else attrs.evolve(event, id=retried_event_id(event, item))


def _in_event_time(inputs: list[Input]) -> list[Input]:
    return sorted(inputs, key=lambda line: line.item.at)  # like any input (stable: stored order at ties)


def _count(result: RetryResult, applied, letter_name: Callable[[Input], object]) -> None:
    """Add what one applied batch did to `result`; `letter_name(line)`: the id of a line not applied."""
    counts = applied.counts
    result.applied += counts[APPLIED]
    result.duplicates += counts[DUPLICATE]
    for line, reason in applied.problems:
        result.still_rejected += 1
        result.remaining.append({"id": letter_name(line), "source": line.source, "line_no": line.line_no,
                                 "raw": line.raw, "error": reason})


def _refuse_unknown(corrections: dict, known: set, name: Callable = str) -> None:
    unknown = sorted(set(corrections) - known)
    if unknown:
        raise UsageError(f"--from names dead letter(s) that do not exist: {', '.join(name(k) for k in unknown)}; "
                         "list them with `rulecrm dead-letters --state STATE`")


# -- a state file --------------------------------------------------------------------------


def retry_dead_letters(state_path, *, rules_path=None, corrections=None, manager=None, env=None,
                       on_report=None, on_warning=None) -> RetryResult:
    """Parse every dead letter again (with its corrected line when `corrections` has one); apply the
    valid ones through the engine exactly like live input and remove them.

    On a state whose actions are delivered, the actions these events decide are queued and
    delivered through their channels before returning; on a replayed history they are recorded only.
    """
    corrections = corrections or {}
    on_report = on_report or (lambda record: None)
    # What to open the session with, read under the runner lock: through another name (a hard link)
    # an unlocked read could miss what a running runner has not checkpointed yet.
    with Store.open(state_path, lock=True) as state:
        known = {item["id"] for item in state.iter_dead_letters()}
        delivers = state_delivers(state)
        rules_path = rules_path or state.get_meta("rules_path")
    _refuse_unknown(corrections, known)
    if not rules_path:
        raise UsageError("no rules known for this state: pass --rules")
    result = RetryResult(delivered=delivers)
    tally = _ActionTally(delivers, on_report)
    with Session.open(rules_path, state_path, manager=manager, deliver=delivers, record_rules=False,
                      on_decided=tally.decided, on_report=tally.delivered, on_warning=on_warning, env=env) as session:
        inputs = []
        for item in session.store.iter_dead_letters():  # read again under the lock
            if item["source"] == TIMER_SOURCE:
                continue  # a timer set aside is not an input line: kept for people to look at
            raw = corrections.get(item["id"], item["raw"])
            try:
                event = _reparsed(item, raw, session.ruleset.shop.timezone)
            except EventError as exc:
                result.still_rejected += 1
                result.remaining.append({**item, "raw": raw, "error": str(exc)})
                continue
            # the stored line keeps its text if it still fails (a correction can be given again)
            inputs.append(Input(item["source"], item["line_no"], event, raw=item["raw"], dead_letter=item["id"]))
        _count(result, session.apply(_in_event_time(inputs)), lambda line: line.dead_letter)
        session.deliver()
        session.drain()
    result.actions = tally.totals()
    return result


def remove_dead_letters(state_path, ids) -> None:
    """Drop dead letters on purpose; every id must exist (nothing is removed otherwise)."""
    ids = list(dict.fromkeys(ids))
    store = Store.open(state_path, lock=True)
    try:
        with store.transaction():
            known = {item["id"] for item in store.iter_dead_letters()}
            unknown = [id_ for id_ in ids if id_ not in known]
            if unknown:
                raise UsageError(
                    f"no dead letter with id {', '.join(map(str, unknown))}; nothing removed "
                    "(list them with `rulecrm dead-letters --state STATE`)"
                )
            for id_ in ids:
                store.resolve_dead_letter(id_, how="removed")
    finally:
        store.close()


# -- a partitioned state -------------------------------------------------------------------

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
    _refuse_unknown(corrections, {(shard, letter) for shard, look in looks.items() for letter in look.letters},
                    lambda key: shard_letter_name(*key))
    rules_path = rules_path or next((look.rules_path for look in looks.values() if look.rules_path), None)
    if not rules_path:
        raise UsageError("no rules known for this state: pass --rules")
    manager = manager or plugins.build_plugin_manager()
    ruleset = plugins.load_rules_with(manager, rules_path)  # the same rules for every shard
    result = RetryResult(delivered=any(look.delivers for look in looks.values()))
    tallies: dict[int, _ActionTally] = {}
    with ExitStack() as stack:
        sessions: dict[int, Session] = {}

        def session_of(shard: int) -> Session:
            if shard not in sessions:
                delivers = shard in looks and looks[shard].delivers
                tally = tallies[shard] = _ActionTally(delivers, on_report)
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
                    event = _reparsed(item, raw, ruleset.shop.timezone)
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
    applied = sessions[target].apply(_in_event_time(inputs))

    def letter_name(line: Input) -> str | None:
        if line.dead_letter is not None:
            return shard_letter_name(target, line.dead_letter)
        kept = next((item["id"] for item in store.iter_dead_letters()
                     if (item["source"], item["line_no"], item["raw"]) == (line.source, line.line_no, line.raw)), None)
        # None: this very line was resolved in `target` before, and is not kept again
        return shard_letter_name(target, kept) if kept is not None else None

    _count(result, applied, letter_name)
    for line, outcome in applied.outcomes:
        if id(line) in kept_in:
            shard, letter = kept_in[id(line)]
            how = "retried" if outcome in (APPLIED, DUPLICATE) else f"moved to shard {target}"
            sessions[shard].store.resolve_dead_letter(letter, how=how)
