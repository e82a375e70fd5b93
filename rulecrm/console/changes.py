"""The console's changes to the state, through the same functions as the command line.

Each takes the runner lock, as `rulecrm dead-letters --retry` does: while `rulecrm run` holds the
state, a change is refused with the runner's pid (StateError) and nothing is written. A running
runner keeps customers' profiles in memory, so nothing may write the state behind its back.
"""
from __future__ import annotations

import functools
from datetime import datetime, timezone

from rulecrm.app import deadletters
from rulecrm.app import shard_deadletters as shards
from rulecrm.app.session import Session
from rulecrm.channels.dispatch import DEAD, FAILED, QUEUED
from rulecrm.console.reading import StateFiles, find_action
from rulecrm.errors import UsageError

RETRYABLE_STATUSES = (FAILED, DEAD)


def retry_action(state: StateFiles, key: str, *, rules_path: str, manager) -> dict:
    """Queue a `failed` or `dead` action again and make one delivery attempt; the action as it ends.

    The row goes back to `queued` with its attempts counted from zero, as a newly decided action,
    and the dispatcher of a session on its state file delivers it exactly as a runner would (its
    idempotency key unchanged, so a channel drops a repeat). A retryable failure leaves it `failed`
    with its next attempt scheduled, for the next `rulecrm run`.
    """
    found = find_action(state, key)
    if found is None:
        raise UsageError(f"no action with key {key!r} in state {state.path}")
    file, action = found
    if action.get("status") not in RETRYABLE_STATUSES:  # refused before the session marks the state as delivering
        raise UsageError(f"action {key} is {action.get('status')}, not failed or dead: nothing to retry")
    with Session.open(rules_path, file.path, manager=manager, deliver=True, record_rules=False) as session:
        store = session.store
        with store.transaction():  # read again under the lock: a runner may have sent it meanwhile
            action = store.get_action(key)
            if action is None or action.get("status") not in RETRYABLE_STATUSES:
                status = None if action is None else action.get("status")
                raise UsageError(f"action {key} is {status}, not failed or dead: nothing to retry")
            requeued = {k: v for k, v in action.items() if k not in ("next_attempt", "next_attempt_at")}
            requeued.update(status=QUEUED, attempts=0, requeued_from=action["status"],
                            requeued_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            store.put_actions([requeued])
        session.deliver()
        return store.get_action(key) or requeued


def retry_dead_letters(state: StateFiles, *, rules_path: str, manager, fixes: dict[str, str]):
    """`rulecrm dead-letters --retry [--from FIXES]`: every dead letter parsed again (the fixed ones with
    their new line) and the valid ones applied to the state. `fixes` maps an id as listed (N, or
    SHARD:N) to its corrected line. Returns the command line's RetryResult."""
    if state.partitioned is None:
        parse_id = functools.partial(deadletters.plain_letter_id, state_path=state.path)
        corrections = {parse_id(name): raw for name, raw in fixes.items()}
        return deadletters.retry_dead_letters(state.path, rules_path=rules_path, corrections=corrections,
                                              manager=manager)
    parse_shard_id = functools.partial(shards.shard_letter_id, partitioned=state.partitioned)
    shard_corrections = {parse_shard_id(name): raw for name, raw in fixes.items()}
    return shards.retry_shard_dead_letters(state.partitioned, rules_path=rules_path, corrections=shard_corrections,
                                           manager=manager)


def remove_dead_letter(state: StateFiles, name: str) -> None:
    """`rulecrm dead-letters --remove ID`."""
    if state.partitioned is None:
        deadletters.remove_dead_letters(state.path, [deadletters.plain_letter_id(name, state_path=state.path)])
    else:
        shards.remove_shard_dead_letters(state.partitioned,
                                         [shards.shard_letter_id(name, partitioned=state.partitioned)])
