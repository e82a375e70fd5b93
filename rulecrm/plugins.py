"""The plugin host: builds the plugin manager and collects what plugins provide."""
from __future__ import annotations

from collections.abc import Iterable

import pluggy

from rulecrm import hookspecs
from rulecrm.channels import builtin as builtin_channels
from rulecrm.cli import builtin as builtin_commands
from rulecrm.sources import builtin as builtin_sources
from rulecrm.errors import RulecrmError

ENTRY_POINT_GROUP = "rulecrm"
BUILTIN_PLUGINS = (("rulecrm.channels.builtin", builtin_channels), ("rulecrm.sources.builtin", builtin_sources),
                   ("rulecrm.cli.builtin", builtin_commands))


class PluginError(RulecrmError):
    """A plugin misbehaved; the message names the plugin."""


def build_plugin_manager(*, load_entry_points: bool = True, blocked: Iterable[str] = (), extra=()) -> pluggy.PluginManager:
    """A fresh plugin manager: rulecrm's own plugins, then installed ones, then `extra` objects.

    Built per use (never at import) so tests and embedding applications get their own.
    """
    manager = pluggy.PluginManager("rulecrm")
    manager.add_hookspecs(hookspecs)
    for name in blocked:
        manager.set_blocked(name)
    for name, plugin in BUILTIN_PLUGINS:
        if not manager.is_blocked(name):
            manager.register(plugin, name)
    if load_entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra:
        manager.register(plugin)
    manager.check_pending()  # a misspelled hook name fails here, loudly
    return manager


def _results_by_plugin(manager, hook_name):
    """(plugin name, result) for every implementation of a hook, so errors can name the plugin."""
    hook = getattr(manager.hook, hook_name)
    for impl in hook.get_hookimpls():  # registration order: built-ins first, then installed plugins
        name = manager.get_name(impl.plugin) or repr(impl.plugin)
        try:
            result = impl.function()
        except Exception as exc:
            raise PluginError(f"plugin {name!r} failed in {hook_name}: {exc}") from exc
        yield name, result


def _collect(manager, hook_name: str, what: str, named) -> dict:
    """Merge what every plugin returned from a hook into one dict by name; a name provided by two
    plugins is an error naming both. `named(result)` yields (name, item) pairs of one result."""
    found, owners = {}, {}
    for plugin, result in _results_by_plugin(manager, hook_name):
        for name, item in named(result):
            if name in found:
                raise PluginError(
                    f"{what} {name!r} is provided by both {owners[name]!r} and {plugin!r}; uninstall or block one"
                )
            found[name] = item
            owners[name] = plugin
    return found


def _by_name(items):
    return ((item.name, item) for item in items or ())


def channel_types(manager) -> dict:
    """Every channel type by name."""
    return _collect(manager, "rulecrm_channel_types", "channel type", _by_name)


def event_sources(manager) -> dict:
    """Every event source type by name."""
    return _collect(manager, "rulecrm_event_sources", "event source", _by_name)


def functions(manager) -> dict:
    """Every function usable in conditions and templates, by name."""
    return _collect(manager, "rulecrm_functions", "function", lambda provided: dict(provided or {}).items())


def describe(manager) -> list[dict]:
    """What `rulecrm plugins` shows: each plugin, its distribution, hooks and channel types."""
    distributions = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    rows = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())
        dist = distributions.get(id(plugin))
        rows.append({
            "name": name,
            "distribution": f"{dist.project_name} {dist.version}" if dist else "rulecrm (built in)",
            "hooks": hooks,
            "channel_types": _names_provided(plugin, "rulecrm_channel_types"),
            "event_sources": _names_provided(plugin, "rulecrm_event_sources"),
        })
    return rows


def _names_provided(plugin, hook_name) -> list[str]:
    implementation = getattr(plugin, hook_name, None)
    return sorted(item.name for item in implementation() or ()) if implementation else []


def check_channel_info(manager):
    """Channel types in the form `check` validates settings with."""
    from rulecrm.rulefile.declared import ChannelTypeInfo

    return {
        name: ChannelTypeInfo(
            name,
            channel_type.setting_names,
            frozenset(s.name for s in channel_type.settings if s.required),
        )
        for name, channel_type in channel_types(manager).items()
    }


def address_fields(manager) -> dict:
    return {name: t.address_field for name, t in channel_types(manager).items() if t.address_field}


def load_rules_with(manager, path):
    """Load a rules directory knowing the installed channel types and functions."""
    from rulecrm.rulefile.loader import load_rules

    return load_rules(path, channel_types=check_channel_info(manager), functions=tuple(functions(manager)))


def check_rules_with(manager, path):
    from rulecrm.rulefile.loader import check_rules

    return check_rules(path, channel_types=check_channel_info(manager), functions=tuple(functions(manager)))
