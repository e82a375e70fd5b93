"""rulecrm's own commands, a plugin of `rulecrm_register_commands` like any installed one."""
from __future__ import annotations

from rulecrm.hookspecs import hookimpl


@hookimpl(tryfirst=True)  # first, so that an installed plugin may replace a built-in command
def rulecrm_register_commands(cli):
    # imported here, not at the top: the plugin host loads this module without needing the commands
    from rulecrm.cli.check import check_command
    from rulecrm.cli.dead_letters import dead_letters_command
    from rulecrm.cli.diff import diff_command
    from rulecrm.cli.explain import explain_command
    from rulecrm.cli.init import init_command
    from rulecrm.cli.plugins import plugins_command
    from rulecrm.cli.replay import replay_command
    from rulecrm.cli.run import run_command
    from rulecrm.cli.schema import schema_command
    from rulecrm.cli.serve import serve_command
    from rulecrm.cli.test import test_command

    for command in (check_command, replay_command, dead_letters_command, init_command, plugins_command,
                    test_command, explain_command, run_command, schema_command, diff_command, serve_command):
        cli.add_command(command)
