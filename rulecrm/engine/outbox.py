"""The engine's outbox: which actions were decided already, their final statuses, held sends, and reporting."""
from __future__ import annotations

from collections.abc import Callable

import attrs

from rulecrm.engine.actions import Action
from rulecrm.engine.enums import Status

_STAT_OF = {status: f"actions_{status}" for status in Status}  # the stats counter of each status


class Outbox:
    """Takes each decided action to its status, notes it in `changes` and reports it once per status.

    `waits_for_channel(action, profile)` (with dispatch) returns the action as it waits for its
    channel, or None: a sent action that waits is written `queued` and reported by the dispatcher
    once delivered. Actions that quiet hours or a deferring cap hold back (status `deferred`) are
    kept in the store like the others, not in memory: a night of quiet hours can hold one action
    per customer.

    `on_status(action)` (an observer, such as the live runner's metrics) sees every status given to
    an action, `queued` and `deferred` included, as it is given: before the step commits.
    """

    def __init__(self, store, changes, stats, *, tz, on_action: Callable[[Action], None],
                 waits_for_channel: Callable | None = None, on_status: Callable[[Action], None] | None = None) -> None:
        self._store = store
        self._changes = changes
        self._stats = stats
        self._tz = tz
        self._on_action = on_action
        self._waits_for_channel = waits_for_channel
        self._on_status = on_status
        self._store_has_actions = True  # until load() looks

    def load(self) -> None:
        """Look whether the store holds actions already (a repeated or resumed run)."""
        # A key decided before is in the store or in `changes`; while the store holds no action
        # (a fresh run before its first flush) there is nothing to look up.
        self._store_has_actions = next(self._store.iter_actions(), None) is not None

    def held(self, key: str) -> Action | None:
        """The action held back under this key, or None when it is not (or no longer) held."""
        action = self._changes.actions.get(key)
        if action is None:
            record = self._store.get_action(key)
            if record is None or record["status"] != Status.DEFERRED:
                return None
            return Action.from_dict(record, self._tz)
        return action if action.status is Status.DEFERRED else None

    def all_held(self) -> list[Action]:
        """Every held action, from the store and the unwritten changes, in (due, rule order, key) order."""
        pending = self._changes.actions
        held = [Action.from_dict(record, self._tz) for record in self._store.iter_actions(status=Status.DEFERRED.value)
                if record["key"] not in pending]
        held.extend(action for action in pending.values() if action.status is Status.DEFERRED)
        return sorted(held, key=lambda a: (a.due_at, a.rule_index, a.key))

    def seen(self, key: str, *, in_store: bool = True) -> bool:
        """Whether an action with this key was decided before (a decision is taken once, ever).

        `in_store=False`: the caller knows the key cannot be in the store (its trigger is an event
        applied for the first time right now), so only the unwritten changes are looked at.
        """
        if key in self._changes.actions:
            return True
        if not in_store:
            return False
        if not self._store_has_actions:
            self._store_has_actions = bool(self._changes.actions_written)
            if not self._store_has_actions:
                return False
        return self._store.has_action(key)

    def finish(self, action: Action, profile, status: Status, reason=None, *, sent_at=None) -> None:
        """Give the action its final status (or `queued` for its channel), note it and report it."""
        if status is Status.SENT and self._waits_for_channel is not None:
            waiting = self._waits_for_channel(action, profile)
            if waiting is not None:
                action, status = waiting, Status.QUEUED  # the dispatcher delivers it after commit
        tz = self._tz
        # A queued action is reported with its channel's answer; any other is reported now, once per status.
        report = status is not Status.QUEUED and action.reported_status != status
        due_at = action.due_at.astimezone(tz)
        if sent_at is action.due_at:
            sent_at = due_at  # most actions are sent when due: one conversion, and one text in public_dict
        elif sent_at is not None:
            sent_at = sent_at.astimezone(tz)
        action = action.given(
            status=status, reason=reason, sent_at=sent_at, due_at=due_at,
            reported_status=status if report else action.reported_status,
        )
        self._changes.actions[action.key] = action
        self._stats[_STAT_OF[status]] += 1
        if self._on_status is not None:
            self._on_status(action)
        if report:
            self._on_action(action)

    def hold(self, action: Action, reason: str, *, counts_as_defer: bool) -> Action:
        """Keep the action back (status `deferred`) until a release timer gates it again."""
        action = attrs.evolve(
            action, status=Status.DEFERRED, reason=reason, defers=action.defers + (1 if counts_as_defer else 0),
        )
        self._changes.actions[action.key] = action
        if self._on_status is not None:
            self._on_status(action)
        return action

    def report_held(self) -> None:
        """Report the actions still held (quiet hours, deferring caps) at the end of a run."""
        for action in self.all_held():
            if action.reported_status != action.status:
                action = attrs.evolve(action, due_at=action.due_at.astimezone(self._tz), reported_status=action.status)
                self._changes.actions[action.key] = action
                self._on_action(action)
