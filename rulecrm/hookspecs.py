"""Every extension point of rulecrm: pluggy hook specifications, all prefixed `rulecrm_`.

Plugins implement them with `@rulecrm.hookimpl` and are found through the `rulecrm` entry-point
group. rulecrm's own channels and event sources are plugins of these same hooks. rulecrm calls every
hook with keyword arguments, plugin by plugin in pluggy's order: the last registered first, unless
an implementation says `tryfirst` or `trylast` (docs/plugins.md, "Hook order").
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # annotations only: plugins and the pytest plugin import this module, keep it light
    import click

    from rulecrm.channels.contract import ChannelType, Delivery
    from rulecrm.sources.contract import SourceType

hookspec = pluggy.HookspecMarker("rulecrm")
hookimpl = pluggy.HookimplMarker("rulecrm")


@hookspec
def rulecrm_channel_types() -> Iterable[ChannelType]:
    """Return the channel types this plugin provides.

    Called whenever rulecrm needs the installed channel types: `check` validating a rule file's
    `channels:`, a replay or a live run building its channels, `rulecrm plugins`. A type name may be
    provided by one plugin only; a second one is an error naming both plugins.
    """


@hookspec
def rulecrm_functions() -> Mapping[str, Callable[..., Any]]:
    """Return a mapping of name -> callable usable in conditions and templates (`name(args)`).

    Called when rule files are checked or loaded and when an engine is built. Functions receive
    plain values (numbers, strings, datetimes, timedeltas) and must not raise for ordinary input;
    an exception is treated as a missing value. A name may be provided by one plugin only.
    """


@hookspec
def rulecrm_event_sources() -> Iterable[SourceType]:
    """Return the event source types this plugin provides.

    Called when `rulecrm run` starts (and by `rulecrm plugins`); `rulecrm run --source NAME:ARG`
    starts the named source with its argument. A name may be provided by one plugin only.
    """


@hookspec
def rulecrm_action_dispatched(action: Mapping[str, Any], delivery: Delivery) -> None:
    """Observe an action after its channel answered; returns nothing (a returned value is ignored).

    Called after every delivery attempt: `action` is the action's dict (as written by `--out`),
    not to be changed; `delivery` is the channel's `rulecrm.channels.Delivery`. An exception is
    reported with the plugin's name and does not stop delivery or the other observers.
    """


@hookspec
def rulecrm_register_commands(cli: click.Group) -> None:
    """Add commands to the `rulecrm` command line; returns nothing.

    Called once when the `rulecrm` command starts, before its arguments are parsed: `cli` is the
    click group to add commands to. `rulecrm.cli.deferred.add_command_deferred(cli, name,
    "module:attribute")` adds one whose module is imported only when it runs or is listed, as
    rulecrm's own commands are: a plugin's command then costs the other commands nothing.
    """
