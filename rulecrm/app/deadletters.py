"""Re-ingesting rejected input after a fix, and dropping dead letters on purpose, in a state file
(a partitioned state: `rulecrm.app.shard_deadletters`, which shares the helpers here)."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable

import attrs

from rulecrm.app.applying import TIMER_SOURCE
from rulecrm.app.session import Input, Session
from rulecrm.engine.core import APPLIED, DUPLICATE
from rulecrm.errors import EventError, UsageError
from rulecrm.events import content_digest, parse_event_line, synthetic_id
from rulecrm.state.store import DELIVERS, Store

WHOLE_NUMBER = re.compile(r"[0-9]+")


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
    (`rulecrm.app.shard_deadletters.shard_letter_id`); a UsageError it raises is reported with the line it is about.
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
    if not WHOLE_NUMBER.fullmatch(text):
        raise UsageError(f"dead letter id {text!r}: the dead letters of state file {state_path} are numbered "
                         "1, 2, ... (SHARD:ID is for a partitioned state directory)")
    return int(text)


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


class ActionTally:
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


def reparsed(item: dict, raw: str, timezone):
    """The dead letter's line (or its correction) as an event with an id; EventError while still invalid."""
    event = parse_event_line(raw, default_tz=timezone)
    return event if event.id is not None else attrs.evolve(event, id=retried_event_id(event, item))


def in_event_time(inputs: list[Input]) -> list[Input]:
    return sorted(inputs, key=lambda line: line.item.at)  # like any input (stable: stored order at ties)


def count_outcomes(result: RetryResult, applied, letter_name: Callable[[Input], object]) -> None:
    """Add what one applied batch did to `result`; `letter_name(line)`: the id of a line not applied."""
    counts = applied.counts
    result.applied += counts[APPLIED]
    result.duplicates += counts[DUPLICATE]
    for line, reason in applied.problems:
        result.still_rejected += 1
        result.remaining.append({"id": letter_name(line), "source": line.source, "line_no": line.line_no,
                                 "raw": line.raw, "error": reason})


def refuse_unknown(corrections: dict, known: set, name: Callable = str) -> None:
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
    refuse_unknown(corrections, known)
    if not rules_path:
        raise UsageError("no rules known for this state: pass --rules")
    result = RetryResult(delivered=delivers)
    tally = ActionTally(delivers, on_report)
    with Session.open(rules_path, state_path, manager=manager, deliver=delivers, record_rules=False,
                      on_decided=tally.decided, on_report=tally.delivered, on_warning=on_warning, env=env) as session:
        inputs = []
        for item in session.store.iter_dead_letters():  # read again under the lock
            if item["source"] == TIMER_SOURCE:
                continue  # a timer set aside is not an input line: kept for people to look at
            raw = corrections.get(item["id"], item["raw"])
            try:
                event = reparsed(item, raw, session.ruleset.shop.timezone)
            except EventError as exc:
                result.still_rejected += 1
                result.remaining.append({**item, "raw": raw, "error": str(exc)})
                continue
            # the stored line keeps its text if it still fails (a correction can be given again)
            inputs.append(Input(item["source"], item["line_no"], event, raw=item["raw"], dead_letter=item["id"]))
        count_outcomes(result, session.apply(in_event_time(inputs)), lambda line: line.dead_letter)
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
