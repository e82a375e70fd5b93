"""The `rulecrm` command line: the only place that turns errors into messages and exit codes.

Every command, rulecrm's own included (`rulecrm.cli.builtin`), comes through the
`rulecrm_register_commands` hook; each lives in its own module here. docs/cli.md is the reference.
"""
from __future__ import annotations

import sys

import click

from rulecrm import __version__
from rulecrm.cli.context import CliContext, pass_cli_context
from rulecrm.cli.deferred import load_command
from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, EXIT_UNDELIVERED
from rulecrm.cli.util import echo_err as _echo_err

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_REJECTED", "EXIT_UNDELIVERED", "CliContext", "entry", "main",
           "pass_cli_context"]


class _RulecrmGroup(click.Group):
    """The `rulecrm` group: commands come from the plugins, and the exit status is set here only.

    A command returns its exit code (taken from its result object); usage errors (a bad option
    value, a missing file) exit 1 like every other error, where click's own convention is 2.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: dict[str, str] = {}  # command name -> "module:attribute", imported on first use

    def add_deferred_command(self, name: str, target: str) -> None:
        """Add the command `target` ("module:attribute") names, importing its module only when the
        command runs or is listed. A command added under the same name with `add_command` wins."""
        self._deferred[name] = target

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_ERROR)
        except click.exceptions.Abort:
            _echo_err("Aborted!")
            sys.exit(EXIT_ERROR)
        sys.exit(code if isinstance(code, int) else EXIT_OK)

    # Commands are looked up through the plugin manager on `ctx.obj`, so a group invoked without
    # `entry()` (click's CliRunner) has them too, as flask's FlaskGroup loads plugin commands.
    def list_commands(self, ctx):
        ctx.ensure_object(CliContext).register_commands(self)
        return sorted({*super().list_commands(ctx), *self._deferred})

    def get_command(self, ctx, cmd_name):
        ctx.ensure_object(CliContext).register_commands(self)
        target = self._deferred.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            self.add_command(load_command(target), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_RulecrmGroup)
@click.version_option(__version__, prog_name="rulecrm")
def main() -> None:
    """rulecrm: rules for private-domain customer operations."""


def entry(*, started=None) -> None:
    """The console script: one plugin manager for the whole command line; plugins (rulecrm's own
    commands among them) add their commands before the command line is parsed. `started()`, if
    given, is called then, just before the command runs."""
    from rulecrm.plugins import PluginError, build_plugin_manager

    try:
        context = CliContext(manager=build_plugin_manager())
        context.register_commands(main)
    except PluginError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    if started is not None:
        started()
    main(obj=context)
