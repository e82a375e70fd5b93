"""Every extension point of rulecrm: pluggy hook specifications, all prefixed `rulecrm_`.

Plugins implement them with `@rulecrm.hookimpl` and are found through the `rulecrm` entry-point
group. rulecrm's own channels and event sources are plugins of these same hooks.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("rulecrm")
hookimpl = pluggy.HookimplMarker("rulecrm")


@hookspec
def rulecrm_channel_types():
    """Return the channel types this plugin provides: an iterable of `rulecrm.channels.ChannelType`.

    Called once when the plugin manager is built. A type name may be provided by one plugin only.
    """


@hookspec
def rulecrm_functions():
    """Return a mapping of name -> callable usable in conditions and templates (`name(args)`).

    Functions receive plain values (numbers, strings, datetimes, timedeltas) and must not raise
    for ordinary input; an exception is treated as a missing value.
    """


@hookspec
def rulecrm_event_sources():
    """Return the event sources this plugin provides: an iterable of `rulecrm.sources.SourceType`.

    `rulecrm run --source NAME:ARG` starts the named source with its argument.
    """


@hookspec
def rulecrm_action_dispatched(action, delivery):
    """Observe an action after its channel answered.

    `action` is the action's dict (as written by `--out`); `delivery` is the channel's
    `rulecrm.channels.Delivery`. Called for every delivery attempt; the return value is ignored.
    """


@hookspec
def rulecrm_register_commands(cli):
    """Add commands to the `rulecrm` command line: `cli` is the click group to add them to."""
