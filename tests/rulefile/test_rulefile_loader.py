"""Loading rule files and directories into a RuleSet."""
from __future__ import annotations

import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest

from rulecrm.errors import RuleFileError
from rulecrm.rulefile.loader import ChannelTypeInfo, check_rules, load_rules, rule_files

RULEFILES = Path(__file__).parent / "rulefiles"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_spec_example_loads_with_only_unknown_channel_type_warnings():
    ruleset, diagnostics = check_rules(RULEFILES / "spec_example.yaml")
    assert ruleset is not None
    assert [d.severity for d in diagnostics] == ["warning", "warning"]
    assert [(d.line, d.column) for d in diagnostics] == [(10, 17), (11, 15)]
    assert "wecom-robot" in diagnostics[0].message and "webhook" in diagnostics[1].message
    assert ruleset.warnings == tuple(diagnostics)


def test_spec_example_values():
    ruleset = load_rules(RULEFILES / "spec_example.yaml")
    assert ruleset.shop.timezone_name == "Asia/Shanghai"
    assert str(ruleset.shop.timezone) == "Asia/Shanghai"
    assert ruleset.shop.quiet_hours == (time(22, 0), time(8, 0))
    assert ruleset.product("tea-xqg").cycle == timedelta(days=30)
    assert ruleset.product("tea-xqg").learn_cycle is True
    assert ruleset.channel("robot").setting("key_env") == "WECOM_ROBOT_KEY"
    assert ruleset.channel("console").type == "console"
    assert ruleset.contact("manager").address == "+8613800000000"
    daily, weekly = ruleset.caps
    assert (daily.window, daily.per, daily.period, daily.max) == ("rolling", timedelta(days=1), None, 1)
    assert (weekly.window, weekly.period, weekly.on_cap) == ("calendar", "week", "defer")
    assert [rule.id for rule in ruleset.rules] == [
        "repeat-buyer", "high-intent", "tea-repurchase", "bad-review", "birthday", "win-back",
    ]
    rules = {rule.id: rule for rule in ruleset.rules}
    assert rules["repeat-buyer"].is_profile_rule and rules["repeat-buyer"].untag is False
    assert rules["tea-repurchase"].unless.event_type == "order.placed"
    assert rules["tea-repurchase"].unless.same == "sku"
    assert rules["high-intent"].notify.kind == "service"
    assert rules["tea-repurchase"].notify.channel == "robot"
    escalation = rules["bad-review"].escalate
    assert escalation.unless.same == "review_id"
    assert [step.notify.to for step in escalation.steps] == ["cs", "manager"]
    assert [step.notify.kind for step in escalation.steps] == ["service", "service"]
    assert escalation.steps[0].notify.template is rules["bad-review"].notify.template
    assert rules["birthday"].at == time(9, 0)
    assert rules["repeat-buyer"].source.line == 28


def test_declared_channel_types_silence_the_warning_and_check_settings(tmp_path):
    types = {
        "wecom-robot": ChannelTypeInfo("wecom-robot", frozenset({"key_env"}), frozenset({"key"})),
        "webhook": ChannelTypeInfo("webhook", frozenset({"url", "secret"})),
    }
    ruleset, diagnostics = check_rules(RULEFILES / "spec_example.yaml", channel_types=types)
    assert diagnostics == [] and ruleset is not None
    path = write(tmp_path, "c.yaml", """\
        channels:
          robot: {type: wecom-robot}
          hook: {type: webhook, ulr: "http://x"}
        """)
    _, diagnostics = check_rules(path, channel_types=types)
    assert [(d.line, d.column, d.severity) for d in diagnostics] == [(2, 10, "error"), (3, 25, "error")]
    assert "needs `key`" in diagnostics[0].message
    assert diagnostics[1].hint == "did you mean 'url'?"


def test_directory_in_name_order_with_global_rule_index(tmp_path):
    write(tmp_path, "b.yaml", """\
        rules:
          - {id: third, tag: c}
        """)
    write(tmp_path, "a.yml", """\
        rules:
          - {id: first, tag: a, enabled: false}
          - {id: second, tag: b}
        """)
    write(tmp_path, "notes.txt", "not yaml: [")
    assert [Path(p).name for p in rule_files(tmp_path)] == ["a.yml", "b.yaml"]
    ruleset = load_rules(tmp_path)
    assert [(rule.id, rule.index, rule.enabled) for rule in ruleset.rules] == [
        ("first", 0, False), ("second", 1, True), ("third", 2, True),
    ]
    assert [rule.id for rule in ruleset.active_rules] == ["second", "third"]
    assert ruleset.files == (str(tmp_path / "a.yml"), str(tmp_path / "b.yaml"))
    assert ruleset.shop.timezone_name == "UTC"


