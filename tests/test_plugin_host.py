"""The plugin host: built by a function, built-ins through the same hooks, loud about broken plugins."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import click
import pluggy
import pytest
from click.testing import CliRunner

from rulecrm import cli, plugins
from rulecrm.channels import ChannelType
from rulecrm.hookspecs import hookimpl
from rulecrm.app.replay import replay

from helpers import ev, write_events, write_rules


@pytest.fixture
def manager():
    return plugins.build_plugin_manager(load_entry_points=False)


def test_built_in_channels_and_sources_come_through_the_hooks(manager):
    assert {"console", "jsonl", "memory"} <= set(plugins.channel_types(manager))
    assert {"jsonl", "http"} <= set(plugins.event_sources(manager))
    assert manager.get_plugin("rulecrm.channels.builtin") is not None


def test_each_call_builds_a_fresh_manager():
    assert plugins.build_plugin_manager(load_entry_points=False) is not plugins.build_plugin_manager(
        load_entry_points=False)


def test_a_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def rulecrm_channel_typez(self):
            return []

    with pytest.raises(pluggy.PluginValidationError, match="rulecrm_channel_typez"):
        plugins.build_plugin_manager(load_entry_points=False, extra=[Typo()])


def test_two_plugins_providing_one_channel_type_are_named(manager):
    class Clash:
        @hookimpl
        def rulecrm_channel_types(self):
            return [ChannelType("console", object)]

    manager.register(Clash(), "clash")
    with pytest.raises(plugins.PluginError, match="'console' is provided by both 'rulecrm.channels.builtin' and 'clash'"):
        plugins.channel_types(manager)


def test_a_plugin_that_raises_is_named(manager):
    class Broken:
        @hookimpl
        def rulecrm_functions(self):
            raise RuntimeError("boom")

    manager.register(Broken(), "broken")
    with pytest.raises(plugins.PluginError, match="plugin 'broken' failed in rulecrm_functions: boom"):
        plugins.functions(manager)


def test_a_blocked_built_in_is_not_loaded():
    manager = plugins.build_plugin_manager(load_entry_points=False, blocked=["rulecrm.channels.builtin"])
    assert "console" not in plugins.channel_types(manager)


class Doubler:
    @hookimpl
    def rulecrm_functions(self):
        return {"double": lambda value: value * 2}


def test_functions_from_plugins_work_in_conditions_and_are_checked(tmp_path):
    manager = plugins.build_plugin_manager(load_entry_points=False, extra=[Doubler()])
    rules = write_rules(tmp_path, """
        rules:
          - id: big
            on: order.placed
            when: double(event.amount) > 100
            tag: big
    """)
    events = write_events(tmp_path, [ev("order.placed", "c1", "2026-01-01T00:00:00Z", id="o1", amount=60.0),
                                     ev("order.placed", "c2", "2026-01-01T00:00:00Z", id="o2", amount=40.0)])
    out = io.StringIO()
    replay(rules, events, out=out, backend_name="python", plugin_manager=manager)
    assert [json.loads(line)["customer_id"] for line in out.getvalue().splitlines()] == ["c1"]
    _ruleset, diagnostics = plugins.check_rules_with(plugins.build_plugin_manager(load_entry_points=False), rules)
    assert any("double" in d.message for d in diagnostics if d.is_error)  # unknown without the plugin


def test_plugins_add_commands(monkeypatch):
    class Hello:
        @hookimpl
        def rulecrm_register_commands(self, cli):
            @cli.command("hello")
            def hello():
                click.echo("hello from a plugin")

    group = click.Group(commands=dict(cli.main.commands))
    monkeypatch.setattr(cli, "main", group)
    monkeypatch.setattr(plugins, "build_plugin_manager",
                        lambda **kw: pluggy_manager_with(Hello()))
    monkeypatch.setattr(sys, "argv", ["rulecrm", "hello"])
    with pytest.raises(SystemExit) as exit_info:
        cli.entry()
    assert exit_info.value.code in (0, None)
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"


def pluggy_manager_with(plugin):
    manager = pluggy.PluginManager("rulecrm")
    from rulecrm import hookspecs

    manager.add_hookspecs(hookspecs)
    manager.register(plugin)
    return manager


def test_rulecrm_plugins_lists_hooks_channel_types_and_sources():
    result = subprocess.run([sys.executable, "-m", "rulecrm", "plugins", "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows["rulecrm.channels.builtin"]["channel_types"] == ["console", "jsonl", "memory"]
    assert rows["rulecrm.sources.builtin"]["event_sources"] == ["http", "jsonl"]
    assert rows["rulecrm.sources.builtin"]["hooks"] == ["rulecrm_event_sources"]
