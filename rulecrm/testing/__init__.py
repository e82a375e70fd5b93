"""rulecrm's testing kit: drive a shop's rules in tests and check what they do.

The names below are imported on first use: pytest imports this package for the `pytest11` plugin
(`rulecrm.testing.pytest_plugin`) in every session, which must not load the engine or hypothesis.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "Clock": "rulecrm.testing.clock",
    "load_rules": "rulecrm.rulefile.loader",
    "replay_cli": "rulecrm.testing.files",
    "write_events": "rulecrm.testing.files",
    "write_rules": "rulecrm.testing.files",
    "Shop": "rulecrm.testing.harness",
    "run_events": "rulecrm.testing.harness",
    "settling_time": "rulecrm.testing.harness",
    "InvariantViolation": "rulecrm.testing.invariants",
    "assert_at_most": "rulecrm.testing.invariants",
    "assert_escalated_or_handled": "rulecrm.testing.invariants",
    "caps_not_bypassed": "rulecrm.testing.invariants",
    "caps_respected": "rulecrm.testing.invariants",
    "check_all": "rulecrm.testing.invariants",
    "escalations_justified": "rulecrm.testing.invariants",
    "no_duplicate_sends": "rulecrm.testing.invariants",
    "no_marketing_to_opted_out": "rulecrm.testing.invariants",
    "quiet_hours_respected": "rulecrm.testing.invariants",
    "rules_can_fire": "rulecrm.testing.invariants",
    "unless_can_cancel": "rulecrm.testing.invariants",
    "RecordingChannel": "rulecrm.testing.recording",
    "mutated_rule_files": "rulecrm.testing.rulegen",
    "rule_files": "rulecrm.testing.rulegen",
    "chats": "rulecrm.testing.strategies",
    "customers": "rulecrm.testing.strategies",
    "event_streams": "rulecrm.testing.strategies",
    "orders": "rulecrm.testing.strategies",
    "reviews": "rulecrm.testing.strategies",
    "timestamps": "rulecrm.testing.strategies",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` imports on demand
    from rulecrm.rulefile.loader import load_rules
    from rulecrm.testing.clock import Clock
    from rulecrm.testing.files import replay_cli, write_events, write_rules
    from rulecrm.testing.harness import Shop, run_events, settling_time
    from rulecrm.testing.invariants import (
        InvariantViolation,
        assert_at_most,
        assert_escalated_or_handled,
        caps_not_bypassed,
        caps_respected,
        check_all,
        escalations_justified,
        no_duplicate_sends,
        no_marketing_to_opted_out,
        quiet_hours_respected,
        rules_can_fire,
        unless_can_cancel,
    )
    from rulecrm.testing.recording import RecordingChannel
    from rulecrm.testing.rulegen import mutated_rule_files, rule_files
    from rulecrm.testing.strategies import chats, customers, event_streams, orders, reviews, timestamps


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rulecrm.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
