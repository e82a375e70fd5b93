"""The store of a replay without --state: nothing to resume, so only what bounds memory hits disk."""
from __future__ import annotations

from rulecrm.state.store import Store


class ScratchStore(Store):
    """A temporary store that keeps event ids and dead letters, and drops everything else.

    A replay without `--state` can never be resumed or repeated, so writing profiles, timers and
    the outbox would be pure cost; the engine keeps them in memory for the run. Event ids stay on
    disk so that de-duplication does not grow memory with the size of the input.
    """

    keeps_state = False

    @classmethod
    def open_scratch(cls) -> "ScratchStore":
        return cls.open(None)

    def put_profiles(self, items) -> None:
        pass

    def get_profile(self, customer_id):
        return None

    def put_timers(self, rows) -> None:
        pass

    def delete_timers(self, keys) -> None:
        pass

    def iter_timers(self, **_filters):
        return iter(())

    def put_actions(self, actions) -> None:
        pass

    def get_action(self, key):
        return None

    def iter_actions(self, **_filters):
        return iter(())
