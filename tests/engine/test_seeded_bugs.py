"""Seeded engine bugs that the state machine against the reference model must catch."""
from __future__ import annotations

from unittest.mock import patch

import attrs
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from test_state_machine import EngineAgainstModel

from rulecrm.engine import caps as caps_module
from rulecrm.engine.caps import MICROSECOND
from rulecrm.engine.core import Engine

HUNT = settings(max_examples=200, stateful_step_count=30, deadline=None, derandomize=True, database=None,
                phases=[Phase.generate], report_multiple_bugs=False, print_blob=False,
                suppress_health_check=list(HealthCheck))

_fire_until = Engine._fire_until
_check = caps_module.check
_correlation = Engine._correlation


def timers_before_events(self, limit, *, inclusive):
    """Tie rule reversed: timers due exactly at an event's instant fire before it."""
    return _fire_until(self, limit, inclusive=True)


def closed_cap_window(cap, sends, channel, now, tz):
    """Rolling window [t - per, t] instead of (t - per, t]."""
    if cap.window == "rolling":
        cap = attrs.evolve(cap, per=cap.per + MICROSECOND)
    return _check(cap, sends, channel, now, tz)


def unless_same_ignored(unless, event):
    """`unless <type> same <field>` cancelling on any event of the type."""
    suffix, entry = _correlation(unless, event)
    return suffix, (entry[0], None, None) if entry else None


SEEDED = {
    "tie-rule-reversed": patch.object(Engine, "_fire_until", timers_before_events),
    "cap-window-closed": patch.object(caps_module, "check", closed_cap_window),
    "unless-same-ignored": patch.object(Engine, "_correlation", staticmethod(unless_same_ignored)),
}


@pytest.mark.parametrize("bug", sorted(SEEDED))
def test_state_machine_catches_seeded_bug(bug):
    with SEEDED[bug], pytest.raises(AssertionError, match="differs|the model has"):
        run_state_machine_as_test(EngineAgainstModel, settings=HUNT)


def test_state_machine_passes_without_a_seeded_bug():
    run_state_machine_as_test(EngineAgainstModel, settings=settings(HUNT, max_examples=20))