def test_declarations_are_shared_across_files():
    ruleset, diagnostics = check_rules(RULEFILES / "good")
    assert diagnostics == []
    assert ruleset.contact("desk").channel == "audit"
    assert ruleset.contact("lead").address == "lead"
    assert ruleset.product("001").price == 58.0
    assert ruleset.shop.quiet_kinds == frozenset({"marketing", "service"})
    rules = {rule.id: rule for rule in ruleset.rules}
    assert rules["greet"].at == time(9, 0) and rules["greet"].enabled is False
    assert rules["vip"].untag.op == "<"
    steps = rules["complaint"].escalate.steps
    assert steps[0].notify.template is rules["complaint"].notify.template
    assert steps[1].notify.kind == "transactional"
    assert rules["greet"].notify.template.names[0].pos.line == 42


def test_duplicates_across_files_point_at_the_first(tmp_path):
    write(tmp_path, "1.yaml", """\
        shop: {timezone: UTC}
        channels:
          log: {type: jsonl, path: a.jsonl}
        rules:
          - {id: same, tag: a}
        """)
    write(tmp_path, "2.yaml", """\
        shop: {timezone: UTC}
        channels:
          log: {type: jsonl, path: b.jsonl}
        rules:
          - {id: same, tag: b}
        """)
    ruleset, diagnostics = check_rules(tmp_path)
    assert ruleset is None
    second = str(tmp_path / "2.yaml")
    assert [(d.path, d.line, d.column) for d in diagnostics] == [(second, 1, 1), (second, 3, 3), (second, 5, 10)]
    assert all(f"{tmp_path / '1.yaml'}:" in d.message for d in diagnostics)


def test_load_rules_raises_with_every_diagnostic(tmp_path):
    path = write(tmp_path, "r.yaml", """\
        rules:
          - {id: a, tag: x, enabled: maybe}
          - {id: b}
        caps:
          - {id: zero, max: 0, per: 1d}
        """)
    with pytest.raises(RuleFileError) as caught:
        load_rules(path)
    severities = [d.severity for d in caught.value.diagnostics]
    assert severities == ["error", "error", "warning"]
    assert "r.yaml:2:30: error" in str(caught.value)


def test_warnings_are_kept_on_the_ruleset(tmp_path):
    path = write(tmp_path, "r.yaml", """\
        caps:
          - {id: never, max: 0, per: 1d}
        rules:
          - {id: x, on: order.placed, after: cycle, notify: {to: customer, template: hi}}
        """)
    ruleset = load_rules(path)
    assert [(d.line, d.column) for d in ruleset.warnings] == [(2, 22), (4, 38)]
    assert ruleset.warnings[0].message == "max: 0 blocks every send of these kinds; write it only on purpose"


def test_missing_path_and_empty_directory(tmp_path):
    _, diagnostics = check_rules(tmp_path / "nope.yaml")
    assert [(d.line, d.column, d.severity) for d in diagnostics] == [(1, 1, "error")]
    ruleset, diagnostics = check_rules(tmp_path)
    assert ruleset is None and "no rule files" in diagnostics[0].message


def test_empty_file_is_a_valid_empty_ruleset(tmp_path):
    ruleset = load_rules(write(tmp_path, "empty.yaml", "# nothing yet\n"))
    assert ruleset.rules == () and ruleset.caps == ()


def test_functions_are_passed_to_the_checker(tmp_path):
    path = write(tmp_path, "r.yaml", """\
        rules:
          - {id: f, when: "is_vip(customer.total_spent)", tag: vip}
        """)
    assert check_rules(path)[0] is None
    assert check_rules(path, functions=["is_vip"])[0] is not None


def test_a_broken_file_does_not_cause_unknown_reference_errors_elsewhere(tmp_path):
    write(tmp_path, "a.yaml", "channels: [\n")
    write(tmp_path, "b.yaml", """\
        rules:
          - {id: x, on: order.placed, notify: {to: customer, channel: robot, template: hi}}
        """)
    _, diagnostics = check_rules(tmp_path)
    assert [d.path for d in diagnostics] == [str(tmp_path / "a.yaml")]
