"""Re-ingesting rejected input after a fix, and dropping dead letters on purpose."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import attrs

from rulecrm.app.applying import TIMER_SOURCE
from rulecrm.app.session import Input, Session
from rulecrm.engine.core import APPLIED, DUPLICATE
from rulecrm.errors import EventError, UsageError
from rulecrm.events import content_digest, parse_event_line, synthetic_id
from rulecrm.state.store import DELIVERS, Store


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


def read_corrections(stream) -> dict[int, str]:
    """Corrected dead letters: JSON lines with the dead letter's `id` and its fixed `raw` line."""
    corrections = {}
    for line_no, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            corrections[int(record["id"])] = str(record["raw"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"corrections line {line_no}: expected a JSON object with 'id' and 'raw' "
                             f"({exc})") from None
    return corrections


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
    unknown = set(corrections) - known
    if unknown:
        raise UsageError(f"--from names dead letter(s) that do not exist: {', '.join(map(str, sorted(unknown)))}; "
                         "list them with `rulecrm dead-letters --state STATE`")
    if not rules_path:
        raise UsageError("no rules known for this state: pass --rules")
    result = RetryResult(delivered=delivers)

    def decided(actions):
        for action in actions:
            result.actions[action.status] += 1
            if action.status != "queued":  # queued ones are reported by the dispatcher once answered
                on_report(action.public_dict())

    answered = Counter()

    def delivered(record):
        answered[record["status"]] += 1
        on_report(record)

    with Session.open(rules_path, state_path, manager=manager, deliver=delivers, record_rules=False,
                      on_decided=decided, on_report=delivered, on_warning=on_warning, env=env) as session:
        inputs = []
        for item in session.store.iter_dead_letters():  # read again under the lock
            if item["source"] == TIMER_SOURCE:
                continue  # a timer set aside is not an input line: kept for people to look at
            raw = corrections.get(item["id"], item["raw"])
            try:
                event = parse_event_line(raw, default_tz=session.ruleset.shop.timezone)
            except EventError as exc:
                result.still_rejected += 1
                result.remaining.append({**item, "raw": raw, "error": str(exc)})
                continue
            if event.id is None:
                event = attrs.evolve(event, id=retried_event_id(event, item))
            # the stored line keeps its text if it still fails (a correction can be given again)
            inputs.append(Input(item["source"], item["line_no"], event, raw=item["raw"], dead_letter=item["id"]))
        inputs.sort(key=lambda line: line.item.at)  # event time, like any input (stable: file order at ties)
        applied = session.apply(inputs)
        counts = applied.counts
        result.applied, result.duplicates = counts[APPLIED], counts[DUPLICATE]
        for line, reason in applied.problems:
            result.still_rejected += 1
            result.remaining.append({"id": line.dead_letter, "source": line.source, "line_no": line.line_no,
                                     "raw": line.raw, "error": reason})
        session.deliver()
        session.drain()
    if delivers:
        result.actions -= Counter({"queued": result.actions["queued"]})
        result.actions.update(answered)
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
