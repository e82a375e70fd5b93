"""Commands added by name and imported on first use, so that one command does not load the others."""
from __future__ import annotations

import importlib


def load_command(target: str):
    """The command object that `target` ("module:attribute") names."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def add_command_deferred(cli, name: str, target: str) -> None:
    """Add the command `target` ("module:attribute") to `cli` as `name`, for a plugin's
    `rulecrm_register_commands`. rulecrm's own group imports the module only when the command runs
    or is listed; any other click group gets the command at once."""
    defer = getattr(cli, "add_deferred_command", None)
    if defer is not None:
        defer(name, target)
    else:
        cli.add_command(load_command(target), name)
