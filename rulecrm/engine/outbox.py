"""The engine's outbox: which actions were decided already, their final statuses, held sends, and reporting."""
from __future__ import annotations

from collections.abc import Callable

import attrs

from rulecrm.engine.actions import Action
from rulecrm.engine.enums import Status


class Outbox:
    """Takes each decided action to its status, notes it in `changes` and reports it once per status.

    `waits_for_channel(action, profile)` (with dispatch) returns the action as it waits for its
    channel, or None: a sent action that waits is written `queued` and reported by the dispatcher
    once delivered. `held` are the actions quiet hours or a deferring cap hold back.
    """

    def __init__(self, store, changes, stats, *, tz, on_action: Callable[[Action], None],
                 waits_for_channel: Callable | None = None) -> None:
        self._store = store
        self._changes = changes
        self._stats = stats
        self._tz = tz
        self._on_action = on_action
        self._waits_for_channel = waits_for_channel
        self.held: dict[str, Action] = {}
        self._store_had_actions = True  # until load() looks

    def load(self) -> None:
        """Restore the held actions from the store."""
        for record in self._store.iter_actions(status=Status.DEFERRED.value):
            action = Action.from_dict(record, self._tz)
            self.held[action.key] = action
        # Keys are unique by construction within a run; only a store that already holds actions
        # (a repeated or resumed run) can have seen a key before.
        self._store_had_actions = next(self._store.iter_actions(), None) is not None

    def seen(self, key: str) -> bool:
        if key in self._changes.actions:
            return True
        return self._store_had_actions and self._store.get_action(key) is not None

    def finish(self, action: Action, profile, status: Status, reason=None, *, sent_at=None) -> None:
        """Give the action its final status (or `queued` for its channel), note it and report it."""
        if status is Status.SENT and self._waits_for_channel is not None:
            waiting = self._waits_for_channel(action, profile)
            if waiting is not None:
                action, status = waiting, Status.QUEUED  # the dispatcher delivers it after commit
        tz = self._tz
        # A queued action is reported with its channel's answer; any other is reported now, once per status.
        report = status is not Status.QUEUED and action.reported_status != status
        action = attrs.evolve(
            action, status=status, reason=reason, sent_at=sent_at.astimezone(tz) if sent_at is not None else None,
            due_at=action.due_at.astimezone(tz), reported_status=status if report else action.reported_status,
        )
        self.held.pop(action.key, None)
        self._changes.actions[action.key] = action
        self._stats[f"actions_{status}"] += 1
        if report:
            self._on_action(action)

    def hold(self, action: Action, reason: str, *, counts_as_defer: bool) -> Action:
        """Keep the action back (status `deferred`) until a release timer gates it again."""
        action = attrs.evolve(
            action, status=Status.DEFERRED, reason=reason, defers=action.defers + (1 if counts_as_defer else 0),
        )
        self.held[action.key] = action
        self._changes.actions[action.key] = action
        return action

    def report_held(self) -> None:
        """Report the actions still held (quiet hours, deferring caps) at the end of a run."""
        for action in sorted(self.held.values(), key=lambda a: (a.due_at, a.rule_index, a.key)):
            action = attrs.evolve(action, due_at=action.due_at.astimezone(self._tz))
            self.held[action.key] = action
            if action.reported_status != action.status:
                action = attrs.evolve(action, reported_status=action.status)
                self.held[action.key] = action
                self._changes.actions[action.key] = action
                self._on_action(action)
