"""The event-time engine: timers, profiles, gates and the actions they produce."""
