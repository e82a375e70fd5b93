"""rulecrm's pytest plugin (entry point `pytest11`): fixtures for a shop under test, its recording and clock.

pytest imports this module in every session of every project that has rulecrm installed, so it
imports only pytest: the package around it loads its kit on first use, and each fixture imports what
it needs when a test asks for it (tests/testing/test_testing_plugin.py counts the modules). No fixture is
autouse and no option changes anything until a fixture reads it.
"""
from __future__ import annotations

import pytest

DEFAULT_CLOCK_START = "2026-01-05T09:00:00+00:00"


def pytest_addoption(parser):
    group = parser.getgroup("rulecrm")
    group.addoption("--rulecrm-backend", default=None, choices=("python", "durable"),
                    help="matching backend for the rulecrm_shop fixture (default: python)")


@pytest.fixture
def rulecrm_clock():
    """A `Clock` at 2026-01-05T09:00:00+00:00 that moves only when the test moves it."""
    from rulecrm.testing.clock import Clock

    return Clock(DEFAULT_CLOCK_START)


@pytest.fixture
def rulecrm_recording():
    """A `RecordingChannel`; shops made by `rulecrm_shop` in this test record into it."""
    from rulecrm.testing.recording import RecordingChannel

    return RecordingChannel()


@pytest.fixture
def rulecrm_shop(request, rulecrm_clock, rulecrm_recording):
    """A factory: `rulecrm_shop(rules_dir, backend=None, **options)` returns a `Shop` closed at teardown.

    The shop uses this test's `rulecrm_clock` and `rulecrm_recording` unless `clock=` or
    `recording=` are given; `backend` defaults to `--rulecrm-backend`, else "python".
    """
    from rulecrm.testing.harness import Shop

    made = []

    def make(rules, *, backend=None, **options):
        options.setdefault("clock", rulecrm_clock)
        options.setdefault("recording", rulecrm_recording)
        chosen = backend or request.config.getoption("rulecrm_backend") or "python"
        shop = Shop(rules, backend=chosen, **options)
        made.append(shop)
        return shop

    yield make
    for shop in made:
        shop.close()
