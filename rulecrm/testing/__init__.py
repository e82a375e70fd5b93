"""rulecrm's testing kit: drive a shop's rules in tests and check what they do."""
from rulecrm.testing.clock import Clock
from rulecrm.rulefile.loader import load_rules
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
)
from rulecrm.testing.recording import RecordingChannel
from rulecrm.testing.rulegen import mutated_rule_files, rule_files
from rulecrm.testing.strategies import chats, customers, event_streams, orders, reviews, timestamps

__all__ = [
    "Clock", "InvariantViolation", "RecordingChannel", "Shop", "assert_at_most", "assert_escalated_or_handled",
    "caps_not_bypassed", "caps_respected", "chats", "check_all", "customers", "escalations_justified",
    "event_streams", "load_rules", "no_duplicate_sends", "no_marketing_to_opted_out", "orders", "quiet_hours_respected",
    "replay_cli", "reviews", "rule_files", "write_events", "write_rules", "mutated_rule_files", "run_events", "settling_time", "timestamps",
]
