"""The state of a deployment: the SQLite store (events, profiles, timers, outbox, dead letters) and the
scratch store of a replay without --state."""
