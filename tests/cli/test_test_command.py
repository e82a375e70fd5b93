"""`rulecrm test` as a user runs it: a good rules directory passes, flawed ones fail with a counter-example."""
from __future__ import annotations

import textwrap

import pytest
from helpers import rulecrm, write_rules

CHANNEL_BYPASS = """
shop: {timezone: Asia/Shanghai}
channels:
  sms: {type: webhook, url: "http://127.0.0.1:9/sms"}
caps:
  - {id: marketing-daily, kinds: [marketing], max: 1, per: 1d, channels: [sms]}
rules:
  - id: order-promo
    on: order.placed
    notify: {to: customer, channel: sms, kind: marketing, template: "thanks, here is a coupon"}
  - id: chat-promo
    on: chat.received
    notify: {to: customer, channel: console, kind: marketing, template: "new teas this week"}
"""

KIND_BYPASS = """
caps:
  - {id: daily, kinds: [service], max: 1, per: 1d}
rules:
  - id: check-in
    on: order.delivered
    notify: {to: customer, kind: service, template: "arrived?"}
  - id: promo
    on: order.placed
    notify: {to: customer, template: "buy more"}
"""



def test_the_tea_shop_passes(repo):
    result = rulecrm("test", str(repo / "rules" / "tea-shop"), "--examples", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "60 examples, all invariants held" in result.stdout


@pytest.mark.parametrize("rules, cap, rule", [
    (CHANNEL_BYPASS, "cap marketing-daily", "rule chat-promo (marketing on channel console)"),
    (KIND_BYPASS, "cap daily", "rule promo (marketing on channel console)"),
])
def test_a_bypassed_cap_fails_with_a_readable_counter_example(tmp_path, rules, cap, rule):
    result = rulecrm("test", str(write_rules(tmp_path, rules)))
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "FAILED: invariant caps_not_bypassed" in out
    assert "violated for customer c-1" in out and cap in out and rule in out
    assert "Counter-example (shrunk)" in out and '"customer_id": "c-1"' in out
    assert "offending actions:" in out and "relevant events:" in out


def test_the_search_is_reproducible(tmp_path):
    rules = str(write_rules(tmp_path, CHANNEL_BYPASS))
    first, second = rulecrm("test", rules, "--seed", "7"), rulecrm("test", rules, "--seed", "7")
    assert first.returncode == second.returncode == 1 and first.stdout == second.stdout


def test_rule_errors_are_reported_and_nothing_runs(tmp_path):
    result = rulecrm("test", str(write_rules(tmp_path, textwrap.dedent("""
        rules:
          - id: promo
            on: chat.received
            notfy: {to: customer}
    """))))
    assert result.returncode == 1
    assert "rules.yaml:" in result.stderr and "examples" not in result.stdout
