"""The gates a customer-facing message passes before it is sent: opt-out, quiet hours, caps."""
from __future__ import annotations

from datetime import datetime

import attrs

from rulecrm.engine import caps as caps_module
from rulecrm.engine.enums import Status
from rulecrm.engine.quiet import quiet_until

MAX_DEFERS = 3  # a deferring cap reschedules a send at most this often, then suppresses it


@attrs.frozen
class Verdict:
    status: Status  # sent | suppressed | deferred
    reason: str | None = None
    release_at: datetime | None = None  # deferred: when to try again
    counts_as_defer: bool = False


_SENT = Verdict(Status.SENT)  # most judgements: one value for all


class Gates:
    def __init__(self, ruleset):
        self._shop = ruleset.shop
        self._caps = ruleset.caps
        self.horizon = caps_module.horizon(ruleset.caps)
        self._horizon_us = caps_module.micros(caps_module.EPOCH + self.horizon)

    def zone(self, profile):
        """The customer's time zone if their profile names a valid one, else the shop's."""
        name = profile.fields.get("timezone")
        if isinstance(name, str):
            zone = _zone_or_none(name)
            if zone is not None:
                return zone
        return self._shop.timezone

    def judge(self, action, profile, now: datetime) -> Verdict:
        if action.message_kind == "marketing" and profile.opted_out:
            return Verdict(Status.SUPPRESSED, "opt-out")
        zone = self.zone(profile)
        if self._shop.quiet_hours and action.message_kind in self._shop.quiet_kinds:
            end = quiet_until(now, self._shop.quiet_hours, zone)
            if end is not None:
                return Verdict(Status.DEFERRED, "quiet-hours", end)
        for cap in self._caps:
            if not caps_module.applies(cap, action.message_kind, action.channel):
                continue
            allowed, earliest = caps_module.check(cap, profile.sends, action.channel, now, zone)
            if allowed:
                continue
            if cap.on_cap == "defer" and earliest is not None and action.defers < MAX_DEFERS:
                return Verdict(Status.DEFERRED, f"cap:{cap.id}", earliest, counts_as_defer=True)
            return Verdict(Status.SUPPRESSED, f"cap:{cap.id}")
        return _SENT

    def observe(self, callback) -> None:
        """Call `callback(action, profile, now, verdict)` after every judgement (tools like explain).

        The wrapper is installed on this instance only, so gates nobody observes pay nothing.
        """
        judge = self.judge

        def observed(action, profile, now):
            verdict = judge(action, profile, now)
            callback(action, profile, now, verdict)
            return verdict

        self.judge = observed

    def record_send(self, profile, message_kind: str, channel: str | None, now: datetime) -> None:
        """Remember a send for the caps, forgetting sends no cap can count any more."""
        now_us = caps_module.micros(now)
        profile.sends.append((now_us, message_kind, channel))
        if self._caps:
            oldest = now_us - self._horizon_us
            if profile.sends[0][0] < oldest:
                profile.sends[:] = [s for s in profile.sends if s[0] >= oldest]
        else:
            profile.sends.clear()


_ZONES: dict = {}


def _zone_or_none(name):
    if name not in _ZONES:
        from rulecrm.timeutil import get_zone

        try:
            _ZONES[name] = get_zone(name)
        except ValueError:
            _ZONES[name] = None
    return _ZONES[name]
