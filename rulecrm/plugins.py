"""The plugin host: builds the plugin manager and collects what plugins provide."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pluggy

from rulecrm import hookspecs
from rulecrm.channels import builtin as builtin_channels
from rulecrm.cli import builtin as builtin_commands
from rulecrm.errors import PluginError, RulecrmError  # noqa: F401 (re-exported: defined here before errors.py held them)
from rulecrm.sources import builtin as builtin_sources

ENTRY_POINT_GROUP = "rulecrm"
BUILTIN_PLUGINS = (("rulecrm.channels.builtin", builtin_channels), ("rulecrm.sources.builtin", builtin_sources),
                   ("rulecrm.cli.builtin", builtin_commands))
DISABLE_VARIABLE = "RULECRM_DISABLE_PLUGINS"  # comma-separated plugin names, as `rulecrm plugins` shows them


def disabled_plugins(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The plugin names listed in RULECRM_DISABLE_PLUGINS."""
    value = (os.environ if env is None else env).get(DISABLE_VARIABLE, "")
    return tuple(name.strip() for name in value.split(",") if name.strip())


def build_plugin_manager(*, load_entry_points: bool = True, blocked: Iterable[str] = (), extra=(),
                         env: Mapping[str, str] | None = None) -> pluggy.PluginManager:
    """A fresh plugin manager: rulecrm's own plugins, then installed ones, then `extra` objects.

    Built per use (never at import) so tests and embedding applications get their own. Plugins named
    in `blocked` or in RULECRM_DISABLE_PLUGINS (read from `env`, default the process environment)
    are not registered, built-in ones included.
    """
    manager = pluggy.PluginManager("rulecrm")
    manager.add_hookspecs(hookspecs)
    for name in (*blocked, *disabled_plugins(env)):
        manager.set_blocked(name)
    for name, plugin in BUILTIN_PLUGINS:
        if not manager.is_blocked(name):
            manager.register(plugin, name)
    if load_entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)  # skips blocked entry-point names
    for plugin in extra:
        manager.register(plugin)
    manager.check_pending()  # a misspelled hook name fails here, loudly
    return manager


def plugin_name(manager: pluggy.PluginManager, plugin: object) -> str:
    """The plugin's registered name; for an object registered without one, its class."""
    name = manager.get_name(plugin)
    if not name or name.isdigit():  # pluggy names unnamed objects by id()
        return f"{type(plugin).__module__}.{type(plugin).__qualname__}"
    return name


def hook_callers(manager: pluggy.PluginManager, hook_name: str) -> list[tuple[object, pluggy.HookCaller]]:
    """(plugin, a caller of that plugin's implementation alone) for every plugin implementing a hook,
    in the order `manager.hook.<hook_name>(...)` calls them: the last registered first, unless
    `tryfirst`/`trylast` say otherwise. Wrappers stay in every caller, so they wrap each plugin's call.

    Each call goes through pluggy (argument selection, wrappers), yet what it returns or raises is
    known to come from that one plugin.
    """
    hook = getattr(manager.hook, hook_name)
    # pluggy runs its list of implementations from the end (tests/app/test_plugin_host.py checks it).
    plugins = [impl.plugin for impl in reversed(hook.get_hookimpls()) if not (impl.wrapper or impl.hookwrapper)]
    return [(plugin, manager.subset_hook_caller(hook_name, remove_plugins=[p for p in plugins if p is not plugin]))
            for plugin in plugins]


def results_by_plugin(manager: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Iterator[tuple[object, Any]]:
    """(plugin, what it returned) for every plugin implementing a hook, in pluggy's order.

    An exception raised by a plugin becomes a PluginError naming the plugin and the hook.
    """
    for plugin, caller in hook_callers(manager, hook_name):
        try:
            results = caller(**kwargs)
        except Exception as exc:
            name = plugin_name(manager, plugin)
            raise PluginError(f"plugin {name!r} failed in {hook_name}: {exc}") from exc
        yield plugin, results[0] if results else None  # pluggy leaves a None result out of the list


def _collect(manager, hook_name: str, what: str, named) -> dict:
    """Merge what every plugin returned from a hook into one dict by name; a name provided by two
    plugins is an error naming both. `named(result)` yields (name, item) pairs of one result."""
    found, owners = {}, {}
    for plugin, result in results_by_plugin(manager, hook_name):
        for name, item in named(result):
            if name in found:
                raise PluginError(
                    f"{what} {name!r} is provided by both {owners[name]!r} and {plugin_name(manager, plugin)!r}; "
                    f"uninstall one or disable it with {DISABLE_VARIABLE}"
                )
            found[name] = item
            owners[name] = plugin_name(manager, plugin)
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
    channel_names = _names_by_plugin(manager, "rulecrm_channel_types")
    source_names = _names_by_plugin(manager, "rulecrm_event_sources")
    rows = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:  # blocked
            continue
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())
        dist = distributions.get(id(plugin))
        rows.append({
            "name": name,
            "distribution": f"{dist.project_name} {dist.version}" if dist else "rulecrm (built in)",
            "hooks": hooks,
            "channel_types": channel_names.get(id(plugin), []),
            "event_sources": source_names.get(id(plugin), []),
        })
    return rows


def _names_by_plugin(manager, hook_name) -> dict[int, list[str]]:
    """id(plugin) -> the sorted names of what it returned from a hook."""
    return {id(plugin): sorted(item.name for item in result or ())
            for plugin, result in results_by_plugin(manager, hook_name)}


def check_channel_info(manager):
    """Channel types in the form `check` validates settings with."""
    from rulecrm.rulefile.declared import ChannelTypeInfo

    return {
        name: ChannelTypeInfo(
            name,
            channel_type.setting_names,
            frozenset(s.name for s in channel_type.settings if s.required),
            thread_safe=channel_type.thread_safe,
            description=channel_type.description,
            setting_help=tuple((f"{s.name}_env" if s.secret else s.name, s.help) for s in channel_type.settings),
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
