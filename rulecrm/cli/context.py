"""The one object a command line carries on click's `ctx.obj`: the plugin manager of the process."""
from __future__ import annotations

import attrs
import click


@attrs.define
class CliContext:
    """Built once by `entry()`; commands get it with `@pass_cli_context`.

    Invoked without `entry()` (click's CliRunner in tests, an embedding program), a command gets a
    fresh one and the manager is built on first use.
    """

    _manager: object = attrs.field(default=None, alias="manager")
    _commands_registered: bool = attrs.field(default=False, init=False)

    @property
    def manager(self):
        if self._manager is None:
            from rulecrm import plugins  # looked up at call time: tests replace build_plugin_manager

            self._manager = plugins.build_plugin_manager()
        return self._manager

    def register_commands(self, group: click.Group) -> None:
        """Let every plugin, rulecrm's own commands included, add its commands to `group` (once)."""
        if not self._commands_registered:
            from rulecrm import plugins

            # one plugin at a time, in pluggy's order, so a failing plugin is named (PluginError)
            for _plugin, _result in plugins.results_by_plugin(self.manager, "rulecrm_register_commands", cli=group):
                pass
            self._commands_registered = True


pass_cli_context = click.make_pass_decorator(CliContext, ensure=True)
