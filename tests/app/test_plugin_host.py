"""The plugin host: built by a function, built-ins through the same hooks, loud about broken plugins."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import click
import pluggy
import pytest
from click.testing import CliRunner
from helpers import ev, write_events, write_rules

import rulecrm
import rulecrm.errors
import rulecrm.hookspecs
import rulecrm.sources
from rulecrm import cli, plugins
from rulecrm.app.replay import replay
from rulecrm.channels import ChannelType
from rulecrm.channels.instances import ChannelSet
from rulecrm.hookspecs import hookimpl


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
    # named in the order pluggy called them: the later registered first
    with pytest.raises(plugins.PluginError,
                       match="'console' is provided by both 'clash' and 'rulecrm.channels.builtin'"):
        plugins.channel_types(manager)


def test_a_plugin_that_raises_is_named(manager):
    class Broken:
        @hookimpl
        def rulecrm_functions(self):
            raise RuntimeError("boom")

    manager.register(Broken(), "broken")
    with pytest.raises(plugins.PluginError, match="plugin 'broken' failed in rulecrm_functions: boom"):
        plugins.functions(manager)


def test_an_unnamed_plugin_that_raises_is_named_by_its_class(manager):
    class Broken:
        @hookimpl
        def rulecrm_event_sources(self):
            raise RuntimeError("boom")

    manager.register(Broken())
    with pytest.raises(plugins.PluginError, match=r"plugin '.*\.Broken' failed in rulecrm_event_sources: boom"):
        plugins.event_sources(manager)
    with pytest.raises(plugins.PluginError, match=r"\.Broken' failed"):
        plugins.describe(manager)  # `rulecrm plugins` names it too


def provider(name, **marks):
    class Provider:
        @hookimpl(**marks)
        def rulecrm_functions(self):
            return {name: len}

    return Provider()


def test_plugins_are_called_in_pluggys_own_order(manager):
    for name, marks in (("first", {"tryfirst": True}), ("older", {}), ("newer", {}), ("last", {"trylast": True})):
        manager.register(provider(name, **marks), name)
    order = ["first", "newer", "older", "last"]  # the last registered first, unless tryfirst/trylast
    assert [next(iter(result)) for result in manager.hook.rulecrm_functions()] == order
    assert [manager.get_name(plugin) for plugin, _ in plugins.results_by_plugin(manager, "rulecrm_functions")] == order
    assert list(plugins.functions(manager)) == order


def test_a_wrapper_wraps_each_plugins_call_and_provides_nothing(manager):
    class Wrapper:
        calls = 0

        @hookimpl(wrapper=True)
        def rulecrm_functions(self):
            Wrapper.calls += 1
            return (yield)

    manager.register(provider("a"), "a")
    manager.register(provider("b"), "b")
    manager.register(Wrapper(), "wrapper")
    assert list(plugins.functions(manager)) == ["b", "a"] and Wrapper.calls == 2


def test_hook_arguments_go_by_keyword_to_the_arguments_a_plugin_takes(manager):
    class Partial:
        seen = []

        @hookimpl
        def rulecrm_action_dispatched(self, delivery):
            Partial.seen.append(delivery)

    manager.register(Partial(), "partial")
    [(plugin, call)] = plugins.hook_callers(manager, "rulecrm_action_dispatched")
    call(action={"key": "k"}, delivery="answer")
    assert manager.get_name(plugin) == "partial" and Partial.seen == ["answer"]


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


def test_rulecrm_disable_plugins_names_built_in_and_installed_plugins(tmp_path):
    env = {"RULECRM_DISABLE_PLUGINS": " rulecrm.channels.builtin, wecom ,"}
    manager = plugins.build_plugin_manager(env=env)
    assert "console" not in plugins.channel_types(manager)
    assert {"jsonl", "http"} <= set(plugins.event_sources(manager))
    assert manager.get_plugin("wecom") is None and manager.is_blocked("wecom")
    rules = write_rules(tmp_path, """
        channels:
          out: {type: console}
        rules:
          - id: hi
            on: order.placed
            notify: {to: customer, channel: out, template: "hi"}
    """)
    channels = ChannelSet(plugins.load_rules_with(manager, rules), manager, env={})
    instance, reason = channels.get("out")
    assert instance is None and "type 'console', which no installed plugin provides" in reason
    assert "console" in plugins.channel_types(plugins.build_plugin_manager(load_entry_points=False, env={}))


def test_rulecrm_disable_plugins_reaches_the_command_line():
    env = {**os.environ, "RULECRM_DISABLE_PLUGINS": "rulecrm.channels.builtin,wecom"}
    result = subprocess.run([sys.executable, "-m", "rulecrm", "plugins", "--json"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    names = {row["name"] for row in map(json.loads, result.stdout.splitlines())}
    assert "rulecrm.sources.builtin" in names and {"rulecrm.channels.builtin", "wecom"}.isdisjoint(names)


def test_the_public_api_is_exported_and_import_rulecrm_stays_light():
    code = ("import sys, rulecrm; loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rulecrm', 'pluggy', 'attrs', 'click', 'durable', 'hypothesis')); print(loaded)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "['rulecrm']"


@pytest.mark.parametrize("name", sorted(set(rulecrm.__all__) - {"__version__", "lazy_exports"}))  # defined here
def test_every_public_name_is_the_object_of_its_home_module(name):
    homes = (rulecrm.hookspecs, rulecrm.errors, plugins, rulecrm.channels, rulecrm.sources)
    assert any(getattr(home, name, None) is getattr(rulecrm, name) for home in homes)
    assert name in dir(rulecrm)


def test_the_public_api_has_what_plugin_authors_use():
    assert {"hookimpl", "RulecrmError", "PluginError", "ChannelType", "ChannelConfig", "ChannelConfigError",
            "Delivery", "Message", "Setting", "Limits", "DELIVERED", "RETRYABLE", "PERMANENT", "SourceType",
            "SourceContext", "Source", "SourceError", "lazy_exports", "__version__"} <= set(rulecrm.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rulecrm.nothing  # noqa: B018

    class Written:
        @rulecrm.hookimpl
        def rulecrm_channel_types(self):
            return [rulecrm.ChannelType("written", object)]

    manager = plugins.build_plugin_manager(load_entry_points=False, extra=[Written()])
    assert "written" in plugins.channel_types(manager)


def test_discovering_the_installed_plugins_loads_none_of_their_channels():
    """Every command discovers the plugins: their channel types are declared without importing the
    channels themselves (HTTP clients, e-mail, logging, secret masking), which load when one is built."""
    probe = (
        "import json, sys\n"
        "from rulecrm import plugins\n"
        "manager = plugins.build_plugin_manager()\n"
        "types = plugins.channel_types(manager)\n"
        "print(json.dumps(sorted(types)))\n"
        "print(sorted(name for name in ('rulecrm_wecom.contact', 'rulecrm_wecom.robot', 'rulecrm_smtp.channel',\n"
        "    'rulecrm_webhook.channel', 'rulecrm_redis.command', 'rulecrm.masking') if name in sys.modules))\n"
        "from rulecrm_smtp import SmtpChannel\n"
        "from rulecrm.channels import ChannelConfig\n"
        "channel = types['smtp'].factory(ChannelConfig('mail', 'smtp', {'host': '127.0.0.1', 'sender': 'a@b.c'}, {}))\n"
        "print(type(channel) is SmtpChannel)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    declared, loaded, built = result.stdout.strip().splitlines()[-3:]
    assert {"smtp", "webhook", "wecom-contact", "wecom-robot"} <= set(json.loads(declared)), result.stderr
    assert loaded == "[]", result.stderr
    assert built == "True", result.stderr
